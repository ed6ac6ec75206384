"""The ``video`` output: MP4/GIF/WebP frames, sizes, queue policy, Ctrl-C and failures."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import pixgen
import pixgen.video
from pixgen.errors import PluginRunError, RecipeError
from pixgen.hookspecs import hookimpl
from pixgen.plugin import Loss, PluginOptions
from pixgen.recipe import load_recipe
from pixgen.video import read_archive

TOLERANCE = 8 / 255  # mean absolute difference H.264 at crf 18 stays well under


def with_video(recipe: dict, **video: Any) -> dict:
    """``recipe`` with a video output (and a png output when ``png_every`` is given)."""
    png_every = video.pop("png_every", None)
    outputs: list[dict[str, Any]] = [{"use": "video", **video}]
    if png_every is not None:
        outputs.append({"use": "png", "every": png_every})
    return {**recipe, "outputs": outputs}


def mp4_frames(path: Path) -> list[np.ndarray]:
    return list(iio.imiter(path, plugin="FFMPEG"))


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images, in [0, 1]."""
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean() / 255)


def run_json(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text())


def test_mp4_frame_count_size_first_and_last_frames(basic_recipe: dict, tmp_path: Path) -> None:
    recipe = with_video(basic_recipe, every=2, fps=10, hold_last=0.5, png_every=2)
    result = pixgen.run(recipe, output=tmp_path / "run")
    run_dir = tmp_path / "run"
    frames = mp4_frames(run_dir / "progress.mp4")
    # steps 0, 2, …, 18 (10 frames), then the final image for 0.5 s at 10 fps (5 frames)
    assert len(frames) == 10 + 5
    assert frames[0].shape == (48, 64, 3)
    assert mad(frames[0], rgb(run_dir / "steps" / "000000.png")) < TOLERANCE
    final = rgb(run_dir / "final.png")
    for frame in frames[-5:]:
        assert mad(frame, final) < TOLERANCE
    # The archive keeps each frame losslessly: the png output's stills, then the final image.
    kept = list(read_archive(run_dir / "frames.mkv"))
    assert len(kept) == 10 + 1
    assert np.array_equal(kept[0], rgb(run_dir / "steps" / "000000.png"))
    assert np.array_equal(kept[5], rgb(run_dir / "steps" / "000010.png"))
    assert np.array_equal(kept[-1], final)
    index = json.loads((run_dir / "frames.json").read_text())
    assert index["steps"] == list(range(0, 20, 2)) and index["final"] is True
    summary = result.info["outputs"]["video"]
    assert summary["frames"] == 15 and summary["steps_recorded"] == 10
    assert summary["dropped"] == 0 and summary["file"] == "progress.mp4"
    assert summary["archive"] == "frames.mkv"
    assert run_json(run_dir)["outputs"]["video"] == summary
    assert not list(run_dir.glob(".*partial*")), "temporary file left behind"


def test_hold_last_zero_still_ends_on_the_final_image(basic_recipe: dict, tmp_path: Path) -> None:
    recipe = with_video(basic_recipe, every=5, hold_last=0, keep_frames=False, file="clip.mp4")
    pixgen.run(recipe, output=tmp_path / "run")
    frames = mp4_frames(tmp_path / "run" / "clip.mp4")
    assert len(frames) == 4 + 1  # steps 0, 5, 10, 15 and the final image once
    assert mad(frames[-1], rgb(tmp_path / "run" / "final.png")) < TOLERANCE
    assert not (tmp_path / "run" / "frames.mkv").exists()


