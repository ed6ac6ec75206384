"""Generator ``image``: free RGB pixels, by default in a decorrelated Fourier space.

Why Fourier by default: with plain per-pixel parameters, gradients from a perceptual
loss such as CLIP land mostly on high frequencies and the image fills with adversarial
noise; parameterising the image by its spectrum, scaled by 1/frequency, and its colours
in a decorrelated basis (Olah et al., "Feature Visualization", Distill 2017; used by
Lucid and CLIPDraw-era tools) spreads each update over the whole image, so coarse
structure appears first. The spectrum spans a canvas twice the picture's size and the
picture is one quarter of it: a spectrum alone describes a picture that wraps around, and
a prompt "at the left" would then paint the right edge too (``periodic: true`` keeps
Lucid's wrapping picture). ``param: pixels`` (sigmoid of free logits) converges faster on
pure pixel losses such as ``target_image``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from pixgen.context import RunContext
from pixgen.fileio import load_image
from pixgen.hookspecs import hookimpl
from pixgen.options import InputFile, PluginOptions
from pixgen.plugin import Generator
from pixgen.spectrum import spectrum_scale

# Square root of the colour correlation of natural images (Lucid's ImageNet estimate).
_COLOUR_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)
_COLOUR_SQRT = _COLOUR_SQRT / _COLOUR_SQRT.norm(dim=0).max()


class ImageGenerator(Generator):
    """Free RGB pixels, parameterised in a decorrelated Fourier space (or plain pixels)."""

    name = "image"

    class Options(PluginOptions):
        param: Literal["fft", "pixels"] = Field(
            "fft", description="fft: decorrelated spectrum (best with CLIP); pixels: sigmoid logits"
        )
        decay: float = Field(1.0, ge=0, le=3, description="fft: spectrum scaling 1/f^decay")
        periodic: bool = Field(
            False,
            description="fft: true lets the picture wrap around (its left edge continues "
            "its right edge, its top its bottom, as in Lucid); false paints on a canvas twice "
            "the size and keeps one quarter, so opposite edges are independent (its steps move "
            "pixels further at the same lr)",
        )
        init_image: InputFile | None = Field(None, description="start from this image")
        init_noise: float = Field(0.01, ge=0, description="spread of the random start")

    options: Options

    def __init__(self, options: Options, ctx: RunContext):
        super().__init__(options, ctx)
        h, w = ctx.height, ctx.width
        self.register_buffer("colour", _COLOUR_SQRT.to(ctx.device))
        # The Fourier canvas: the picture's size, or twice it when not periodic.
        factor = 1 if options.periodic else 2
        self.canvas = (h * factor, w * factor)
        if options.param == "fft":
            ch, cw = self.canvas
            scale = spectrum_scale(ch, cw, options.decay)
            # Sized so that the recipe-level default lr (0.1) moves pixels at a useful pace.
            scale = scale / scale.max() * (ch * cw) ** 0.5 * 0.75
            self.register_buffer("scale", scale.to(ctx.device))
            spectrum = torch.randn(1, 3, ch, cw // 2 + 1, 2) * options.init_noise
            self.spectrum = torch.nn.Parameter(spectrum.to(ctx.device))
        else:
            logits = torch.randn(1, 3, h, w) * options.init_noise
            self.logits = torch.nn.Parameter(logits.to(ctx.device))
        if options.init_image is not None:
            self.init_from_image(load_image(options.init_image, (w, h)).to(ctx.device))

    def _decorrelated(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum.float()) * self.scale
        x = torch.fft.irfft2(spec, s=self.canvas, norm="ortho")
        return x[..., : self.ctx.height, : self.ctx.width]

    def forward(self) -> torch.Tensor:
        if self.options.param == "pixels":
            return torch.sigmoid(self.logits)
        x = self._decorrelated()
        x = torch.einsum("bchw,dc->bdhw", x, self.colour)
        return torch.sigmoid(x)

    @torch.no_grad()
    def init_from_image(self, image: torch.Tensor) -> None:
        image = image.float()
        if image.shape[-2:] != (self.ctx.height, self.ctx.width):
            image = torch.nn.functional.interpolate(
                image, size=(self.ctx.height, self.ctx.width), mode="bilinear", antialias=True
            )
        logits = torch.logit(image.clamp(0.01, 0.99))
        if self.options.param == "pixels":
            self.logits.copy_(logits)
            return
        decorrelated = torch.einsum("bdhw,dc->bchw", logits, torch.linalg.inv(self.colour).T)
        if not self.options.periodic:
            # Mirror to the doubled canvas: its kept quarter is then exactly the image.
            decorrelated = torch.cat([decorrelated, decorrelated.flip(-1)], dim=-1)
            decorrelated = torch.cat([decorrelated, decorrelated.flip(-2)], dim=-2)
        spec = torch.fft.rfft2(decorrelated, norm="ortho") / self.scale
        self.spectrum.copy_(torch.view_as_real(spec))


@hookimpl
def register_generators(register):  # type: ignore[no-untyped-def]
    register(ImageGenerator)
