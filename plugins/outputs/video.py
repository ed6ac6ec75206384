"""Output ``video``: a progress video of the run (MP4/H.264, animated GIF or WebP).

Frames leave the GPU through :class:`pixgen.frames.FrameWriter` (non-blocking copy into
pinned memory, a bounded queue, a worker thread), so the loop never waits for encoding
unless the queue is full and ``when_full: wait``. With ``keep_frames`` each frame is
also saved losslessly as ``frames/NNNNNN.png`` (on a small thread pool; Pillow's PNG
encoder runs without the GIL), which is what ``pixgen render`` re-encodes later.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, PngImagePlugin
from pydantic import Field, field_validator, model_validator

from pixgen.context import RunContext
from pixgen.frames import FrameWriter
from pixgen.hookspecs import hookimpl
from pixgen.plugin import Output, PluginOptions
from pixgen.steps import StepValue, resolve_step
from pixgen.video import (
    VideoSink,
    ffmpeg_exe,
    fit_frame,
    hold_frames,
    open_sink,
    output_size,
)

_FINAL = -1  # the step number the final image travels under through the frame queue
_PNG_WORKERS = 2
_PNG_BACKLOG = 8  # frames waiting for their PNG before the encoder thread waits


class VideoOutput(Output):
    """A progress video (MP4/H.264, GIF or WebP): a frame every N steps, the final image held."""

    name = "video"

    class Options(PluginOptions):
        format: Literal["mp4", "gif", "webp"] = Field(
            "mp4", description="mp4 (H.264, yuv420p; streamed), gif or webp (assembled at the end)"
        )
        every: StepValue = Field(1, description="steps between frames (a count or a share like '1%')")
        fps: float = Field(30.0, gt=0, le=240, description="frames per second of the video")
        hold_last: float = Field(
            1.0, ge=0, le=600,
            description="seconds the final image is shown at the end (at least one frame)",
        )
        scale: float = Field(
            1.0, gt=0, le=8,
            description="size factor of the video (nearest when enlarging, Lanczos when shrinking)",
        )
        file: str = Field(
            "progress", description="file name in the run folder; the extension follows format"
        )
        crf: int = Field(18, ge=0, le=51, description="mp4: H.264 quality, 0 lossless … 51 worst")
        preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium",
                        "slow", "slower", "veryslow"] = Field(
            "medium", description="mp4: x264 speed preset (faster = bigger file, less CPU)"
        )
        keep_frames: bool = Field(
            True, description="also save each frame losslessly as frames/NNNNNN.png for pixgen render"
        )
        frames_folder: str = Field("frames", description="sub-folder of the run folder for kept frames")
        queue: int = Field(16, ge=1, le=1024, description="frames that may wait for the encoder")
        when_full: Literal["wait", "drop"] = Field(
            "wait",
            description="when the queue is full: wait for the encoder, or drop the frame "
            "(counted in run.json)",
        )

        @field_validator("file", "frames_folder")
        @classmethod
        def _plain_name(cls, value: str) -> str:
            if not value.strip() or "/" in value or "\\" in value or value in (".", ".."):
                raise ValueError(f"must be a plain name inside the run folder, got {value!r}")
            return value

        @model_validator(mode="after")
        def _check_extension(self) -> VideoOutput.Options:
            suffix = Path(self.file).suffix.lower().lstrip(".")
            if suffix in ("mp4", "gif", "webp") and suffix != self.format:
                raise ValueError(f"file {self.file!r} does not match format: {self.format}")
            return self

    options: Options

    def __init__(self, options: Options, ctx: RunContext):
        super().__init__(options, ctx)
        self.every = max(1, resolve_step(options.every, ctx.steps))
        stem = Path(options.file)
        self.filename = stem.name if stem.suffix.lower() == f".{options.format}" else (
            f"{stem.name}.{options.format}")
        self.hold = hold_frames(options.hold_last, options.fps)
        self.steps_recorded = 0
        self.frames_kept = 0
        self.size: tuple[int, int] | None = None
        self._writer: FrameWriter | None = None
        self._sink: VideoSink | None = None
        self._frames_dir: Path | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[None]] = deque()
        self._finished = False

    # -- the engine's calls ------------------------------------------------------------
    def on_start(self, ctx: RunContext) -> None:
        assert ctx.run_dir is not None
        if self.options.format == "mp4":
            ffmpeg_exe()  # fail before the first step, not on the worker thread
        self.path = ctx.run_dir / self.filename
        if self.options.keep_frames:
            self._frames_dir = ctx.run_dir / self.options.frames_folder
            self._frames_dir.mkdir(parents=True, exist_ok=True)
            self._pool = ThreadPoolExecutor(_PNG_WORKERS, thread_name_prefix="pixgen-video-png")
        self._writer = FrameWriter(self._consume, max_queue=self.options.queue,
                                   policy=self.options.when_full, name="pixgen-video")

    def wants(self, step: int) -> bool:
        return step % self.every == 0

    def on_step(self, ctx: RunContext, step: int, image: torch.Tensor) -> None:
        assert self._writer is not None
        self._writer.submit(step, image)

    def on_finish(self, ctx: RunContext, image: torch.Tensor) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            if self._writer is not None:
                with contextlib.suppress(RuntimeError):  # a failed worker is reported by close()
                    # The final frame is never dropped: it is what the video ends on.
                    self._writer.submit(_FINAL, image, policy="wait")
                self._writer.close()
        finally:
            # Whatever happened above, finalise what was written so the file plays.
            self._close_files()

    def summary(self) -> dict[str, Any]:
        writer = self._writer
        return {
            "file": self.filename if self._sink is not None and self._sink.frames else None,
            "format": self.options.format,
            "frames": self._sink.frames if self._sink is not None else 0,
            "steps_recorded": self.steps_recorded,
            "dropped": writer.dropped if writer is not None else 0,
            "when_full": self.options.when_full,
            "fps": self.options.fps,
            "size": list(self.size) if self.size else None,
            "frames_folder": self.options.frames_folder if self.options.keep_frames else None,
            "frames_kept": self.frames_kept,
        }

    # -- the worker thread -------------------------------------------------------------
    def _consume(self, step: int, frame: np.ndarray) -> None:
        """Encode one frame (runs on the FrameWriter's thread, in step order)."""
        if self._sink is None:
            h, w = frame.shape[:2]
            self.size = output_size(w, h, self.options.scale, self.options.format)
            self._sink = open_sink(self.path, self.options.format, self.options.fps, self.size,
                                   crf=self.options.crf, preset=self.options.preset)
        if step == _FINAL:
            self._sink.add(fit_frame(frame, self.options.scale, self.options.format), self.hold)
            return
        if self._pool is not None and self._frames_dir is not None:
            self._keep(step, frame)
        self._sink.add(fit_frame(frame, self.options.scale, self.options.format))
        self.steps_recorded += 1

    def _keep(self, step: int, frame: np.ndarray) -> None:
        assert self._pool is not None and self._frames_dir is not None
        while len(self._pending) >= _PNG_BACKLOG:
            self._pending.popleft().result()
        path = self._frames_dir / f"{step:06d}.png"
        self._pending.append(self._pool.submit(self._save_png, path, step, frame))

    def _save_png(self, path: Path, step: int, frame: np.ndarray) -> None:
        save_png_fast(path, frame, step)
        self.frames_kept += 1

    def _close_files(self) -> None:
        error: BaseException | None = None
        while self._pending:
            try:
                self._pending.popleft().result()
            except BaseException as exc:
                error = error or exc
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._sink is not None:
            try:
                self._sink.close()
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error


def save_png_fast(path: Path, frame: np.ndarray, step: int) -> None:
    """A lossless frame with its step recorded, renamed into place once complete.

    No fsync (unlike :func:`pixgen.fileio.atomic_writer`): a frame a power cut loses is
    not worth a disk flush per step, and the rename still keeps half-written frames away
    from their final names.
    """
    info = PngImagePlugin.PngInfo()
    info.add_text("pixgen:step", str(step))
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        # compress_level 1: lossless all the same, and several times faster than the default.
        Image.fromarray(frame).save(tmp, format="PNG", pnginfo=info, compress_level=1)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@hookimpl
def register_outputs(register):  # type: ignore[no-untyped-def]
    register(VideoOutput)
