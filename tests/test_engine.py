"""The engine as a user drives it: runs, files, determinism, schedules, stopping."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixgen
from pixgen.cli import main
from pixgen.engine import Engine, lr_factor, make_run_dir, resolve_device
from pixgen.errors import DeviceError, PixgenError
from pixgen.fileio import png_text
from pixgen.recipe import load_recipe
from pixgen.schema import OptimizerConfig


def test_run_writes_the_run_folder(basic_recipe: dict) -> None:
    result = pixgen.run(dict(basic_recipe, outputs=[{"use": "png", "every": 5}]))
    run_dir = result.run_dir
    assert run_dir is not None and run_dir.parent.name == "outputs"
    assert run_dir.name.startswith("basic-")
    assert {p.name for p in run_dir.iterdir()} == {
        "recipe.yaml",
        "final.png",
        "run.json",
        "checkpoint.pt",
        "steps",
    }
    assert sorted(p.name for p in (run_dir / "steps").iterdir()) == [
        "000000.png",
        "000005.png",
        "000010.png",
        "000015.png",
    ]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["steps_done"] == 20 and info["seed"] == 3
    assert (
        info["pixgen_version"] == pixgen.__version__ and info["torch_version"] == torch.__version__
    )
    assert info["device"] == "cpu" and info["wall_time_s"] > 0
    assert len(info["history"]["total"]) == 20
    assert set(info["history"]["losses"]) == {"target_image", "smoothness"}
    assert result.history["total"][-1] < result.history["total"][0]
    again = load_recipe(run_dir / "recipe.yaml")
    assert again.seed == 3 and again.steps == 20


def test_runs_never_overwrite(basic_recipe: dict, tmp_path: Path) -> None:
    first = pixgen.run(basic_recipe)
    second = pixgen.run(basic_recipe)
    assert first.run_dir != second.run_dir
    with pytest.raises(PixgenError, match="not empty"):
        pixgen.run(basic_recipe, output=first.run_dir)
    assert make_run_dir("x", tmp_path / "fresh").is_dir()


def test_final_png_carries_recipe_and_seed(
    basic_recipe: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    result = pixgen.run(basic_recipe)
    text = png_text(result.final_path)
    assert text["pixgen:seed"] == "3"
    assert "target_image" in text["pixgen:recipe"]
    assert main(["info", str(result.final_path)]) == 0
    out = capsys.readouterr().out
    assert "seed 3" in out and "name: basic" in out
    # several runs at once (a shell glob such as outputs/*/final.png), each named
    other = pixgen.run(dict(basic_recipe, seed=4, steps=2))
    assert main(["info", str(result.final_path), str(other.final_path)]) == 0
    out = capsys.readouterr().out
    assert f"# {result.final_path}\n# pixgen" in out and f"# {other.final_path}\n" in out
    assert "seed 3" in out and "seed 4" in out
    assert main(["info", "--json", str(result.final_path), str(other.final_path)]) == 0
    by_file = json.loads(capsys.readouterr().out)
    assert by_file[str(other.final_path)]["pixgen:seed"] == "4"


def test_info_shows_terminal_escapes_in_a_png_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A PNG from elsewhere cannot drive the terminal (clear it, retitle it) through info."""
    from PIL import Image

    from pixgen.fileio import save_png

    path = tmp_path / "odd.png"
    recipe = "name: x\x1b[2J\x1b]0;owned\x07\nsteps: 3\tok\n"
    save_png(path, Image.new("RGB", (4, 4)), {"pixgen:recipe": recipe, "pixgen:seed": "1"})
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "name: x\\x1b[2J\\x1b]0;owned\\x07\nsteps: 3\tok" in out
    assert main(["info", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["pixgen:recipe"] == recipe  # JSON escapes itself


def test_same_recipe_and_seed_give_identical_png_bytes(basic_recipe: dict) -> None:
    recipe = dict(basic_recipe, generator={"use": "image", "param": "fft"}, steps=15)
    a = pixgen.run(recipe, output="a")
    b = pixgen.run(recipe, output="b")
    assert (a.run_dir / "final.png").read_bytes() == (b.run_dir / "final.png").read_bytes()
    c = pixgen.run(dict(recipe, seed=4), output="c")
    assert (a.run_dir / "final.png").read_bytes() != (c.run_dir / "final.png").read_bytes()


def test_random_seed_is_recorded(basic_recipe: dict) -> None:
    recipe = dict(basic_recipe)
    recipe.pop("seed")
    result = pixgen.run(recipe)
    assert json.loads((result.run_dir / "run.json").read_text())["seed"] == result.seed
    assert load_recipe(result.run_dir / "recipe.yaml").seed == result.seed


def test_overrides_from_python(basic_recipe: dict) -> None:
    result = pixgen.run(basic_recipe, steps=7, **{"losses.1.weight": 0})
    assert result.steps_done == 7
    assert all(v is None for v in result.history["losses"]["smoothness"])
    result = pixgen.run(basic_recipe, set=["steps=4"])
    assert result.steps_done == 4


def test_lr_schedules() -> None:
    cosine = lr_factor(OptimizerConfig(schedule="cosine"), 100)
    assert cosine(0) == pytest.approx(1.0) and cosine(50) == pytest.approx(0.5)
    assert cosine(100) == pytest.approx(0.0, abs=1e-9)
    warm = lr_factor(OptimizerConfig(warmup="10%"), 100)
    assert warm(0) == pytest.approx(0.1) and warm(9) == pytest.approx(1.0) and warm(50) == 1.0
    drops = lr_factor(OptimizerConfig(drops=[50, "75%"], drop_factor=0.5), 100)
    assert drops(49) == 1.0 and drops(50) == 0.5 and drops(80) == 0.25
    linear = lr_factor(OptimizerConfig(schedule="linear", min_lr_factor=0.2), 100)
    assert linear(100) == pytest.approx(0.2)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_lower_the_loss(basic_recipe: dict, name: str) -> None:
    lr = 500.0 if name == "sgd" else 0.2  # plain SGD needs a large lr on a mean loss
    result = pixgen.run(basic_recipe, optimizer={"name": name, "lr": lr, "momentum": 0.0})
    assert result.history["total"][-1] < result.history["total"][0] * 0.7


def test_weight_schedule_changes_the_weight_used(basic_recipe: dict) -> None:
    recipe = dict(basic_recipe, steps=10)
    recipe["losses"] = [dict(recipe["losses"][0], weight={0: 1.0, 5: 0.0})]
    result = pixgen.run(recipe)
    mse = result.history["losses"]["target_image"]
    totals = result.history["total"]
    assert totals[0] == pytest.approx(mse[0])
    assert totals[2] == pytest.approx(mse[2] * 0.6, rel=1e-5)
    assert totals[7] == 0 and mse[7] is None  # a weight of 0 skips the loss


def test_early_stop(basic_recipe: dict) -> None:
    recipe = dict(
        basic_recipe,
        steps=500,
        optimizer={"name": "sgd", "lr": 0.0001},
        early_stop={"patience": 10, "min_delta": 0.5, "check_every": 5},
    )
    result = pixgen.run(recipe)
    assert result.status == "early_stopped"
    assert result.steps_done == 15
    assert json.loads((result.run_dir / "run.json").read_text())["status"] == "early_stopped"


def test_interrupt_saves_work(basic_recipe: dict, tmp_path: Path) -> None:
    recipe = load_recipe(dict(basic_recipe, steps=100_000))
    engine = Engine(recipe, output=tmp_path / "run")

    class StopAfter:
        @pixgen.hookimpl
        def run_step(self, ctx, step, losses):  # type: ignore[no-untyped-def]
            if step == 5:
                os.kill(os.getpid(), signal.SIGINT)

    engine.plugins.pm.register(StopAfter())
    assert threading.current_thread() is threading.main_thread()
    result = engine.run()
    assert result.status == "interrupted" and 5 < result.steps_done < 20
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["interrupted"] is True and info["steps_done"] == result.steps_done
    assert Image.open(tmp_path / "run" / "final.png").size == (64, 48)


def test_cli_run_and_exit_status(
    basic_recipe: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(basic_recipe))
    assert main(["run", str(path), "-q", "--set", "steps=3", "-o", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "o" / "final.png")
    assert json.loads((tmp_path / "o" / "run.json").read_text())["steps_done"] == 3


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    """What a bug report needs: pixgen's, torch's and Python's versions."""
    import platform

    for flag in ("--version", "-V"):
        assert main([flag]) == 0
        out = capsys.readouterr().out.strip()
        assert out == (
            f"pixgen {pixgen.__version__} (torch {torch.__version__}, "
            f"Python {platform.python_version()})"
        )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run"], "error: missing argument 'recipe' (see 'pixgen run -h')"),
        (["runn"], "error: no such command 'runn'. Did you mean 'run'? (see 'pixgen -h')"),
        (["run", "r.yaml", "--stepz", "3"], "error: no such option: --stepz"),
        (["render", "x", "--fps", "fast"], "error: invalid value for '--fps'"),
    ],
)
def test_cli_usage_mistakes_are_one_error_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_a_full_disk_is_one_message_and_keeps_what_was_written(
    basic_recipe: dict,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    import yaml

    import pixgen.fileio

    real_fsync, files_written = os.fsync, []

    def fsync_until_full(fd: int) -> None:
        if len(files_written) == 4:  # recipe.yaml and three stills fit, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        files_written.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(pixgen.fileio.os, "fsync", fsync_until_full)
    recipe = dict(basic_recipe, steps=8, outputs=[{"use": "png", "every": 1}])
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    assert main(["run", str(path), "-q", "-o", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: disk full while writing {run}"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    stills = sorted(p.name for p in (run / "steps").iterdir())
    assert stills == ["000000.png", "000001.png", "000002.png"]  # no half-written file
    for still in stills:
        assert Image.open(run / "steps" / still).size == tuple(recipe["size"])
    assert not [p for p in run.rglob("*") if p.name.startswith(".")], "temporary files removed"


def test_unavailable_device_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type in {"cpu", "mps"}


def test_pixel_palette_final_image_uses_only_palette(basic_recipe: dict) -> None:
    palette = ["#000000", "#ffffff", "#ff0000", "#0000ff"]
    result = pixgen.run(
        basic_recipe, generator={"use": "pixel", "cells": [16, 12], "palette": palette}
    )
    colours = {tuple(c) for c in np.asarray(result.image).reshape(-1, 3)}
    allowed = {tuple(int(p[i : i + 2], 16) for i in (1, 3, 5)) for p in palette}
    assert colours <= allowed


def test_pixel_cells_are_blocks(basic_recipe: dict) -> None:
    result = pixgen.run(basic_recipe, generator={"use": "pixel", "cells": [8, 6]})
    img = np.asarray(result.image)
    assert len(np.unique(img[0:8, 0:8].reshape(-1, 3), axis=0)) == 1  # one 8×8 cell


@pytest.mark.parametrize(
    "generator",
    [
        {"use": "pixel", "cells": [64, 48]},
        {"use": "image", "param": "fft"},
        {"use": "image", "param": "fft", "periodic": True},
        {"use": "image", "param": "pixels"},
    ],
)
def test_init_image_starts_from_that_image(
    basic_recipe: dict, target_png: Path, generator: dict
) -> None:
    recipe = dict(
        basic_recipe,
        steps=1,
        generator=dict(generator, init_image=str(target_png)),
        losses=[{"use": "smoothness", "weight": 0.0}],
    )
    recipe["losses"] = [{"use": "smoothness", "weight": 1e-9}]
    result = pixgen.run(recipe, optimizer={"name": "sgd", "lr": 1e-9})
    got = np.asarray(result.image).astype(float)
    want = np.asarray(Image.open(target_png).convert("RGB")).astype(float)
    assert np.abs(got - want).mean() < 4.0


@pytest.mark.parametrize("periodic", [True, False])
def test_image_generator_edges_wrap_only_when_periodic(basic_recipe: dict, periodic: bool) -> None:
    """A periodic Fourier picture continues its left edge at its right edge (so a prompt
    "at the left" also paints the right); ``periodic: false`` makes the edges independent."""
    correlations = []
    for seed in range(6):
        result = pixgen.run(
            dict(basic_recipe, seed=seed, steps=1, losses=[{"use": "smoothness", "weight": 1e-9}]),
            generator={"use": "image", "decay": 2.0, "init_noise": 1.0, "periodic": periodic},
            optimizer={"name": "sgd", "lr": 1e-9},
        )
        img = np.asarray(result.image).astype(float).mean(-1)
        correlations.append(np.corrcoef(img[:, 0], img[:, -1])[0, 1])
        correlations.append(np.corrcoef(img[0], img[-1])[0, 1])
    mean = float(np.mean(correlations))
    assert mean > 0.8 if periodic else abs(mean) < 0.5, correlations


def test_image_generator_converges_to_target(basic_recipe: dict) -> None:
    result = pixgen.run(
        basic_recipe, generator={"use": "image"}, steps=60, optimizer={"name": "adam", "lr": 0.1}
    )
    assert result.history["losses"]["target_image"][-1] < 0.01


def test_run_files_get_normal_permissions(basic_recipe: dict) -> None:
    result = pixgen.run(basic_recipe)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("final.png", "run.json", "recipe.yaml", "checkpoint.pt"):
        mode = (result.run_dir / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~mask, (name, oct(mode))
