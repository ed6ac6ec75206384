"""Loss ``target_image``: pixel distance from a given image (no model weights needed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from pixgen.context import RunContext
from pixgen.fileio import load_image
from pixgen.hookspecs import hookimpl
from pixgen.options import InputFile, PluginOptions
from pixgen.plugin import Loss


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding; identity for ``sigma <= 0``."""
    if sigma <= 0:
        return image
    radius = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = image.shape[1]
    pad = min(radius, image.shape[-1] - 1, image.shape[-2] - 1)
    out = F.pad(image, (pad, pad, pad, pad), mode="reflect" if pad > 0 else "constant")
    kx = kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    ky = kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    out = F.conv2d(out, kx, groups=c, padding=(0, radius - pad))
    out = F.conv2d(out, ky, groups=c, padding=(radius - pad, 0))
    return out


class TargetImageLoss(Loss):
    """Mean squared distance from a target image (optionally both blurred)."""

    name = "target_image"

    class Options(PluginOptions):
        image: InputFile = Field(description="the target image (resized to the run's size)")
        blur: float = Field(
            0.0, ge=0, le=64, description="Gaussian blur sigma in pixels on both images"
        )

    options: Options

    def __init__(self, options: Options, ctx: RunContext):
        super().__init__(options, ctx)
        target = load_image(options.image, (ctx.width, ctx.height)).to(ctx.device)
        self.target = gaussian_blur(target, options.blur)

    def __call__(self, image: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        return F.mse_loss(gaussian_blur(image.float(), self.options.blur), self.target)


@hookimpl
def register_losses(register):  # type: ignore[no-untyped-def]
    register(TargetImageLoss)
