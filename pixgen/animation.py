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
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pixgen.steps import Schedule, ScheduleFn, StepInterval, resolve_interval


class AnimationConfig(BaseModel):
    """The recipe's ``animation:`` section."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    every: StepInterval = Field(10, description="steps between transforms")
    zoom: Schedule = Field(1.0, description="scale per transform (>1 zooms in); number or schedule")
    rotate: Schedule = Field(0.0, description="degrees per transform (counter-clockwise)")
    translate_x: Schedule = Field(0.0, description="pixels per transform, rightwards")
    translate_y: Schedule = Field(0.0, description="pixels per transform, downwards")
    reset_optimizer: bool = Field(
        True, description="forget the optimiser's momentum after each transform"
    )

    @field_validator("zoom")
    @classmethod
    def _positive_zoom(cls, value: float | dict[int | str, float]) -> float | dict:
        values = value.values() if isinstance(value, dict) else [value]
        if any(v <= 0 for v in values):
            raise ValueError("a zoom must be above 0 (1 keeps the size, 0.9 zooms out)")
        return value


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
        self.zoom = ScheduleFn(config.zoom, total_steps)  # type: ignore[arg-type]
        self.rotate = ScheduleFn(config.rotate, total_steps)  # type: ignore[arg-type]
        self.dx = ScheduleFn(config.translate_x, total_steps)  # type: ignore[arg-type]
        self.dy = ScheduleFn(config.translate_y, total_steps)  # type: ignore[arg-type]
        self.transforms = 0

    def due(self, step: int) -> bool:
        return step > 0 and step % self.every == 0

    def apply(self, image: torch.Tensor, step: int) -> torch.Tensor:
        self.transforms += 1
        return transform_image(
            image, self.zoom(step), self.rotate(step), self.dx(step), self.dy(step)
        )
