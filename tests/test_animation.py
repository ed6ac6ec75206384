"""Zoom/pan/rotate animation fed back into the generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import pixgen
import pixgen.fileio
from pixgen.animation import transform_image
from pixgen.errors import RecipeError


def _dot_image(x: int, y: int, size: int = 33) -> torch.Tensor:
    image = torch.zeros(1, 3, size, size)
    image[:, :, y - 1 : y + 2, x - 1 : x + 2] = 1.0
    return image


def _centre_of_mass(image: torch.Tensor) -> tuple[float, float]:
    weights = image[0].mean(0)
    ys, xs = torch.meshgrid(
        torch.arange(weights.shape[0]), torch.arange(weights.shape[1]), indexing="ij"
    )
    total = weights.sum()
    return float((xs * weights).sum() / total), float((ys * weights).sum() / total)


def test_translate_moves_content_right_and_down() -> None:
    moved = transform_image(_dot_image(16, 16), 1.0, 0.0, 5.0, 3.0)
    x, y = _centre_of_mass(moved)
    assert x == pytest.approx(21, abs=0.3) and y == pytest.approx(19, abs=0.3)


def test_zoom_pushes_content_away_from_the_centre() -> None:
    moved = transform_image(_dot_image(20, 16), 2.0, 0.0, 0.0, 0.0)
    x, _ = _centre_of_mass(moved)
    assert x == pytest.approx(16 + 2 * 4, abs=0.6)


def test_rotate_is_counter_clockwise() -> None:
    moved = transform_image(_dot_image(26, 16), 1.0, 90.0, 0.0, 0.0)
    x, y = _centre_of_mass(moved)
    assert x == pytest.approx(16, abs=0.6) and y == pytest.approx(6, abs=0.6)  # right -> top


def test_zoom_animation_in_a_run(basic_recipe: dict, target_png: Path) -> None:
    recipe = dict(
        basic_recipe,
        steps=21,
        generator={"use": "image", "param": "pixels", "init_image": str(target_png)},
        losses=[{"use": "smoothness", "weight": 1e-6}],
        animation={"every": 5, "zoom": 1.2},
    )
    result = pixgen.run(recipe, optimizer={"name": "sgd", "lr": 1e-6})
    still = transform_image(pixgen.fileio.load_image(target_png), 1.2**4, 0, 0, 0)
    got = torch.from_numpy(np.asarray(result.image).astype(np.float32) / 255).permute(2, 0, 1)
    assert (got - still[0]).abs().mean() < 0.03


def test_animation_needs_a_generator_that_can_start_from_an_image(basic_recipe: dict) -> None:
    class Fixed(pixgen.Generator):
        """Cannot start from an image."""

        name = "fixed_gen"

        def __init__(self, options, ctx):  # type: ignore[no-untyped-def]
            super().__init__(options, ctx)
            self.p = torch.nn.Parameter(torch.zeros(1, 3, ctx.height, ctx.width))

        def forward(self):  # type: ignore[no-untyped-def]
            return torch.sigmoid(self.p)

    class Plugin:
        @pixgen.hookimpl
        def register_generators(self, register):  # type: ignore[no-untyped-def]
            register(Fixed)

    recipe = dict(basic_recipe, generator={"use": "fixed_gen"}, animation={"zoom": 1.1})
    with pytest.raises(RecipeError, match="animation needs a generator"):
        pixgen.run(recipe, plugins=[Plugin()])
