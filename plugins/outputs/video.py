"""Output ``video``: a progress video of the run (MP4/H.264, animated GIF or WebP).

Frames leave the GPU through :class:`pixgen.frames.FrameWriter` (non-blocking copy into
pinned memory, a bounded queue, a worker thread), so the loop never waits for encoding
unless the queue is full and ``when_full: wait``. The worker only pipes raw frames into
ffmpeg, which scales, pads, holds the last frame and encodes in its own process. With
``keep_frames`` the same ffmpeg also writes every frame losslessly to ``frames.mkv``,
which ``pixgen render`` re-encodes later, and from which a resumed run (``pixgen resume``)
takes the frames of the steps before its checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from pixgen.context import RunContext
from pixgen.fileio import atomic_write_text
from pixgen.frames import FrameWriter
from pixgen.hookspecs import hookimpl
from pixgen.options import PlainName, PluginOptions
from pixgen.plugin import Output
from pixgen.steps import StepInterval, resolve_interval
from pixgen.video import (
    AnimationWriter,
    X264Preset,
    ffmpeg_exe,
    hold_frames,
    read_archive,
    read_archive_index,
)

ARCHIVE = "frames.mkv"
"""The lossless frame archive of the default ``progress.mp4`` (steps in ``frames.json``);
see ``VideoOutput.__init__`` for the names of other videos' archives."""
_FINAL = -1  # the step number the final image travels under through the frame queue


