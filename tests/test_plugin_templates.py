"""``pixgen plugins new KIND NAME``: a working plugin file to start one's own from."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import pixgen
from pixgen.cli import main
from pixgen.hookspecs import hookimpl

REPO = Path(__file__).resolve().parent.parent


class _StopAt:
    @hookimpl
    def run_step(self, ctx: Any, step: int, losses: dict[str, Any]) -> None:
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)


def _new(kind: str, name: str, *more: str) -> int:
    return main(["plugins", "new", kind, name, *more])


def test_new_plugins_of_every_kind_run_in_a_recipe_and_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for kind in ("generator", "loss", "output"):
        assert _new(kind, f"my_{kind}") == 0
    out = capsys.readouterr().out
    assert "wrote my_output.py: an output plugin called 'my_output'" in out
    assert "add 'plugins: [./my_loss.py]' to a recipe beside it, then 'use: my_loss'" in out

    assert main(["plugins", "show", "my_generator", "-p", "my_generator.py"]) == 0
    shown = capsys.readouterr().out
    assert "cells: integer (≥ 1, ≤ 1024) = 16  -- cells across the shorter side" in shown

    recipe = {
        "plugins": ["./my_generator.py", "./my_loss.py", "./my_output.py"],
        "seed": 1,
        "size": [32, 24],
        "steps": 12,
        "device": "cpu",
        "generator": {"use": "my_generator", "cells": 4},
        "losses": [{"use": "my_loss", "level": 0.9}],
        "outputs": [{"use": "my_output", "every": 3}],
        "animation": {"every": 5, "zoom": 1.1},  # the generator can init_from_image
    }
    Path("recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = pixgen.run("recipe.yaml", output="run")
    rows = (result.run_dir / "my_output.csv").read_text().splitlines()
    assert rows[0] == "step,red,green,blue,total" and [r.split(",")[0] for r in rows[1:]] == [
        "0",
        "3",
        "6",
        "9",
    ]
    brightness = [sum(map(float, r.split(",")[1:4])) / 3 for r in rows[1:]]
    assert brightness[-1] > brightness[0] + 20  # the loss pushes towards level 0.9
    # the output reads each step's losses: the total it wrote is the run's history
    totals = [float(r.split(",")[4]) for r in rows[1:]]
    assert totals == pytest.approx([result.history["total"][s] for s in (0, 3, 6, 9)], rel=1e-3)

    stopped = pixgen.run("recipe.yaml", output="stopped", plugins=[_StopAt()])
    assert stopped.steps_done == 5
    pixgen.resume("stopped")
    assert (Path("stopped") / "my_output.csv").read_text().splitlines() == rows


def test_a_new_plugin_file_is_lint_clean(tmp_path: Path) -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    for kind in ("generator", "loss", "output"):
        assert _new(kind, f"glow_{kind}") == 0
    config = str(REPO / "pyproject.toml")
    files = [f"glow_{kind}.py" for kind in ("generator", "loss", "output")]
    for command in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [ruff, *command, "--config", config, *files], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["loss", "Glow"], "plugin name 'Glow': use lower-case letters, digits and _"),
        (["loss", "png"], "an output called 'png' is installed already (from"),
        (["loss", "glow", "--file", "glow.txt"], "--file glow.txt: a plugin file ends in .py"),
        (["shader", "glow"], "invalid value for 'kind'"),
    ],
)
def test_new_plugin_refuses_what_would_not_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert _new(*args) == 2
    assert message.lower() in capsys.readouterr().err.lower()
    assert not list(tmp_path.glob("glow*"))


def test_new_plugin_never_overwrites_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("glow.py").write_text("# mine\n")
    assert _new("loss", "glow") == 2
    assert "glow.py exists already; pixgen does not overwrite it" in capsys.readouterr().err
    assert Path("glow.py").read_text() == "# mine\n"