def test_an_mp4_and_a_gif_of_one_run_need_no_file_names(basic_recipe: dict, tmp_path: Path) -> None:
    recipe = with_video(basic_recipe, every=5, hold_last=0)
    recipe["outputs"].append({"use": "video", "format": "gif", "every": 10})
    result = pixgen.run(recipe, output=tmp_path / "run")
    assert result.info["outputs"]["video"]["archive"] == "frames.mkv"
    assert result.info["outputs"]["video#2"]["archive"] == "progress-gif-frames.mkv"
    assert len(list(read_archive(tmp_path / "run" / "progress-gif-frames.mkv"))) == 2 + 1


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (
            {"use": "video", "file": "progress.mp4"},
            "outputs[1] (video) would write progress.mp4, which outputs[0] (video) writes too",
        ),
        ({"use": "png", "folder": "frames.mkv"}, "outputs[1] (png) would write frames.mkv"),
        (
            {"use": "png", "folder": "final.png"},
            "outputs[1] (png) would write final.png, which the run itself writes too",
        ),
        (
            {"use": "png", "folder": "checkpoint.pt"},
            "outputs[1] (png) would write checkpoint.pt, which the run itself writes too",
        ),
    ],
)
def test_two_outputs_cannot_write_one_file(
    basic_recipe: dict, tmp_path: Path, second: dict, message: str
) -> None:
    recipe = with_video(basic_recipe)
    recipe["outputs"].append(second)
    with pytest.raises(RecipeError, match=re.escape(message)):
        pixgen.run(recipe, output=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_two_video_outputs_keep_separate_archives(basic_recipe: dict, tmp_path: Path) -> None:
    recipe = with_video(basic_recipe, every=5, hold_last=0)
    recipe["outputs"].append({"use": "video", "format": "gif", "file": "small", "scale": 0.5})
    pixgen.run(recipe, output=tmp_path / "run")
    run_dir = tmp_path / "run"
    assert len(list(read_archive(run_dir / "frames.mkv"))) == 4 + 1
    assert len(list(read_archive(run_dir / "small-gif-frames.mkv"))) == 20 + 1
    index = json.loads((run_dir / "small-gif-frames.json").read_text())
    assert index["steps"] == list(range(20))
    with Image.open(run_dir / "small.gif") as img:
        assert img.size == (32, 24)


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [
        ((65, 47), 1.0, (66, 48)),  # odd: padded by one repeated edge pixel to an even size
        ((64, 48), 0.5, (32, 24)),
    ],
)
def test_mp4_odd_sizes_and_scale(
    basic_recipe: dict,
    tmp_path: Path,
    size: tuple[int, int],
    scale: float,
    expected: tuple[int, int],
) -> None:
    # A smooth picture (the image generator started from the target, small steps): sharp
    # colour cells that straddle odd pixel columns are smeared by yuv420p's 2×2 chroma,
    # which says nothing about the padding under test.
    target = basic_recipe["losses"][0]["image"]
    generator = {"use": "image", "init_image": target}
    optimizer = {"name": "adam", "lr": 0.05}
    recipe = with_video(
        {
            **basic_recipe,
            "size": list(size),
            "steps": 6,
            "generator": generator,
            "optimizer": optimizer,
        },
        scale=scale,
        hold_last=0,
    )
    result = pixgen.run(recipe, output=tmp_path / "run")
    frames = mp4_frames(tmp_path / "run" / "progress.mp4")
    assert len(frames) == 6 + 1
    assert frames[-1].shape == (expected[1], expected[0], 3)
    assert result.info["outputs"]["video"]["size"] == list(expected)
    final = rgb(tmp_path / "run" / "final.png")
    if scale == 1.0:
        assert mad(frames[-1][: size[1], : size[0]], final) < TOLERANCE
    else:
        small = np.asarray(Image.fromarray(final).resize(expected, Image.Resampling.LANCZOS))
        assert mad(frames[-1], small) < TOLERANCE


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_gif_and_webp_decode(basic_recipe: dict, tmp_path: Path, fmt: str) -> None:
    recipe = with_video(basic_recipe, format=fmt, every=4, fps=10, hold_last=1.0)
    result = pixgen.run(recipe, output=tmp_path / "run")
    path = tmp_path / "run" / f"progress.{fmt}"
    durations, last = [], None
    with Image.open(path) as img:
        assert img.format == fmt.upper() and img.size == (64, 48)
        assert img.n_frames >= 2  # identical neighbours may be merged by the encoder
        for index in range(img.n_frames):
            img.seek(index)
            last = np.asarray(img.convert("RGB"))  # WebP reads a frame's duration on load
            durations.append(img.info["duration"])
    # 5 step frames at 1/10 s, then the final image for 1 s
    assert sum(durations) == pytest.approx(1500, abs=20)
    assert last is not None and mad(last, rgb(tmp_path / "run" / "final.png")) < TOLERANCE
    assert result.info["outputs"]["video"]["frames"] == 5 + 10


