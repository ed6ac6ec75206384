"""``pixgen render RUN_DIR``: re-encoding a run's saved frames without re-running it."""

from __future__ import annotations

import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

import pixgen
from pixgen.cli import main
from pixgen.commands.render import render_run
from pixgen.errors import PixgenError


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


@pytest.fixture
def video_run(basic_recipe: dict, tmp_path: Path) -> Path:
    """A finished 20-step run with a video frame every 2 steps (10 kept frames)."""
    recipe = {
        **basic_recipe,
        "outputs": [{"use": "video", "every": 2, "fps": 10, "hold_last": 0.5}],
    }
    pixgen.run(recipe, output=tmp_path / "run")
    return tmp_path / "run"


def test_render_mp4_at_another_fps(video_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(video_run), "--fps", "4", "--hold-last", "1"]) == 0
    out = video_run / "render-4fps.mp4"
    assert f"{out} (14 frames)" in capsys.readouterr().out
    frames = list(iio.imiter(out, plugin="FFMPEG"))
    assert len(frames) == 10 + 4  # the 10 kept frames, then 1 s of the final image at 4 fps
    assert iio.improps(out, plugin="FFMPEG").shape[1:3] == (48, 64)
    meta = iio.immeta(out, plugin="FFMPEG")
    assert meta["fps"] == pytest.approx(4)
    final = rgb(video_run / "final.png")
    assert np.abs(frames[-1].astype(float) - final).mean() < 8


def test_render_defaults_follow_the_run_and_match_its_video(video_run: Path) -> None:
    path, count = render_run(video_run)
    assert path == video_run / "render-10fps.mp4" and count == 10 + 5
    original = list(iio.imiter(video_run / "progress.mp4", plugin="FFMPEG"))
    again = list(iio.imiter(path, plugin="FFMPEG"))
    assert len(again) == len(original)
    assert all(np.array_equal(a, b) for a, b in zip(original, again, strict=True))


def test_render_gif_and_webp_with_scale(video_run: Path, tmp_path: Path) -> None:
    path, count = render_run(video_run, fmt="gif", fps=5, hold_last=0, scale=0.5)
    assert path.name == "render-5fps.gif" and count == 10 + 1
    with Image.open(path) as img:
        assert img.size == (32, 24) and 2 <= img.n_frames <= 11
    out = tmp_path / "small.webp"
    path, count = render_run(video_run, output=out, fps=20)  # the format from the suffix
    assert path == out and count == 10 + 10
    with Image.open(out) as img:
        assert img.format == "WEBP" and img.size == (64, 48) and img.n_frames >= 2


def test_render_says_when_the_archive_was_cut_short(
    video_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = video_run / "frames.mkv"
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) * 6 // 10])
    assert main(["render", str(video_run)]) == 0
    err = capsys.readouterr().err
    held = re.search(r"note: frames\.mkv holds (\d+) of the 11 frames the run recorded", err)
    assert held and 1 <= int(held.group(1)) < 11, err
    assert "cut short" in err
    # The whole archive renders without a note.
    archive.write_bytes(data)
    render_run(video_run, fmt="gif", note=pytest.fail)


def test_render_falls_back_to_png_stills(basic_recipe: dict, tmp_path: Path) -> None:
    recipe = {**basic_recipe, "outputs": [{"use": "png", "every": 5}]}
    pixgen.run(recipe, output=tmp_path / "run")
    path, count = render_run(tmp_path / "run", fps=10, hold_last=0.2)
    assert count == 4 + 2  # stills at steps 0, 5, 10, 15; final.png twice
    assert len(list(iio.imiter(path, plugin="FFMPEG"))) == 6


def test_render_refuses_to_overwrite(video_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(video_run), "-o", str(video_run / "progress.mp4")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(
            [
                "render",
                str(video_run),
                "-o",
                str(video_run / "progress.mp4"),
                "--overwrite",
                "--fps",
                "5",
            ]
        )
        == 0
    )
    # 0.5 s at 5 fps is 2.5 frames: rounded half up to 3
    assert len(list(iio.imiter(video_run / "progress.mp4", plugin="FFMPEG"))) == 10 + 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fps", "0"], "--fps must be above 0"),
        (["--format", "avi"], "unknown format 'avi'"),
        (["-o", "x.gif", "--format", "mp4"], "does not end in .mp4"),
        (["--frames", "nothing"], "no saved frames"),
    ],
)
def test_render_bad_arguments(
    video_run: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["render", str(video_run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_render_errors_for_folders_that_are_not_runs(
    tmp_path: Path, basic_recipe: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["render", str(tmp_path / "empty")]) == 2
    assert "not a pixgen run folder" in capsys.readouterr().err
    pixgen.run(basic_recipe, output=tmp_path / "bare")  # no outputs: no frames anywhere
    with pytest.raises(PixgenError, match="no saved frames") as excinfo:
        render_run(tmp_path / "bare")
    assert "keep_frames" in str(excinfo.value)
