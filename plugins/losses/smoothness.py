"""Loss ``smoothness``: total variation of the image."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from pixgen.context import RunContext
from pixgen.hookspecs import hookimpl
from pixgen.options import PluginOptions
from pixgen.plugin import Loss


def total_variation(image: torch.Tensor, norm: str = "l1") -> torch.Tensor:
    """Mean absolute (l1) or squared (l2) difference between neighbouring pixels."""
    dy = image[..., 1:, :] - image[..., :-1, :]
    dx = image[..., :, 1:] - image[..., :, :-1]
    if norm == "l2":
        return dy.pow(2).mean() + dx.pow(2).mean()
    return dy.abs().mean() + dx.abs().mean()


class SmoothnessLoss(Loss):
    """Total variation: penalises differences between neighbouring pixels."""

    name = "smoothness"

    class Options(PluginOptions):
        norm: Literal["l1", "l2"] = Field("l1", description="l1: absolute differences; l2: squared")

    options: Options

    def __call__(self, image: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        return total_variation(image.float(), self.options.norm)


@hookimpl
def register_losses(register):  # type: ignore[no-untyped-def]
    register(SmoothnessLoss)
