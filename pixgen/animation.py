"""Zoom/pan/rotate animation: every N steps the current image is transformed and fed back.

Like VQGAN+CLIP's zoom videos: the generator re-starts from a slightly zoomed, rotated or
shifted copy of its own image, so with a ``video`` output recording every step the run
becomes an endless zoom or pan. Works with any generator that implements
``init_from_image`` (``pixel``, ``image``, ``vqgan``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pixgen.schema import AnimationConfig
from pixgen.steps import ScheduleFn, resolve_interval


def transform_image(
    image: torch.Tensor, zoom: float, degrees: float, dx: float, dy: float
) -> torch.Tensor:
    """Zoom about the centre, rotate, then shift ``image`` ([B,3,H,W]); edges reflect."""
    _, _, h, w = image.shape
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    # affine_grid maps output to input coordinates in [-1, 1]; account for the aspect.
    theta = (
        torch.tensor(
            [[cos, -sin * h / w, -2 * dx / w], [sin * w / h, cos, -2 * dy / h]],
            dtype=torch.float32,
            device=image.device,
        )
        .unsqueeze(0)
        .expand(image.shape[0], 2, 3)
    )
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(
        image.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


class Animator:
    """Decides when to transform and by how much, step by step."""

    def __init__(self, config: AnimationConfig, total_steps: int):
        self.config = config
        self.every = resolve_interval(config.every, total_steps)
        self.zoom = ScheduleFn(config.zoom, total_steps)
        self.rotate = ScheduleFn(config.rotate, total_steps)
        self.dx = ScheduleFn(config.translate_x, total_steps)
        self.dy = ScheduleFn(config.translate_y, total_steps)
        self.transforms = 0

    def due(self, step: int) -> bool:
        return step > 0 and step % self.every == 0

    def apply(self, image: torch.Tensor, step: int) -> torch.Tensor:
        self.transforms += 1
        return transform_image(
            image, self.zoom(step), self.rotate(step), self.dx(step), self.dy(step)
        )
