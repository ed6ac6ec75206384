"""Generator ``pixel``: a low-resolution grid of colour cells, upscaled nearest-neighbour."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from pixgen.colours import Palette, palette_tensor
from pixgen.context import RunContext
from pixgen.fileio import load_image
from pixgen.hookspecs import hookimpl
from pixgen.options import InputFile, PluginOptions
from pixgen.plugin import Generator


class PixelGenerator(Generator):
    """Pixel art: a grid of colour cells (optionally from a fixed palette), upscaled."""

    name = "pixel"

    class Options(PluginOptions):
        cells: tuple[int, int] | None = Field(
            None,
            description="cells across and down; default 80 across, down from the aspect ratio",
        )
        palette: Palette | None = Field(
            None,
            description='hex colours the cells must use, in quotes ("#1a1c2c": a bare # starts '
            "a YAML comment); enforced by a soft assignment that hardens over the run (the "
            "final image uses only these colours)",
        )
        temperature: tuple[float, float] = Field(
            (0.1, 0.002),
            description="softness of the palette assignment at the start and the end of the run",
        )
        hard_from: float = Field(
            1.0,
            ge=0,
            le=1,
            description="share of the run after which the loss sees palette colours only "
            "(straight-through gradients); 1.0 = only the final image",
        )
        init_image: InputFile | None = Field(None, description="start from this image")
        init_noise: float = Field(1.0, ge=0, description="spread of the random start (logits)")

        @field_validator("palette")
        @classmethod
        def _two_colours(cls, value: list[str] | None) -> list[str] | None:
            if value is not None and len(value) < 2:
                raise ValueError("a palette needs at least 2 colours")
            return value

        @field_validator("cells")
        @classmethod
        def _check_cells(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
            if value is not None and (min(value) < 1 or max(value) > 4096):
                raise ValueError("cells must be between 1 and 4096 each way")
            return value

        @field_validator("temperature")
        @classmethod
        def _check_temperature(cls, value: tuple[float, float]) -> tuple[float, float]:
            if min(value) <= 0:
                raise ValueError("temperatures must be positive")
            return value

    options: Options

    def __init__(self, options: Options, ctx: RunContext):
        super().__init__(options, ctx)
        if options.cells is not None:
            across, down = options.cells
        else:
            across = min(80, ctx.width)
            down = max(1, round(across * ctx.height / ctx.width))
        self.cells = (across, down)
        if options.palette:
            self.register_buffer("palette", palette_tensor(options.palette, ctx.device))  # [K, 3]
        else:
            self.palette = None
        logits = torch.randn(1, 3, down, across) * options.init_noise
        self.logits = torch.nn.Parameter(logits.to(ctx.device))
        if options.init_image is not None:
            self.init_from_image(load_image(options.init_image).to(ctx.device))

    def _temperature(self) -> float:
        start, end = self.options.temperature
        return start * (end / start) ** self.ctx.progress  # geometric: even hardening

    def cell_colours(self) -> torch.Tensor:
        """The cells' colours, ``[1, 3, down, across]`` in [0, 1]."""
        free = torch.sigmoid(self.logits)
        if self.palette is None:
            return free
        palette = self.palette.to(free.dtype)
        # Soft assignment of each cell's free colour to the palette: a softmax over
        # negative squared distances whose temperature falls over the run, so colours
        # slide continuously and end on their nearest palette colour.
        distance = ((free[:, None] - palette[None, :, :, None, None]) ** 2).sum(2)
        hard = palette[distance.argmin(dim=1)].permute(0, 3, 1, 2)
        progress = self.ctx.progress
        if progress >= 1.0:  # the final image: palette colours only
            return hard
        weights = torch.softmax(-distance / self._temperature(), dim=1)
        soft = torch.einsum("bkhw,kc->bchw", weights, palette)
        if progress >= self.options.hard_from:
            # Straight-through: the loss sees the palette-only image while gradients
            # flow through the soft assignment.
            return hard + soft - soft.detach()
        return soft

    def forward(self) -> torch.Tensor:
        colours = self.cell_colours()
        return F.interpolate(colours, size=(self.ctx.height, self.ctx.width), mode="nearest")

    @torch.no_grad()
    def init_from_image(self, image: torch.Tensor) -> None:
        across, down = self.cells
        small = F.interpolate(image.float(), size=(down, across), mode="area")
        self.logits.copy_(torch.logit(small.clamp(0.02, 0.98)))


@hookimpl
def register_generators(register):  # type: ignore[no-untyped-def]
    register(PixelGenerator)
