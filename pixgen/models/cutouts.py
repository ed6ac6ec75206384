"""Batched cutouts: many random crops of one image, resized and augmented in a few calls.

CLIP sees a fixed input size (224 px for ViT-B-32), so each step cuts the image into N
random square crops (sizes drawn as in VQGAN+CLIP's ``MakeCutouts``: ``rand ** cut_pow``
between the model's input size and the image's short side), resizes them to the model's
input size and augments them. Everything is batched:

1. one ``torchvision.ops.roi_align`` call crops and resizes all N boxes (its adaptive
   sampling averages several samples per output pixel, so large crops do not alias);
2. one ``grid_sample`` call applies flip, rotation, translation and perspective, each
   cutout's geometry composed into a single 3x3 matrix;
3. colour jitter (a 3x3 colour matrix per cutout) and noise are element-wise.

All random numbers come from torch's generator on the image's device, so a run seeded
with ``torch.manual_seed`` cuts the same crops every time, and nothing here waits for the
GPU (no ``.item()``, no host-to-device copies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

if TYPE_CHECKING:
    from pixgen.context import RunContext

AUGMENTATIONS = ("flip", "affine", "perspective", "jitter", "noise")
"""Names of the augmentations :class:`CutoutSettings` can switch on."""


@dataclass(frozen=True)
class CutoutSettings:
    """How cutouts are drawn and augmented (hashable: part of the per-step cache key)."""

    cut_pow: float = 1.0  # >1 favours small crops, <1 large ones
    augment: tuple[str, ...] = AUGMENTATIONS
    p: float = 0.7  # chance each augmentation (except flip: 0.5) touches a cutout
    degrees: float = 15.0  # affine: rotation up to ± this
    translate: float = 0.1  # affine: shift up to ± this share of the cutout
    perspective: float = 0.2  # perspective: tilt strength
    hue: float = 0.05  # jitter: hue turn up to ± this share of a full turn
    saturation: float = 0.1  # jitter: saturation factor 1 ± this
    brightness: float = 0.05  # jitter: added brightness up to ± this
    noise: float = 0.1  # noise: Gaussian noise with std up to this (VQGAN+CLIP's noise_fac)


def crop_boxes(
    height: int,
    width: int,
    cut_size: int,
    n: int,
    cut_pow: float,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``[n, 5]`` roi boxes ``(0, x1, y1, x2, y2)`` of random square crops, as MakeCutouts."""
    short = min(height, width)
    min_size = min(short, cut_size)
    r = torch.rand(n, 3, device=device, dtype=torch.float32)
    sizes = r[:, 0].pow(cut_pow) * (short - min_size) + min_size
    x1 = r[:, 1] * (width - sizes)
    y1 = r[:, 2] * (height - sizes)
    zeros = torch.zeros_like(sizes)
    return torch.stack([zeros, x1, y1, x1 + sizes, y1 + sizes], dim=1).to(dtype)


def _geometry(n: int, s: CutoutSettings, device: torch.device) -> torch.Tensor | None:
    """Per-cutout 3x3 matrices mapping output to input coordinates ([-1, 1] space)."""
    on = set(s.augment)
    if not on & {"flip", "affine", "perspective"}:
        return None
    r = torch.rand(n, 8, device=device)
    m = torch.eye(3, device=device).repeat(n, 1, 1)
    if "flip" in on:
        m[:, 0, 0] = torch.where(r[:, 0] < 0.5, -1.0, 1.0)
    if "affine" in on:
        use = (r[:, 1] < s.p).float()
        angle = (r[:, 2] * 2 - 1) * math.radians(s.degrees) * use
        cos, sin = angle.cos(), angle.sin()
        rot = torch.zeros(n, 3, 3, device=device)
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = cos, -sin, sin, cos
        rot[:, 0, 2] = (r[:, 3] * 2 - 1) * 2 * s.translate * use  # [-1, 1] spans 2 units
        rot[:, 1, 2] = (r[:, 4] * 2 - 1) * 2 * s.translate * use
        rot[:, 2, 2] = 1.0
        m = rot @ m
    if "perspective" in on:
        use = (r[:, 5] < s.p).float()
        tilt = torch.eye(3, device=device).repeat(n, 1, 1)
        tilt[:, 2, 0] = (r[:, 6] * 2 - 1) * s.perspective * use
        tilt[:, 2, 1] = (r[:, 7] * 2 - 1) * s.perspective * use
        m = tilt @ m
    return m