class VideoOutput(Output):
    """A progress video (MP4/H.264, GIF or WebP): a frame every N steps, the final image held."""

    name = "video"

    class Options(PluginOptions):
        format: Literal["mp4", "gif", "webp"] = Field(
            "mp4", description="mp4 (H.264, yuv420p; streamed), gif or webp (assembled at the end)"
        )
        every: StepInterval = Field(
            1, description="steps between frames (a count or a share like '1%')"
        )
        fps: float = Field(30.0, gt=0, le=240, description="frames per second of the video")
        hold_last: float = Field(
            1.0,
            ge=0,
            le=600,
            description="seconds the final image is shown at the end (at least one frame)",
        )
        scale: float = Field(
            1.0,
            gt=0,
            le=8,
            description="size factor of the video (nearest when enlarging, Lanczos when shrinking)",
        )
        file: PlainName = Field(
            "progress", description="file name in the run folder; the extension follows format"
        )
        crf: int = Field(18, ge=0, le=51, description="mp4: H.264 quality, 0 lossless … 51 worst")
        preset: X264Preset = Field(
            "medium", description="mp4: x264 speed preset (faster = bigger file, less CPU)"
        )
        keep_frames: bool = Field(
            True, description="also keep every frame losslessly in frames.mkv (for pixgen render)"
        )
        queue: int = Field(16, ge=1, le=1024, description="frames that may wait for the encoder")
        when_full: Literal["wait", "drop"] = Field(
            "wait",
            description="when the queue is full: wait for the encoder, or drop the frame "
            "(counted in run.json)",
        )

        @model_validator(mode="after")
        def _check_extension(self) -> VideoOutput.Options:
            suffix = Path(self.file).suffix.lower().lstrip(".")
            if suffix in ("mp4", "gif", "webp") and suffix != self.format:
                raise ValueError(f"file {self.file!r} does not match format: {self.format}")
            return self

    options: Options

    def __init__(self, options: Options, ctx: RunContext):
        super().__init__(options, ctx)
        self.every = resolve_interval(options.every, ctx.steps)
        stem = Path(options.file)
        self.filename = (
            stem.name
            if stem.suffix.lower() == f".{options.format}"
            else (f"{stem.name}.{options.format}")
        )
        self.hold = hold_frames(options.hold_last, options.fps)
        # frames.mkv for the default progress.mp4; NAME-frames.mkv for another mp4 and
        # NAME-FORMAT-frames.mkv for a GIF or WebP, so that an mp4 and a GIF of one run
        # (the same file name) keep separate archives.
        if self.filename == "progress.mp4":
            prefix = ""
        elif options.format == "mp4":
            prefix = f"{Path(self.filename).stem}-"
        else:
            prefix = f"{Path(self.filename).stem}-{options.format}-"
        self.archive = f"{prefix}{ARCHIVE}"
        self.index = str(Path(self.archive).with_suffix(".json"))  # read_archive_index's name
        self.steps: list[int] = []
        self._writer: FrameWriter | None = None
        self._video: AnimationWriter | None = None
        self._finished = False

    # -- the engine's calls ------------------------------------------------------------
    def on_start(self, ctx: RunContext) -> None:
        assert ctx.run_dir is not None
        self.run_dir = ctx.run_dir
        if self.options.format == "mp4" or self.options.keep_frames:
            ffmpeg_exe()  # fail before the first step, not on the worker thread
        if ctx.start_step > 0:
            self._replay(ctx, ctx.start_step)
        self._writer = FrameWriter(
            self._consume,
            max_queue=self.options.queue,
            policy=self.options.when_full,
            name="pixgen-video",
        )

    def wants(self, step: int) -> bool:
        return step % self.every == 0

    def on_step(self, ctx: RunContext, step: int, image: torch.Tensor) -> None:
        assert self._writer is not None
        self._writer.submit(step, image)

    def on_finish(self, ctx: RunContext, image: torch.Tensor | None) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            if self._writer is not None:
                try:
                    # The final frame is never dropped: it is what the video ends on.
                    # (None: the engine could not render it; finish with what we have.)
                    if image is not None:
                        self._writer.submit(_FINAL, image, policy="wait")
                finally:
                    self._writer.close()  # raises what the worker met, after draining
        finally:
            # Whatever happened above, finalise what was written so that it plays.
            if self._video is not None:
                self._video.close()
                if self.options.keep_frames:
                    self._write_index()

    def writes(self) -> list[str]:
        return [self.filename, *((self.archive, self.index) if self.options.keep_frames else ())]

    def summary(self) -> dict[str, Any]:
        writer, video = self._writer, self._video
        written = video is not None and video.frames_in > 0
        return {
            "file": self.filename if written else None,
            "format": self.options.format,
            "frames": video.frames if video is not None else 0,
            "steps_recorded": len(self.steps),
            "dropped": writer.dropped if writer is not None else 0,
            "when_full": self.options.when_full,
            "fps": self.options.fps,
            "size": list(video.size) if video is not None else None,
            "archive": self.archive if written and self.options.keep_frames else None,
        }

    def _replay(self, ctx: RunContext, start: int) -> None:
        """A resumed run's video begins with the frames of the steps before ``start``,
        read from the archive the run kept (the old files stay until the new replace them)."""
        archive = self.run_dir / self.archive
        index = read_archive_index(archive) if self.options.keep_frames else None
        if index is None or not archive.is_file():
            why = "keep_frames is off" if not self.options.keep_frames else "its archive is gone"
            ctx.notice(
                f"video: {self.filename} starts at step {start}: the frames before it were "
                f"not kept ({why})"
            )
            return
        earlier = [step for step in index[0] if step < start]
        frames = read_archive(archive)
        try:
            for step, frame in zip(earlier, frames, strict=False):
                self._consume(step, frame)
        finally:
            frames.close()

    # -- the worker thread -------------------------------------------------------------
    def _consume(self, step: int, frame: np.ndarray) -> None:
        """Encode one frame (on the FrameWriter's thread, in step order)."""
        if self._video is None:
            h, w = frame.shape[:2]
            opts = self.options
            self._video = AnimationWriter(
                self.run_dir / self.filename,
                opts.format,
                opts.fps,
                (w, h),
                scale=opts.scale,
                hold=self.hold,
                crf=opts.crf,
                preset=opts.preset,
                archive=self.run_dir / self.archive if opts.keep_frames else None,
            )
        self._video.add(frame)
        if step != _FINAL:
            self.steps.append(step)

    def _write_index(self) -> None:
        if self._video is None or not self._video.frames_in:
            return
        index = {
            "archive": self.archive,
            "steps": self.steps,
            "final": len(self.steps) < self._video.frames_in,
            "fps": self.options.fps,
            "size": list(self._video.in_size),
        }
        atomic_write_text(self.run_dir / self.index, json.dumps(index))


@hookimpl
def register_outputs(register):  # type: ignore[no-untyped-def]
    register(VideoOutput)
