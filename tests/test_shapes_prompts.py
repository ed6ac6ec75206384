"""Text prompts turn into pictures with the embedded pixgen/shapes model (issue 4).

Each picture is judged with plain pixel statistics, never with the model itself: pixels
are assigned to the nearest named colour and counted by region.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

import pixgen
from pixgen.shapes.data import COLOURS

BUNDLED = Path(__file__).resolve().parent.parent / "pixgen" / "models" / "bundled"
NAMES = list(COLOURS)
PALETTE = np.array([COLOURS[n] for n in NAMES], dtype=np.float32)

pytestmark = pytest.mark.skipif(
    not (BUNDLED / "shapes.safetensors").exists(), reason="pixgen/shapes is not trained yet"
)


def colour_map(image: np.ndarray) -> np.ndarray:
    """Index of the nearest named colour for each pixel of an RGB uint8 image."""
    rgb = image.astype(np.float32) / 255.0
    distance = ((rgb[:, :, None, :] - PALETTE[None, None]) ** 2).sum(-1)
    return distance.argmin(-1)


def share(labels: np.ndarray, colour: str) -> float:
    return float((labels == NAMES.index(colour)).mean()) if labels.size else 0.0


def centre_on_border(obj: str, background: str) -> Callable[[np.ndarray], bool]:
    def check(labels: np.ndarray) -> bool:
        h, w = labels.shape
        centre = labels[int(h * 0.3) : int(h * 0.7), int(w * 0.3) : int(w * 0.7)]
        frame = np.concatenate(
            [
                labels[: h // 8].ravel(),
                labels[-h // 8 :].ravel(),
                labels[:, : w // 8].ravel(),
                labels[:, -w // 8 :].ravel(),
            ]
        )
        return (
            share(centre, obj) > share(centre, background)
            and share(frame, background) > share(frame, obj)
            and share(frame, background) > 0.3
        )

    return check


def more_on_side(colour: str, side: str) -> Callable[[np.ndarray], bool]:
    def check(labels: np.ndarray) -> bool:
        h, w = labels.shape
        halves = {
            "left": (labels[:, : w // 2], labels[:, w // 2 :]),
            "right": (labels[:, w // 2 :], labels[:, : w // 2]),
            "top": (labels[: h // 2], labels[h // 2 :]),
            "bottom": (labels[h // 2 :], labels[: h // 2]),
        }
        near, far = halves[side]
        return share(near, colour) > 1.5 * share(far, colour) and share(near, colour) > 0.03

    return check


PROMPTS: list[tuple[str, Callable[[np.ndarray], bool]]] = [
    ("a red circle on a blue background", centre_on_border("red", "blue")),
    ("a yellow square at the left", more_on_side("yellow", "left")),
    ("a green triangle at the right", more_on_side("green", "right")),
    ("a large white star on a black background", centre_on_border("white", "black")),
    ("a small orange ring at the top", more_on_side("orange", "top")),
]


# The settings the text-guided quickstart is meant to use once pixgen/shapes is trained.
TEXT_RECIPE = """
name: shapes-text
size: [96, 96]
steps: 100
device: cpu
generator: {use: pixel, cells: [24, 24]}
losses:
  - use: clip
    models: [pixgen/shapes]
    prompts: ["a red circle on a blue background"]
    cutouts: 16
    cut_pow: 0.5
    augment: [noise]
  - {use: smoothness, weight: 0.1}
optimizer: {name: adam, lr: 0.1}
"""


def paint(prompt: str, seed: int, tmp_path: Path) -> np.ndarray:
    recipe = yaml.safe_load(TEXT_RECIPE)
    recipe["losses"][0]["prompts"] = [prompt]
    recipe.update(seed=seed)
    result = pixgen.run(recipe, output=tmp_path / f"{seed}-{prompt[:20].replace(' ', '_')}")
    return np.asarray(result.image)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prompts_become_pictures(seed: int, tmp_path: Path) -> None:
    passed = []
    for prompt, check in PROMPTS:
        labels = colour_map(paint(prompt, seed, tmp_path))
        passed.append((prompt, check(labels)))
    assert sum(ok for _, ok in passed) >= 4, passed
