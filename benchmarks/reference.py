"""THE REFERENCE: the canonical VQGAN+CLIP step, written plainly as the notebooks do it.

This file is deliberately *not* pixgen: a Python loop of 32 crops with adaptive average
pooling, taming's decoder and open_clip's ``encode_image`` called directly, Adam on z,
the spherical-distance prompt loss, z clamped to the codebook's range. The benchmark
runs it beside the pixgen engine on the same card, settings and random weights.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# taming's vqgan_imagenet_f16_16384 model.yaml (ddconfig), as published.
F16_16384_DDCONFIG: dict[str, Any] = {
    "double_z": False,
    "z_channels": 256,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 1, 2, 2, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [16],
    "dropout": 0.0,
}
F16_16384_EMBED = {"n_embed": 16384, "embed_dim": 256}


class ReplaceGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x_forward: torch.Tensor, x_backward: torch.Tensor) -> torch.Tensor:
        ctx.shape = x_backward.shape
        return x_forward

    @staticmethod
    def backward(ctx: Any, grad_in: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, grad_in.sum_to_size(ctx.shape)


class ClampWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx: Any, grad_in: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        return grad_in * (grad_in * (x - x.clamp(ctx.lo, ctx.hi)) >= 0), None, None


def vector_quantize(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    d = x.pow(2).sum(dim=-1, keepdim=True) + codebook.pow(2).sum(dim=1) - 2 * x @ codebook.T
    indices = d.argmin(-1)
    x_q = F.one_hot(indices, codebook.shape[0]).to(d.dtype) @ codebook
    return ReplaceGrad.apply(x_q, x)


class MakeCutouts(nn.Module):
    """The notebooks' cutouts: a Python loop of random square crops, each pooled."""

    def __init__(self, cut_size: int, cutn: int, cut_pow: float = 1.0):
        super().__init__()
        self.cut_size, self.cutn, self.cut_pow = cut_size, cutn, cut_pow
        self.boxes: list[tuple[int, int, int]] | None = None  # (x, y, size), for tests

    def sample_boxes(self, side_x: int, side_y: int) -> list[tuple[int, int, int]]:
        max_size = min(side_x, side_y)
        min_size = min(side_x, side_y, self.cut_size)
        boxes = []
        for _ in range(self.cutn):
            size = int(torch.rand([]) ** self.cut_pow * (max_size - min_size) + min_size)
            offset_x = int(torch.randint(0, side_x - size + 1, ()))
            offset_y = int(torch.randint(0, side_y - size + 1, ()))
            boxes.append((offset_x, offset_y, size))
        return boxes

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        side_y, side_x = image.shape[2:4]
        boxes = self.boxes or self.sample_boxes(side_x, side_y)
        cutouts = [
            F.adaptive_avg_pool2d(image[:, :, y : y + s, x : x + s], self.cut_size)
            for x, y, s in boxes
        ]
        return ClampWithGrad.apply(torch.cat(cutouts, dim=0), 0, 1)


def spherical_distance(image_embeds: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
    a = F.normalize(image_embeds.unsqueeze(1), dim=2)
    b = F.normalize(text_embed.unsqueeze(0), dim=2)
    return a.sub(b).norm(dim=2).div(2).arcsin().pow(2).mul(2)


class ReferenceStep:
    """One canonical VQGAN+CLIP optimisation step (``step()``), fp32 or bf16 autocast."""

    def __init__(
        self,
        decoder: nn.Module,
        post_quant_conv: nn.Module,
        codebook: torch.Tensor,
        clip_model: nn.Module,
        text_embed: torch.Tensor,
        z: torch.Tensor,
        *,
        cut_size: int = 224,
        cutn: int = 32,
        cut_pow: float = 1.0,
        lr: float = 0.1,
        precision: str = "fp32",
    ):
        self.decoder, self.post_quant_conv = decoder, post_quant_conv
        self.codebook = codebook
        self.clip_model = clip_model
        self.text_embed = text_embed
        self.z = z.detach().clone().requires_grad_(True)
        self.z_min = codebook.min(dim=0).values[None, :, None, None]
        self.z_max = codebook.max(dim=0).values[None, :, None, None]
        self.make_cutouts = MakeCutouts(cut_size, cutn, cut_pow)
        self.optimizer = torch.optim.Adam([self.z], lr=lr)
        self.precision = precision
        device = z.device
        self.mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(self.z.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def synth(self) -> torch.Tensor:
        z_q = vector_quantize(self.z.movedim(1, 3), self.codebook).movedim(3, 1)
        return ClampWithGrad.apply(self.decoder(self.post_quant_conv(z_q)).add(1).div(2), 0, 1)

    def loss(self) -> torch.Tensor:
        with self.autocast():
            image = self.synth()
            cutouts = self.make_cutouts(image)
            embeds = self.clip_model.encode_image((cutouts - self.mean) / self.std).float()
            return spherical_distance(embeds, self.text_embed.float()).mean()

    def step(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.z.copy_(self.z.maximum(self.z_min).minimum(self.z_max))
        return loss.detach()
