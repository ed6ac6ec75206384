"""Writing animations (MP4/H.264, GIF, WebP) and the lossless frame archive, shared by
the ``video`` output and ``pixgen render``.

MP4 and the archive are encoded by imageio-ffmpeg's bundled ffmpeg in a child process:
Python only writes raw RGB frames into its stdin (the write releases the GIL), so the
scaling, padding, holding of the last frame and H.264 encoding cost the optimisation
loop nothing. One process writes both files from one pipe. The child runs in its own
session, so a terminal Ctrl-C reaches pixgen (which then finishes the file) and not
ffmpeg. GIF and WebP are assembled with Pillow.

Every file is written under a temporary name beside its target and renamed into place
only when complete, so a crash never leaves a broken file under the final name.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import tempfile
from collections.abc import Generator
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Literal, get_args

import numpy as np
from PIL import Image

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from pixgen.errors import PixgenError

VideoFormat = Literal["mp4", "gif", "webp"]
FORMATS: tuple[str, ...] = ("mp4", "gif", "webp")
X264Preset = Literal[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
]
X264_PRESETS: tuple[str, ...] = get_args(X264Preset)


def hold_frames(hold_last: float, fps: float) -> int:
    """How many frames show the final image: ``hold_last`` seconds, at least one."""
    return max(1, int(hold_last * fps + 0.5))  # half up, not round()'s half to even


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """``width × height`` times ``scale``, at least one pixel each way."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def output_size(width: int, height: int, scale: float, fmt: str) -> tuple[int, int]:
    """The video's frame size: scaled, and padded to even for MP4 (yuv420p needs it)."""
    w, h = scaled_size(width, height, scale)
    if fmt == "mp4":
        w, h = w + w % 2, h + h % 2
    return w, h


def fit_frame(frame: np.ndarray, scale: float, fmt: str) -> np.ndarray:
    """``frame`` (HWC uint8) scaled by ``scale``, then edge-padded to :func:`output_size`."""
    h, w = frame.shape[:2]
    sw, sh = scaled_size(w, h, scale)
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
            "video needs the imageio-ffmpeg package (pip install imageio-ffmpeg)"
        ) from exc
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:
        raise PixgenError(f"no ffmpeg executable found for video: {exc}") from exc


