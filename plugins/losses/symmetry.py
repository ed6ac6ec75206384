"""Loss ``symmetry``: the difference between the image and its mirror image."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from pixgen.context import RunContext
from pixgen.hookspecs import hookimpl
from pixgen.options import PluginOptions
from pixgen.plugin import Loss

Axis = Literal["left_right", "top_bottom", "both", "rotate_180"]

# Which dimensions of [B, 3, H, W] to flip for each kind of symmetry.
_FLIPS: dict[str, list[list[int]]] = {
    "left_right": [[3]],
    "top_bottom": [[2]],
    "both": [[3], [2]],
    "rotate_180": [[2, 3]],  # point symmetry: both flips at once
}


def asymmetry(image: torch.Tensor, axis: str) -> torch.Tensor:
    """Mean squared difference between ``image`` and its mirror image(s)."""
    terms = [F.mse_loss(image, image.flip(dims)) for dims in _FLIPS[axis]]
    return torch.stack(terms).mean()


class SymmetryLoss(Loss):
    """Make the picture symmetric: left-right, top-bottom, both, or under a half turn.

    Left-right suits faces and butterflies, top-bottom a reflection in water."""

    name = "symmetry"

    class Options(PluginOptions):
        axis: Axis = Field(
            "left_right",
            description="left_right (mirror across the vertical centre line) | top_bottom | "
            "both | rotate_180 (the same after a half turn)",
        )

    options: Options

    def __call__(self, image: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        return asymmetry(image.float(), self.options.axis)


@hookimpl
def register_losses(register):  # type: ignore[no-untyped-def]
    register(SymmetryLoss)