_GRIDS: dict[tuple[int, int, torch.device], torch.Tensor] = {}


def _base_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Pixel centres of an ``h`` x ``w`` output in [-1, 1], homogeneous: ``[1, h*w, 3]``."""
    key = (h, w, device)
    if key not in _GRIDS:
        ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=device)
        xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=device)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        _GRIDS[key] = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(1, h * w, 3)
    return _GRIDS[key]


def _warp(cutouts: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Resample every cutout through its own 3x3 matrix in one ``grid_sample`` call."""
    n, _, h, w = cutouts.shape
    points = _base_grid(h, w, cutouts.device) @ matrices.transpose(1, 2)  # [n, h*w, 3]
    grid = points[..., :2] / points[..., 2:].clamp_min(1e-3)
    grid = grid.reshape(n, h, w, 2).to(cutouts.dtype)
    return F.grid_sample(cutouts, grid, mode="bilinear", padding_mode="border", align_corners=False)


_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_DEVICE_CONSTANTS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _yiq(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB->YIQ and back on ``device``, copied there once (a copy per step would sync)."""
    if device not in _DEVICE_CONSTANTS:
        _DEVICE_CONSTANTS[device] = (_YIQ.to(device), torch.linalg.inv(_YIQ).to(device))
    return _DEVICE_CONSTANTS[device]


def _colour(cutouts: torch.Tensor, s: CutoutSettings) -> torch.Tensor:
    """Hue turn, saturation and brightness as one colour matrix plus offset per cutout."""
    n = cutouts.shape[0]
    device = cutouts.device
    r = torch.rand(n, 4, device=device)
    use = (r[:, 0] < s.p).float()
    angle = (r[:, 1] * 2 - 1) * (2 * math.pi * s.hue) * use
    sat = 1 + (r[:, 2] * 2 - 1) * s.saturation * use
    # In YIQ, hue is a rotation of the (I, Q) plane and saturation its scale.
    yiq, inv = _yiq(device)
    mid = torch.zeros(n, 3, 3, device=device)
    mid[:, 0, 0] = 1.0
    mid[:, 1, 1], mid[:, 1, 2] = angle.cos() * sat, -angle.sin() * sat
    mid[:, 2, 1], mid[:, 2, 2] = angle.sin() * sat, angle.cos() * sat
    matrix = (inv @ mid @ yiq).to(cutouts.dtype)  # [n, 3, 3]
    offset = ((r[:, 3] * 2 - 1) * s.brightness * use).to(cutouts.dtype).view(n, 1, 1, 1)
    out = torch.einsum("nij,njhw->nihw", matrix, cutouts) + offset
    return out.clamp(0, 1)


def make_cutouts(
    image: torch.Tensor,
    size: int | tuple[int, int],
    n: int,
    settings: CutoutSettings = CutoutSettings(),
) -> torch.Tensor:
    """``n`` augmented random crops of ``image`` ([1, 3, H, W]) as ``[n, 3, h, w]`` in [0, 1]."""
    out_h, out_w = (size, size) if isinstance(size, int) else size
    _, _, height, width = image.shape
    boxes = crop_boxes(
        height, width, max(out_h, out_w), n, settings.cut_pow, image.device, image.dtype
    )
    # aligned=True: box edges are pixel edges, so (0, 0, W, H) is exactly the whole image.
    cutouts = roi_align(
        image[:1],
        boxes,
        output_size=(out_h, out_w),
        spatial_scale=1.0,
        sampling_ratio=-1,
        aligned=True,
    )
    matrices = _geometry(n, settings, image.device)
    if matrices is not None:
        cutouts = _warp(cutouts, matrices)
    if "jitter" in settings.augment:
        cutouts = _colour(cutouts, settings)
    if "noise" in settings.augment and settings.noise > 0:
        facs = torch.rand(n, 1, 1, 1, device=image.device, dtype=cutouts.dtype) * settings.noise
        cutouts = cutouts + facs * torch.randn_like(cutouts)
    return cutouts


def cutouts_for(
    ctx: RunContext,
    image: torch.Tensor,
    size: int | tuple[int, int],
    n: int,
    settings: CutoutSettings = CutoutSettings(),
) -> torch.Tensor:
    """This step's cutouts of ``image``, shared by every loss asking with the same settings."""
    key = ("cutouts", size if isinstance(size, int) else tuple(size), n, settings)
    return ctx.per_step(key, lambda: make_cutouts(image, size, n, settings))
