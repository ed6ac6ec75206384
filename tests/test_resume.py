"""A stopped run goes on from its checkpoint.pt: ``pixgen resume RUN_DIR`` / ``pixgen.resume``.

The property users rely on: stopping a run and resuming it paints exactly the picture the
unstopped run paints, with the same loss history and progress video.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from test_video import _start_long_run, mp4_frames, rgb, run_json, with_video

import pixgen
from pixgen.checkpoint import read_checkpoint
from pixgen.cli import main
from pixgen.errors import PixgenError, PluginRunError
from pixgen.fileio import load_image
from pixgen.hookspecs import hookimpl
from pixgen.plugin import InputFile, Loss, PluginOptions
from pixgen.video import read_archive

QUICKSTART = Path(__file__).resolve().parent.parent / "recipes" / "quickstart.yaml"


class _NoisyTarget(Loss):
    """Distance to a target seen through fresh noise each step (torch's and Python's
    random generators), so a resumed run matches only if both are put back."""

    name = "noisy_target"

    class Options(PluginOptions):
        image: InputFile

    def __init__(self, options: Options, ctx: Any):
        super().__init__(options, ctx)
        self.target = load_image(options.image, (ctx.width, ctx.height))

    def __call__(self, image: torch.Tensor, ctx: Any) -> torch.Tensor:
        noise = 0.2 * torch.randn_like(self.target)
        return ((image - self.target - noise) ** 2).mean() * (1.0 + random.random())


class _StopAt:
    """Presses Ctrl-C (a SIGINT to this process) after the given step."""

    def __init__(self, step: int):
        self.step = step

    @hookimpl
    def register_losses(self, register: Any) -> None:
        register(_NoisyTarget)

    @hookimpl
    def run_step(self, ctx: Any, step: int, losses: dict[str, Any]) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


class _FailAt(_StopAt):
    """Raises after the given step, as a crash in the middle of a run would end it."""

    @hookimpl
    def run_step(self, ctx: Any, step: int, losses: dict[str, Any]) -> None:
        if step == self.step:
            raise RuntimeError("power cut")


class _Noise:
    @hookimpl
    def register_losses(self, register: Any) -> None:
        register(_NoisyTarget)


@pytest.fixture
def noisy_recipe(basic_recipe: dict, target_png: Path) -> dict:
    recipe = with_video(basic_recipe, every=2, hold_last=0)
    recipe["losses"] = [
        {"use": "noisy_target", "image": str(target_png)},
        {"use": "smoothness", "weight": 0.01},
    ]
    recipe["outputs"].append({"use": "png", "every": 5})
    return recipe


def archive_frames(run_dir: Path) -> list[np.ndarray]:
    return list(read_archive(run_dir / "frames.mkv"))


def assert_same_run(unstopped: pixgen.RunResult, resumed: pixgen.RunResult) -> None:
    assert unstopped.run_dir is not None and resumed.run_dir is not None
    assert resumed.status == "completed"
    assert np.array_equal(np.asarray(unstopped.image), np.asarray(resumed.image))
    assert resumed.history == unstopped.history
    first, second = archive_frames(unstopped.run_dir), archive_frames(resumed.run_dir)
    assert len(first) == len(second)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    index = json.loads((resumed.run_dir / "frames.json").read_text())
    assert index["steps"] == json.loads((unstopped.run_dir / "frames.json").read_text())["steps"]
    assert resumed.info["outputs"]["png"] == unstopped.info["outputs"]["png"]
    stills = sorted(p.name for p in (unstopped.run_dir / "steps").iterdir())
    assert sorted(p.name for p in (resumed.run_dir / "steps").iterdir()) == stills
    assert (
        len(mp4_frames(resumed.run_dir / "progress.mp4"))
        == resumed.info["outputs"]["video"]["frames"]
    )


def test_a_run_stopped_and_resumed_paints_what_the_unstopped_run_paints(
    noisy_recipe: dict, tmp_path: Path
) -> None:
    unstopped = pixgen.run(noisy_recipe, output=tmp_path / "a", plugins=[_Noise()])
    stopped = pixgen.run(noisy_recipe, output=tmp_path / "b", plugins=[_StopAt(6)])
    assert stopped.status == "interrupted" and stopped.steps_done == 7
    assert stopped.info["checkpoint"] == {"file": "checkpoint.pt", "step": 7}
    assert read_checkpoint(tmp_path / "b" / "checkpoint.pt").step == 7

    resumed = pixgen.resume(tmp_path / "b", plugins=[_Noise()])
    assert resumed.steps_done == 20 and resumed.info["resumed_from_step"] == 7
    assert resumed.info["checkpoint"] == {"file": "checkpoint.pt", "step": 20}
    assert_same_run(unstopped, resumed)
    assert run_json(tmp_path / "b")["status"] == "completed"


def test_a_crash_resumes_from_the_last_periodic_checkpoint(
    noisy_recipe: dict, tmp_path: Path
) -> None:
    """A run that fails keeps the checkpoint made before the failure; the steps and
    frames after it are made again."""
    noisy_recipe["checkpoint_every"] = 4
    unstopped = pixgen.run(noisy_recipe, output=tmp_path / "a", plugins=[_Noise()])
    with pytest.raises(PluginRunError, match="power cut") as failure:
        pixgen.run(noisy_recipe, output=tmp_path / "b", plugins=[_FailAt(9)])
    assert failure.value.hint == f"'pixgen resume {tmp_path / 'b'}' goes on from step 8"
    info = run_json(tmp_path / "b")
    assert info["status"] == "failed" and info["steps_done"] == 10
    assert info["checkpoint"] == {"file": "checkpoint.pt", "step": 8}

    resumed = pixgen.resume(tmp_path / "b", plugins=[_Noise()])
    assert resumed.info["resumed_from_step"] == 8
    assert_same_run(unstopped, resumed)


def test_a_finished_run_is_painted_further_with_more_steps(
    noisy_recipe: dict, tmp_path: Path
) -> None:
    longer = pixgen.run({**noisy_recipe, "steps": 26}, output=tmp_path / "a", plugins=[_Noise()])
    pixgen.run(noisy_recipe, output=tmp_path / "b", plugins=[_Noise()])
    with pytest.raises(PixgenError, match=r"it has done all 20 of its steps.*--steps N, N > 20"):
        pixgen.resume(tmp_path / "b", plugins=[_Noise()])
    with pytest.raises(PixgenError, match="--steps 15 is not more than the 20 steps it has done"):
        pixgen.resume(tmp_path / "b", steps=15, plugins=[_Noise()])
    extended = pixgen.resume(tmp_path / "b", steps=26, plugins=[_Noise()])
    assert extended.steps_done == 26
    assert yaml.safe_load((tmp_path / "b" / "recipe.yaml").read_text())["steps"] == 26
    assert_same_run(longer, extended)


def test_a_checkpoint_interval_longer_than_the_run_is_noticed(
    noisy_recipe: dict, tmp_path: Path
) -> None:
    result = pixgen.run({**noisy_recipe, "checkpoint_every": 50}, plugins=[_Noise()])
    assert (
        "checkpoint_every (50) is not shorter than the run (20 steps): only the checkpoint "
        "at the end is written" in result.info["notices"]
    )
    assert result.info["checkpoint"] == {"file": "checkpoint.pt", "step": 20}


def test_the_quickstart_resumes_exactly(tmp_path: Path) -> None:
    """The real plugins (the image generator's spectrum, the clip loss's random cutouts
    of two models, Adam's moments) all come back from the checkpoint."""
    settings = {"steps": 8, "outputs": [{"use": "video", "every": 1}]}
    unstopped = pixgen.run(QUICKSTART, output=tmp_path / "a", **settings)
    stopped = pixgen.run(QUICKSTART, output=tmp_path / "b", plugins=[_StopAt(2)], **settings)
    assert stopped.steps_done == 3
    resumed = pixgen.resume(tmp_path / "b")
    assert np.array_equal(np.asarray(unstopped.image), np.asarray(resumed.image))
    assert resumed.history == unstopped.history


def test_without_kept_frames_the_video_starts_at_the_resumed_step(
    noisy_recipe: dict, tmp_path: Path
) -> None:
    noisy_recipe["outputs"][0]["keep_frames"] = False
    pixgen.run(noisy_recipe, output=tmp_path / "b", plugins=[_StopAt(5)])
    resumed = pixgen.resume(tmp_path / "b", plugins=[_Noise()])
    assert (
        "video: progress.mp4 starts at step 6: the frames before it were not kept "
        "(keep_frames is off)" in resumed.info["notices"]
    )
    assert resumed.info["outputs"]["video"]["steps_recorded"] == 7  # steps 6, 8 … 18
    assert len(mp4_frames(tmp_path / "b" / "progress.mp4")) == 8  # and the final image


def _cli(*args: str) -> int:
    return main(list(args))


def test_what_cannot_be_resumed_is_one_clear_error(
    noisy_recipe: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli("resume", str(tmp_path / "nowhere")) == 2
    assert "nowhere is not a run folder (no such folder)" in capsys.readouterr().err

    run_dir = tmp_path / "b"
    pixgen.run(noisy_recipe, output=run_dir, plugins=[_StopAt(3)])
    (run_dir / "checkpoint.pt").rename(tmp_path / "kept.pt")
    assert _cli("resume", str(run_dir)) == 2
    assert "has no checkpoint.pt to resume from" in capsys.readouterr().err

    (run_dir / "checkpoint.pt").write_bytes((tmp_path / "kept.pt").read_bytes()[:300])
    assert _cli("resume", str(run_dir)) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt is damaged or not a pixgen checkpoint" in err
    assert "Traceback" not in err

    saved = torch.load(tmp_path / "kept.pt", weights_only=True)
    for part, change, message in [
        ("history", {"rows": saved["history"]["rows"][:-1]}, "its loss history has 3 steps"),
        ("rng", {"python": [3, [1, 2], None]}, "its random state is malformed"),
    ]:
        torch.save({**saved, part: {**saved[part], **change}}, run_dir / "checkpoint.pt")
        assert _cli("resume", str(run_dir)) == 2
        assert f"checkpoint.pt is damaged: {message}" in capsys.readouterr().err

    (run_dir / "checkpoint.pt").write_bytes((tmp_path / "kept.pt").read_bytes())
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    for key, value, message in [
        ("size", [32, 32], "recipe.yaml's size is [32, 32], but the run was painted with [64, 48]"),
        ("seed", 4, "recipe.yaml's seed is 4, but the run was painted with 3"),
        ("optimizer", {"name": "sgd"}, "recipe.yaml's optimizer is 'sgd', but the run was"),
        ("generator", {"use": "pixel", "cells": [8, 6]}, "does not fit the generator of this"),
    ]:
        (run_dir / "recipe.yaml").write_text(yaml.safe_dump({**recipe, key: value}))
        with pytest.raises(PixgenError, match=re.escape(message)):
            pixgen.resume(run_dir, plugins=[_Noise()])
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert pixgen.resume(run_dir, plugins=[_Noise()]).status == "completed"


def test_an_edited_lr_takes_effect_from_the_resumed_step(
    noisy_recipe: dict, tmp_path: Path
) -> None:
    pixgen.run(noisy_recipe, output=tmp_path / "a", plugins=[_StopAt(9)])
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    recipe = yaml.safe_load((tmp_path / "b" / "recipe.yaml").read_text())
    recipe["optimizer"]["lr"] = 0.05
    (tmp_path / "b" / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    same = pixgen.resume(tmp_path / "a", plugins=[_Noise()])
    slower = pixgen.resume(tmp_path / "b", plugins=[_Noise()])
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert [group["lr"] for group in saved["optimizer"]["param_groups"]] == [0.05]
    assert not np.array_equal(np.asarray(same.image), np.asarray(slower.image))


class _RunsCode:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch ran-code",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    torch.save({"format": "pixgen-checkpoint", "payload": _RunsCode()}, tmp_path / "checkpoint.pt")
    with pytest.raises(PixgenError, match="damaged or not a pixgen checkpoint"):
        read_checkpoint(tmp_path / "checkpoint.pt")
    assert not (tmp_path / "ran-code").exists()


def test_kill_then_pixgen_resume_on_the_command_line(basic_recipe: dict, tmp_path: Path) -> None:
    """SIGTERM (kill, timeout, docker stop) stops a run as Ctrl-C does."""
    proc, run_dir = _start_long_run(basic_recipe, tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    done = run_json(run_dir)["steps_done"]
    assert f"'pixgen resume {run_dir}' goes on from step {done}" in err.decode()

    finished = subprocess.run(
        [sys.executable, "-m", "pixgen.cli", "resume", str(run_dir), "--steps", str(done + 5)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == f"{run_dir}/final.png"
    info = run_json(run_dir)
    assert (info["status"], info["steps_done"], info["resumed_from_step"]) == (
        "completed",
        done + 5,
        done,
    )
    frames = mp4_frames(run_dir / "progress.mp4")
    assert len(frames) == done + 5 + 2  # every step of both sessions, then 0.2 s at 10 fps
    assert np.abs(frames[-1].astype(int) - rgb(run_dir / "final.png").astype(int)).mean() < 3
