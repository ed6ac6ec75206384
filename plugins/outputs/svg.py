"""Output ``svg``: the strokes as an SVG file (``final.svg``), and optionally snapshots."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from pydantic import Field, field_validator, model_validator

from pixgen.context import RunContext
from pixgen.errors import RecipeError
from pixgen.fileio import atomic_write_text
from pixgen.hookspecs import hookimpl
from pixgen.options import PlainName, PluginOptions
from pixgen.plugin import Output
from pixgen.steps import StepInterval, resolve_interval


@runtime_checkable
class DrawsSvg(Protocol):
    """A generator that can write its current parameters as an SVG document."""

    def to_svg(self) -> str: ...


class SvgOutput(Output):
    """The strokes as SVG: ``final.svg``, and every N steps in ``svg/`` (needs ``strokes``)."""

    name = "svg"

    class Options(PluginOptions):
        file: PlainName = Field("final.svg", description="file name in the run folder (a plain name)")
        every: StepInterval | None = Field(
            None,
            description="also write svg/000050.svg … every N steps (a count or a share like "
            "'10%'), numbered like png's stills, plus svg/000000.svg at the start; default: "
            "only the final file. Each snapshot waits for the device",
        )
        folder: PlainName = Field(
            "svg", description="sub-folder of the run folder for the snapshots (a plain name)"
        )

        @model_validator(mode="after")
        def _distinct(self) -> SvgOutput.Options:
            if self.every is not None and self.file == self.folder:
                raise ValueError(f"file and folder are both {self.file!r}; name them apart")
            return self

    options: Options

    def __init__(self, options: Options, ctx: RunContext):
        super().__init__(options, ctx)
        generator = ctx.generator
        if not isinstance(generator, DrawsSvg):
            # Refused before the run folder exists: a run without its SVG is not what was asked.
            raise RecipeError(
                "the svg output needs a generator that can draw itself as SVG (strokes); "
                f"generator {ctx.recipe.generator.use!r} cannot"
            )
        self.generator: DrawsSvg = generator
        self.every = resolve_interval(options.every, ctx.steps) if options.every else None
        self.snapshots = 0
        self.written: str | None = None

    def _write(self, ctx: RunContext, name: str) -> bool:
        if ctx.run_dir is None:  # a run that writes no files (write_files=False)
            return False
        atomic_write_text(ctx.run_dir / name, self.generator.to_svg())
        return True

    def on_start(self, ctx: RunContext) -> None:
        if self.every is not None and ctx.run_dir is not None:
            (ctx.run_dir / self.options.folder).mkdir(parents=True, exist_ok=True)
            if ctx.start_step == 0:  # a resumed run's folder has the starting strokes
                self._snapshot(ctx, 0)

    def _snapshot(self, ctx: RunContext, updates: int) -> None:
        if self._write(ctx, f"{self.options.folder}/{updates:06d}.svg"):
            self.snapshots += 1

    def wants(self, step: int) -> bool:
        # on_step comes after the optimiser's step: the strokes have had step + 1 updates,
        # which is what png's still numbered step + 1 shows.
        return self.every is not None and (step + 1) % self.every == 0

    def on_step(self, ctx: RunContext, step: int, image: torch.Tensor) -> None:
        self._snapshot(ctx, step + 1)

    def on_finish(self, ctx: RunContext, image: torch.Tensor | None) -> None:
        # The strokes are the parameters, not the image: even when the final image could
        # not be rendered (image is None), they can still be written.
        if self._write(ctx, self.options.file):
            self.written = self.options.file

    def writes(self) -> list[str]:
        names = [self.options.file]
        if self.every is not None:
            names.append(self.options.folder)
        return names

    def summary(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"file": self.written}
        if self.every is not None:
            facts.update(snapshots=self.snapshots, folder=self.options.folder)
        return facts


@hookimpl
def register_outputs(register):  # type: ignore[no-untyped-def]
    register(SvgOutput)