def test_drop_policy_counts_dropped_frames(
    basic_recipe: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = pixgen.video.FfmpegPipe.write

    def slow(self: pixgen.video.FfmpegPipe, frame: np.ndarray) -> None:
        time.sleep(0.03)  # an encoder far slower than the loop
        write(self, frame)

    monkeypatch.setattr(pixgen.video.FfmpegPipe, "write", slow)
    recipe = with_video(
        {**basic_recipe, "steps": 30}, queue=1, when_full="drop", keep_frames=False, hold_last=0
    )
    result = pixgen.run(recipe, output=tmp_path / "run")
    summary = run_json(tmp_path / "run")["outputs"]["video"]
    assert summary == result.info["outputs"]["video"]
    assert summary["dropped"] > 0
    assert summary["steps_recorded"] + summary["dropped"] == 30
    frames = mp4_frames(tmp_path / "run" / "progress.mp4")
    assert len(frames) == summary["steps_recorded"] + 1 == summary["frames"]
    assert mad(frames[-1], rgb(tmp_path / "run" / "final.png")) < TOLERANCE


def test_wait_policy_keeps_every_frame_with_a_slow_encoder(
    basic_recipe: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = pixgen.video.FfmpegPipe.write

    def slow(self: pixgen.video.FfmpegPipe, frame: np.ndarray) -> None:
        time.sleep(0.02)
        write(self, frame)

    monkeypatch.setattr(pixgen.video.FfmpegPipe, "write", slow)
    recipe = with_video({**basic_recipe, "steps": 12}, queue=1, hold_last=0)
    result = pixgen.run(recipe, output=tmp_path / "run")
    summary = result.info["outputs"]["video"]
    assert summary["dropped"] == 0 and summary["steps_recorded"] == 12
    assert len(mp4_frames(tmp_path / "run" / "progress.mp4")) == 13


class _FailingLoss(Loss):
    """Raises at step 6 (a stand-in for any mid-run failure)."""

    name = "fails_at_6"

    class Options(PluginOptions):
        pass

    def __call__(self, image: torch.Tensor, ctx: Any) -> torch.Tensor:
        if ctx.step == 6:
            raise ValueError("boom")
        return image.mean() * 0


class _FailingPlugin:
    @hookimpl
    def register_losses(self, register: Any) -> None:
        register(_FailingLoss)


def test_failed_run_still_finalises_the_video(basic_recipe: dict, tmp_path: Path) -> None:
    recipe = with_video(basic_recipe, hold_last=0)
    recipe["losses"] = [*recipe["losses"], {"use": "fails_at_6"}]
    with pytest.raises(PluginRunError, match="boom"):
        pixgen.run(recipe, output=tmp_path / "run", plugins=[_FailingPlugin()])
    run_dir = tmp_path / "run"
    assert run_json(run_dir)["status"] == "failed"
    frames = mp4_frames(run_dir / "progress.mp4")
    assert len(frames) == 6 + 1  # steps 0–5, then the image at failure
    assert mad(frames[-1], rgb(run_dir / "final.png")) < TOLERANCE


def _start_long_run(basic_recipe: dict, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    recipe_path = tmp_path / "long.yaml"
    recipe = with_video({**basic_recipe, "steps": 100000}, hold_last=0.2, fps=10)
    recipe_path.write_text(yaml.safe_dump(recipe))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixgen.cli", "run", str(recipe_path), "-o", str(run_dir), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if (run_dir / ".progress.partial.mp4").exists():  # ffmpeg has frames
            time.sleep(0.5)
            return proc, run_dir
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"the run wrote no frames in time (exit {proc.returncode}): {err.decode()}")


def test_ctrl_c_leaves_a_playable_video(basic_recipe: dict, tmp_path: Path) -> None:
    proc, run_dir = _start_long_run(basic_recipe, tmp_path)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 130, err.decode()
    assert "interrupted" in err.decode()
    info = run_json(run_dir)
    assert info["status"] == "interrupted" and info["interrupted"] is True
    summary = info["outputs"]["video"]
    frames = mp4_frames(run_dir / "progress.mp4")
    assert len(frames) >= 1 and len(frames) == summary["frames"]
    assert summary["steps_recorded"] == info["steps_done"]
    assert len(frames) == info["steps_done"] + 2  # every step, then 0.2 s at 10 fps
    assert mad(frames[-1], rgb(run_dir / "final.png")) < TOLERANCE
    assert not list(run_dir.glob(".*partial*"))


def test_a_killed_run_never_leaves_a_broken_file_under_the_final_name(
    basic_recipe: dict, tmp_path: Path
) -> None:
    proc, run_dir = _start_long_run(basic_recipe, tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    time.sleep(0.5)  # ffmpeg, in its own session, sees the pipe close and finishes
    assert not (run_dir / "progress.mp4").exists()
    assert not (run_dir / "frames.mkv").exists()
    assert (run_dir / ".progress.partial.mp4").exists()


def test_options_are_validated(basic_recipe: dict) -> None:
    with pytest.raises(RecipeError, match="does not match format"):
        load_recipe(with_video(basic_recipe, file="out.gif"))
    with pytest.raises(RecipeError, match="when_full"):
        load_recipe(with_video(basic_recipe, when_full="block"))
    with pytest.raises(RecipeError, match="fps"):
        load_recipe(with_video(basic_recipe, fps=0))
    with pytest.raises(RecipeError, match="plain name"):
        load_recipe(with_video(basic_recipe, file="../escape"))
    recipe = load_recipe(with_video(basic_recipe, format="webp", file="anim"))
    assert recipe.outputs[0].options.format == "webp"


@pytest.mark.gpu
def test_video_from_a_cuda_run(basic_recipe: dict, tmp_path: Path) -> None:
    """Frames leave the GPU through pinned memory and CUDA events; same video as on CPU."""
    recipe = with_video(
        {**basic_recipe, "device": "cuda"}, every=2, fps=10, hold_last=0.5, png_every=2
    )
    result = pixgen.run(recipe, output=tmp_path / "run")
    run_dir = tmp_path / "run"
    frames = mp4_frames(run_dir / "progress.mp4")
    assert len(frames) == 10 + 5 == result.info["outputs"]["video"]["frames"]
    assert mad(frames[0], rgb(run_dir / "steps" / "000000.png")) < TOLERANCE
    assert mad(frames[-1], rgb(run_dir / "final.png")) < TOLERANCE
    kept = list(read_archive(run_dir / "frames.mkv"))
    assert np.array_equal(kept[2], rgb(run_dir / "steps" / "000004.png"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_frames_are_8_bit_the_same_way_whatever_the_image_dtype(dtype: torch.dtype) -> None:
    """Frames (video and stills) round [0, 1] to 0…255 half to even, out-of-range values
    clipped, NaN black, for the image dtypes a run can hand its outputs."""
    from pixgen.frames import to_uint8_hwc

    image = (torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1).to(
        dtype
    )
    exact = image[0].double().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)
    frame = to_uint8_hwc(image)
    assert frame.shape == (9, 11, 3) and frame.dtype == np.uint8 and frame.flags.c_contiguous
    assert np.array_equal(frame, exact.numpy())
    image[0, :, 2, 3] = float("nan")  # a diverged run: black, and no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not to_uint8_hwc(image)[2, 3].any()
