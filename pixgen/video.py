"""Writing animations: MP4 (H.264), GIF and WebP, shared by the ``video`` output and
``pixgen render``.

Every sink writes to a temporary name beside the target and renames it into place only
when the file is complete, so a crash never leaves a broken file under the final name.
MP4 is streamed into imageio-ffmpeg's bundled ffmpeg (a child process in its own process
group, so a terminal Ctrl-C does not cut the video short); GIF and WebP are assembled
with Pillow at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Generator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from pixgen.errors import PixgenError

VideoFormat = Literal["mp4", "gif", "webp"]
FORMATS: tuple[str, ...] = ("mp4", "gif", "webp")
X264_PRESETS: tuple[str, ...] = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
    "veryslow",
)
FRAME_NAME = re.compile(r"^(\d+)\.png$")
"""Frame files are named by their step: ``000123.png``."""


def hold_frames(hold_last: float, fps: float) -> int:
    """How many frames show the final image: ``hold_last`` seconds, at least one."""
    return max(1, int(hold_last * fps + 0.5))  # half up, not round()'s half to even


def output_size(width: int, height: int, scale: float, fmt: str) -> tuple[int, int]:
    """The video's frame size: scaled, at least 1 pixel, and even for MP4 (yuv420p)."""
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    if fmt == "mp4":
        w, h = w + w % 2, h + h % 2
    return w, h


def fit_frame(frame: np.ndarray, scale: float, fmt: str) -> np.ndarray:
    """``frame`` (HWC uint8) scaled by ``scale``, then edge-padded to :func:`output_size`.

    The pixel MP4 may need for an even size is added by repeating the edge, so the
    picture is never stretched.
    """
    h, w = frame.shape[:2]
    sw, sh = output_size(w, h, scale, "")
    if (sw, sh) != (w, h):
        # Nearest keeps pixel art crisp when enlarging; Lanczos avoids aliasing when shrinking.
        method = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
        frame = np.asarray(Image.fromarray(frame).resize((sw, sh), method))
    tw, th = output_size(w, h, scale, fmt)
    if (tw, th) != (sw, sh):
        frame = np.pad(frame, ((0, th - sh), (0, tw - sw), (0, 0)), mode="edge")
    return np.ascontiguousarray(frame)


def ffmpeg_exe() -> str:
    """The bundled ffmpeg executable, or a clear error when imageio-ffmpeg is missing."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise PixgenError(
            "MP4 video needs the imageio-ffmpeg package (pip install imageio-ffmpeg); "
            "format: gif or webp works without it"
        ) from exc
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:
        raise PixgenError(f"no ffmpeg executable found for MP4 video: {exc}") from exc


def temp_name(path: Path) -> Path:
    """The name a file is written under until it is complete (same folder, same suffix)."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


class VideoSink:
    """Frames in, one animation file out; ``close()`` finalises and renames it into place."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        self.path = Path(path)
        self.tmp = temp_name(self.path)
        self.fps = fps
        self.size = size
        self.frames = 0

    def add(self, frame: np.ndarray, repeat: int = 1) -> None:
        """Append ``frame`` (HWC uint8 RGB, already ``size``) shown for ``repeat`` frames."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish the file and move it to ``path``; nothing is written if no frame came."""
        raise NotImplementedError

    def abort(self) -> None:
        """Stop without producing the file (used when closing itself failed)."""
        with contextlib.suppress(OSError):
            self.tmp.unlink()


class Mp4Sink(VideoSink):
    """H.264 in MP4, yuv420p, streamed to ffmpeg as frames arrive."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], *, crf: int = 18,
                 preset: str = "medium"):
        super().__init__(path, fps, size)
        if size[0] % 2 or size[1] % 2:
            raise ValueError(f"MP4 frames need an even size, got {size}")
        ffmpeg_exe()
        import imageio_ffmpeg

        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        self._gen: Generator[None, Any, None] | None = imageio_ffmpeg.write_frames(
            str(self.tmp), size, pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            fps=float(fps), quality=None, codec="libx264",
            macro_block_size=1, ffmpeg_log_level="error",
            # faststart: the index goes first so browsers play the file while it loads.
            output_params=["-crf", str(crf), "-preset", preset, "-movflags", "+faststart"],
        )
        self._gen.send(None)

    def add(self, frame: np.ndarray, repeat: int = 1) -> None:
        assert self._gen is not None, "sink already closed"
        data = np.ascontiguousarray(frame)
        for _ in range(repeat):
            self._gen.send(data)
            self.frames += 1

    def close(self) -> None:
        gen, self._gen = self._gen, None
        if gen is None:
            return
        try:
            gen.close()  # closes ffmpeg's stdin and waits for it to write the index
        except BaseException:
            self.abort()
            raise
        if self.frames == 0:
            self.abort()
            return
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        gen, self._gen = self._gen, None
        if gen is not None:
            with contextlib.suppress(Exception):
                gen.close()
        super().abort()


class AnimatedImageSink(VideoSink):
    """Animated GIF or WebP through Pillow; frames are kept (compactly) until ``close()``."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], *, fmt: str):
        super().__init__(path, fps, size)
        self.fmt = fmt
        self._images: list[Image.Image] = []
        self._durations: list[float] = []

    def add(self, frame: np.ndarray, repeat: int = 1) -> None:
        image = Image.fromarray(np.ascontiguousarray(frame), mode="RGB")
        if self.fmt == "gif":
            # GIF holds 256 colours anyway; quantising now keeps 1 byte per pixel in memory.
            image = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                   dither=Image.Dither.NONE)
        self._images.append(image)
        self._durations.append(1000.0 * repeat / self.fps)
        self.frames += repeat

    def close(self) -> None:
        images, self._images = self._images, []
        if not images:
            self.abort()
            return
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        durations = [round(d) for d in self._durations]
        params: dict[str, Any] = {"save_all": True, "append_images": images[1:],
                                  "duration": durations, "loop": 0}
        if self.fmt == "webp":
            params.update(lossless=False, quality=90, method=4)
        else:
            params.update(optimize=False, disposal=1)
        try:
            images[0].save(self.tmp, format=self.fmt.upper(), **params)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise


def open_sink(path: Path, fmt: str, fps: float, size: tuple[int, int], *, crf: int = 18,
              preset: str = "medium") -> VideoSink:
    """A sink for ``fmt`` (mp4 | gif | webp) writing ``path`` at ``fps``, frames of ``size``."""
    if fmt == "mp4":
        return Mp4Sink(path, fps, size, crf=crf, preset=preset)
    if fmt in ("gif", "webp"):
        return AnimatedImageSink(path, fps, size, fmt=fmt)
    raise PixgenError(f"unknown video format {fmt!r}; choose one of {', '.join(FORMATS)}")


def list_frames(folder: Path) -> list[tuple[int, Path]]:
    """The ``NNNNNN.png`` frames in ``folder`` as (step, path), by step."""
    found = []
    for entry in folder.iterdir():
        match = FRAME_NAME.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)