@functools.cache
def _encoders(exe: str) -> str:
    try:
        return subprocess.run(
            [exe, "-hide_banner", "-encoders"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def archive_codec() -> list[str]:
    """ffmpeg arguments for the lossless frame archive: x264 RGB at qp 0, else FFV1."""
    if " libx264rgb " in _encoders(ffmpeg_exe()):
        # Lossless and about as fast as raw writing on a few cores.
        return ["-c:v", "libx264rgb", "-qp", "0", "-preset", "ultrafast"]
    return ["-c:v", "ffv1", "-level", "3", "-slices", "4", "-g", "1"]


def temp_name(path: Path) -> Path:
    """The name a file is written under until it is complete (same folder, same suffix)."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def _mp4_filters(in_size: tuple[int, int], scale: float, hold: int) -> list[str]:
    w, h = in_size
    sw, sh = scaled_size(w, h, scale)
    tw, th = output_size(w, h, scale, "mp4")
    chain = []
    if (sw, sh) != (w, h):
        flags = "neighbor" if scale >= 1 else "lanczos"
        chain.append(f"scale={sw}:{sh}:flags={flags}")
    if (tw, th) != (sw, sh):
        # The pixel yuv420p needs for an even size repeats the edge; nothing is stretched.
        chain.append(f"pad={tw}:{th}:0:0")
        chain.append(f"fillborders=right={tw - sw}:bottom={th - sh}:mode=smear")
    if hold > 1:
        chain.append(f"tpad=stop_mode=clone:stop={hold - 1}")
    return ["-vf", ",".join(chain)] if chain else []


def _widen_pipe(stream: IO[bytes] | None, frame_bytes: int) -> None:
    """Let the pipe hold a whole frame (Linux), so a write is one wake-up of ffmpeg, not 12."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if stream is None or set_size is None:
        return
    try:
        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except (OSError, ValueError):
        limit = 1 << 20
    with contextlib.suppress(OSError):
        fcntl.fcntl(stream.fileno(), set_size, min(limit, max(1 << 16, frame_bytes)))


class FfmpegPipe:
    """One ffmpeg process: raw RGB frames on stdin, one or more files out."""

    def __init__(self, in_size: tuple[int, int], fps: float, outputs: list[tuple[Path, list[str]]]):
        self.outputs = [(Path(path), temp_name(Path(path))) for path, _ in outputs]
        self.in_size = in_size
        self.frames = 0
        fps_text = str(Fraction(fps).limit_denominator(1001))
        cmd = [
            ffmpeg_exe(),
            "-hide_banner",
            "-v",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{in_size[0]}x{in_size[1]}",
            "-r",
            fps_text,
            "-i",
            "-",
        ]
        for (_, tmp), (_, args) in zip(self.outputs, outputs, strict=True):
            tmp.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["-map", "0:v", *args, "-an", str(tmp)]
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _cleanup()
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._log,
                start_new_session=True,  # a terminal's Ctrl-C must not cut the video short
            )
        except OSError as exc:
            self._log.close()
            raise PixgenError(f"cannot start ffmpeg ({cmd[0]}): {exc}") from exc
        _widen_pipe(self._proc.stdin, in_size[0] * in_size[1] * 3)

    def _stderr(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._log.seek(0)
            return self._log.read().decode(errors="replace").strip()[-2000:]
        return ""

    def write(self, frame: np.ndarray) -> None:
        """Send one HWC uint8 frame of ``in_size``."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None, "ffmpeg pipe already closed"
        if frame.shape != (self.in_size[1], self.in_size[0], 3):
            raise ValueError(f"frame is {frame.shape}, the video is {self.in_size} RGB")
        try:
            proc.stdin.write(np.ascontiguousarray(frame).data.cast("B"))
        except (BrokenPipeError, OSError) as exc:
            proc.wait()
            raise RuntimeError(f"ffmpeg stopped: {self._stderr() or exc}") from exc
        self.frames += 1

    def close(self) -> None:
        """Let ffmpeg finish the files, then rename them into place (none if no frame came)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            with contextlib.suppress(BrokenPipeError, OSError):
                assert proc.stdin is not None
                proc.stdin.close()
            code = proc.wait()
            if code != 0 and self.frames:
                raise RuntimeError(f"ffmpeg failed (exit {code}): {self._stderr()}")
            for final, tmp in self.outputs:
                if self.frames and tmp.exists():
                    os.replace(tmp, final)
        finally:
            self._cleanup()

    def abort(self) -> None:
        """Stop ffmpeg and remove the unfinished files."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        for _, tmp in self.outputs:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._log.close()


class AnimationWriter:
    """Frames of one size in; an MP4, GIF or WebP out (plus, optionally, the archive).

    The last frame added is shown for ``hold`` frames. ``close()`` finalises the files;
    it is safe to call after a failure, and a no-op the second time.
    """

    def __init__(
        self,
        path: Path,
        fmt: str,
        fps: float,
        in_size: tuple[int, int],
        *,
        scale: float = 1.0,
        hold: int = 1,
        crf: int = 18,
        preset: str = "medium",
        archive: Path | None = None,
    ):
        if fmt not in FORMATS:
            raise PixgenError(f"unknown video format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.path, self.fmt, self.fps, self.scale, self.hold = Path(path), fmt, fps, scale, hold
        self.in_size = in_size
        self.size = output_size(in_size[0], in_size[1], scale, fmt)
        self.frames_in = 0
        outputs: list[tuple[Path, list[str]]] = []
        if fmt == "mp4":
            outputs.append(
                (
                    self.path,
                    [
                        *_mp4_filters(in_size, scale, hold),
                        "-c:v",
                        "libx264",
                        "-pix_fmt",
                        "yuv420p",
                        "-crf",
                        str(crf),
                        "-preset",
                        preset,
                        "-movflags",
                        "+faststart",  # the index first: browsers play while loading
                    ],
                )
            )
        if archive is not None:
            outputs.append((Path(archive), archive_codec()))
        self._pipe = FfmpegPipe(in_size, fps, outputs) if outputs else None
        self._images: list[Image.Image] = []

    @property
    def frames(self) -> int:
        """Frames in the animation, the held ones counted (0 before the first frame)."""
        return self.frames_in - 1 + self.hold if self.frames_in else 0

    def add(self, frame: np.ndarray) -> None:
        """Append one HWC uint8 RGB frame of ``in_size``."""
        if self._pipe is not None:
            self._pipe.write(frame)
        if self.fmt != "mp4":
            image = Image.fromarray(fit_frame(frame, self.scale, self.fmt), mode="RGB")
            if self.fmt == "gif":
                # GIF holds 256 colours anyway; quantising now keeps 1 byte a pixel in memory.
                image = image.quantize(
                    colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
                )
            self._images.append(image)
        self.frames_in += 1

    def close(self) -> None:
        """Finish and rename the files into place."""
        try:
            if self._pipe is not None:
                self._pipe.close()
        finally:
            images, self._images = self._images, []
            if images:
                self._save_pillow(images)

    def abort(self) -> None:
        """Give up: stop ffmpeg and leave no file behind."""
        self._images = []
        if self._pipe is not None:
            self._pipe.abort()

    def _save_pillow(self, images: list[Image.Image]) -> None:
        frame_ms = 1000.0 / self.fps
        durations = [round(frame_ms)] * (len(images) - 1) + [round(frame_ms * self.hold)]
        params: dict[str, Any] = {
            "save_all": True,
            "append_images": images[1:],
            "duration": durations,
            "loop": 0,
        }
        if self.fmt == "webp":
            params.update(lossless=False, quality=90, method=4)
        else:
            params.update(optimize=False, disposal=1)
        tmp = temp_name(self.path)
        try:
            images[0].save(tmp, format=self.fmt.upper(), **params)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


def read_archive_index(archive: Path) -> tuple[list[int], bool] | None:
    """The steps of an archive's frames and whether the final image follows them, from
    the index the video output writes beside it (``frames.json`` for ``frames.mkv``);
    None when it is missing or unreadable."""
    import json

    try:
        index = json.loads(archive.with_suffix(".json").read_text(encoding="utf-8"))
        return [int(step) for step in index["steps"]], bool(index["final"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_archive(path: Path) -> Generator[np.ndarray, None, None]:
    """The frames of a frame archive (or any video) as HWC uint8 RGB arrays."""
    import imageio_ffmpeg

    ffmpeg_exe()
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as exc:
        raise PixgenError(f"cannot read the frame archive {path}: {exc}") from exc
    w, h = meta["size"]
    try:
        for data in reader:
            yield np.frombuffer(data, np.uint8).reshape(h, w, 3)
    finally:
        reader.close()
