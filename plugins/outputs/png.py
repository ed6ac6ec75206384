"""Output ``png``: a still every N steps (``steps/000050.png`` …)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from pydantic import Field, field_validator

from pixgen.context import RunContext
from pixgen.fileio import numbered_stills, save_png, still_name
from pixgen.frames import FrameWriter
from pixgen.hookspecs import hookimpl
from pixgen.options import PlainName, PluginOptions
from pixgen.plugin import Output
from pixgen.steps import StepInterval, resolve_interval


class PngOutput(Output):
    """PNG stills every N steps in the run folder's ``steps/`` (``final.png`` is always written)."""

    name = "png"

    class Options(PluginOptions):
        every: StepInterval = Field(50, description="steps between stills (a count or a share like '10%')")
        folder: PlainName = Field(
            "steps",
            description="sub-folder of the run folder for the stills (a plain name)",
        )
        first: bool = Field(True, description="also save the starting image (step 0)")

    options: Options

    def __init__(self, options: Options, ctx: RunContext):
        super().__init__(options, ctx)
        self.every = resolve_interval(options.every, ctx.steps)
        self.files: list[str] = []
        self._writer: FrameWriter | None = None

    def on_start(self, ctx: RunContext) -> None:
        assert ctx.run_dir is not None
        folder = ctx.run_dir / self.options.folder
        folder.mkdir(parents=True, exist_ok=True)
        if ctx.start_step > 0:  # a resumed run: the stills before it are the run's too
            self.files = [
                f"{self.options.folder}/{path.name}"
                for step, path in numbered_stills(folder)
                if step < ctx.start_step
            ]

        def write(step: int, frame: np.ndarray) -> None:
            name = still_name(step)
            save_png(folder / name, Image.fromarray(frame), {"pixgen:step": str(step)})
            self.files.append(f"{self.options.folder}/{name}")

        self._writer = FrameWriter(write, max_queue=4, policy="wait", name="pixgen-png")

    def wants(self, step: int) -> bool:
        if step == 0:
            return self.options.first
        return step % self.every == 0

    def on_step(self, ctx: RunContext, step: int, image: torch.Tensor) -> None:
        assert self._writer is not None
        self._writer.submit(step, image)

    def on_finish(self, ctx: RunContext, image: torch.Tensor | None) -> None:
        if self._writer is not None:
            self._writer.close()

    def writes(self) -> list[str]:
        return [self.options.folder]

    def summary(self) -> dict[str, Any]:
        return {"stills": len(self.files), "folder": self.options.folder}


@hookimpl
def register_outputs(register):  # type: ignore[no-untyped-def]
    register(PngOutput)
