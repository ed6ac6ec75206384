"""The VQGAN network (taming's modules, Lightning-free), latent snapping and valid sizes."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import torch
from torch import nn

from pixgen.errors import RecipeError
from pixgen.models.vqgan.config import VQGANConfig


class VQGAN(nn.Module):
    """taming's VQModel/GumbelVQ without Lightning or training losses (same state_dict keys)."""

    def __init__(self, config: VQGANConfig, *, encoder: bool = True):
        super().__init__()
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import GumbelQuantize, VectorQuantizer2

        self.config = config
        dd = dict(config.ddconfig)
        z_channels = dd["z_channels"]
        with contextlib.redirect_stdout(io.StringIO()):  # taming's Decoder prints z's shape
            self.encoder = Encoder(**dd) if encoder else None
            self.decoder = Decoder(**dd)
        if config.gumbel:
            self.quantize: nn.Module = GumbelQuantize(
                z_channels, config.embed_dim, n_embed=config.n_embed, kl_weight=1e-8
            )
        else:
            self.quantize = VectorQuantizer2(config.n_embed, config.embed_dim, beta=0.25)
        self.quant_conv = nn.Conv2d(z_channels, config.embed_dim, 1) if encoder else None
        self.post_quant_conv = nn.Conv2d(config.embed_dim, z_channels, 1)

    @property
    def factor(self) -> int:
        return self.config.factor

    @property
    def codebook(self) -> torch.Tensor:
        """``[n_embed, embed_dim]``; for Gumbel models ``quantize.embed``, as VQGAN+CLIP does."""
        if self.config.gumbel:
            return self.quantize.embed.weight  # type: ignore[union-attr]
        return self.quantize.embedding.weight  # type: ignore[union-attr]

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantized latents ``[B, embed_dim, h, w]`` -> image ``[B, 3, H, W]`` in about [-1, 1]."""
        return self.decoder(self.post_quant_conv(z_q))

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image ``[B, 3, H, W]`` in [0, 1] -> nearest-code latents ``[B, embed_dim, h, w]``."""
        if self.encoder is None or self.quant_conv is None:
            raise RuntimeError("this VQGAN was built without its encoder")
        h = self.quant_conv(self.encoder(image.mul(2).sub(1)))
        if self.config.gumbel:
            # Deterministic: the most likely code, where taming samples with Gumbel noise.
            index = self.quantize.proj(h).argmax(1)  # type: ignore[operator]
            return self.codebook[index].permute(0, 3, 1, 2).contiguous()
        return vector_quantize(h, self.codebook)


def build_vqgan(
    config: VQGANConfig,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    encoder: bool = True,
) -> VQGAN:
    """The network with random weights, built on ``device`` (``"meta"`` allocates nothing)."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = VQGAN(config, encoder=encoder)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval().requires_grad_(False)


# -- latents --------------------------------------------------------------------------


def vector_quantize(
    z: torch.Tensor, codebook: torch.Tensor, codebook_sq: torch.Tensor | None = None
) -> torch.Tensor:
    """Snap ``[B, C, h, w]`` latents to their nearest codebook rows; straight-through gradient."""
    with torch.autocast(z.device.type, enabled=False):  # bf16 distances would pick wrong codes
        x = z.movedim(1, 3).float()
        book = codebook.float()
        sq = book.pow(2).sum(1) if codebook_sq is None else codebook_sq
        # |x|^2 is the same for every code, so it does not change the argmin.
        index = (sq - 2 * x @ book.T).argmin(-1)
        x_q = book[index]
        return (x + (x_q - x).detach()).movedim(3, 1)


class _ClampWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        # Pass the gradient where it moves an out-of-range value back towards the range.
        return grad * (grad * (x - x.clamp(ctx.lo, ctx.hi)) >= 0), None, None


def clamp_with_grad(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Clamp whose gradient does not vanish outside the range (as in VQGAN+CLIP)."""
    return _ClampWithGrad.apply(x, lo, hi)


def nearest_valid_sizes(width: int, height: int, factor: int) -> list[tuple[int, int]]:
    """The sizes closest to ``width``×``height`` that are multiples of ``factor``, nearest first."""

    def options(n: int) -> list[int]:
        lo = n // factor * factor
        return [n] if lo == n else [v for v in (lo, lo + factor) if v > 0]

    sizes = [(w, h) for w in options(width) for h in options(height)]
    return sorted(sizes, key=lambda s: (abs(s[0] - width) + abs(s[1] - height), s))


def check_size(width: int, height: int, factor: int, model: str) -> None:
    """Refuse an output size the model cannot render, naming the nearest valid sizes."""
    if width % factor == 0 and height % factor == 0:
        return
    sizes = nearest_valid_sizes(width, height, factor)
    listed = ", ".join(f"[{w}, {h}]" for w, h in sizes)
    raise RecipeError(
        f"size [{width}, {height}] does not suit VQGAN {model}: width and height must be "
        f"multiples of {factor}, its downsampling factor. Nearest valid sizes: {listed} "
        f"(e.g. `size: [{sizes[0][0]}, {sizes[0][1]}]`)."
    )
