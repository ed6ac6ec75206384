"""Loss ``palette``: pull every pixel towards the nearest colour of a palette."""

from __future__ import annotations

import torch
from pydantic import Field

from pixgen.colours import Palette, palette_tensor
from pixgen.context import RunContext
from pixgen.hookspecs import hookimpl
from pixgen.options import PluginOptions
from pixgen.plugin import Loss


def nearest_colour_distance(image: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Mean squared RGB distance from each pixel of ``image`` ([B, 3, H, W]) to the
    nearest of the ``palette`` colours ([K, 3])."""
    pixels = image.permute(0, 2, 3, 1).reshape(-1, 3)
    # |x - p|² = |x|² - 2 x·p + |p|², without a [pixels, K, 3] temporary.
    distance = pixels.pow(2).sum(1, keepdim=True) - 2 * pixels @ palette.T + palette.pow(2).sum(1)
    return distance.min(dim=1).values.clamp_min(0).mean()


class PaletteLoss(Loss):
    """Pull each pixel towards the nearest of a list of colours (any generator).

    A softer limit than the pixel generator's fixed palette: colours in between stay
    possible where the other losses pull hard enough."""

    name = "palette"

    class Options(PluginOptions):
        colours: Palette = Field(
            description='hex colours, in quotes ("#1a1c2c": a bare # starts a YAML comment)'
        )

    options: Options

    def __init__(self, options: Options, ctx: RunContext):
        super().__init__(options, ctx)
        self.palette = palette_tensor(options.colours, ctx.device)

    def __call__(self, image: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        return nearest_colour_distance(image.float(), self.palette)


@hookimpl
def register_losses(register):  # type: ignore[no-untyped-def]
    register(PaletteLoss)
