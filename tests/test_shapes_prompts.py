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
from tools.shapes.data import COLOURS

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


# Each prompt names what its check measures: where the object is (the model was trained
# on objects anywhere, so "a red circle" alone may rightly land in a corner) and, for the
# centre checks, that it is large.
PROMPTS: list[tuple[str, Callable[[np.ndarray], bool]]] = [
    ("a large red circle in the centre on a blue background", centre_on_border("red", "blue")),
    ("a yellow square at the left", more_on_side("yellow", "left")),
    ("a green triangle at the right", more_on_side("green", "right")),
    ("a large white star in the centre on a black background", centre_on_border("white", "black")),
    ("an orange ring at the top", more_on_side("orange", "top")),
]


QUICKSTART = Path(__file__).resolve().parent.parent / "recipes" / "quickstart.yaml"
STEPS = 150  # the quickstart's settings, its whole run


def prompt_recipe(prompt: str, seed: int) -> dict:
    """The quick-start recipe painting ``prompt`` for the test: ``STEPS`` steps, CPU, no
    outputs (also what ``benchmarks/shapes_prompt_sweep.py`` starts from)."""
    recipe = yaml.safe_load(QUICKSTART.read_text())
    (clip,) = [loss for loss in recipe["losses"] if loss["use"] == "clip"]
    assert clip["models"] == ["pixgen/shapes", "pixgen/shapes-vit"]
    clip["prompts"] = [prompt]
    recipe.update(seed=seed, steps=STEPS, device="cpu", outputs=[])
    return recipe


def paint(prompt: str, seed: int, tmp_path: Path) -> np.ndarray:
    recipe = prompt_recipe(prompt, seed)
    result = pixgen.run(recipe, output=tmp_path / f"{seed}-{prompt[:20].replace(' ', '_')}")
    return np.asarray(result.image)


# The issue asks for 4 of 5 prompts per seed. With both shipped models judging, the quick
# start reaches 4 of 5 or 5 of 5 for every seed 0-11 ("a green triangle at the right",
# 6 of 12, is the one that fails; benchmarks/RESULTS.md). The quick start starts from grey, so the
# seed changes only the cutouts drawn.
MIN_PASSED_PER_SEED = 4


@pytest.mark.slow
@pytest.mark.timeout(900)  # five 150-step paintings with two models: ~1.5 min on 2 cores
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prompts_become_pictures(seed: int, tmp_path: Path) -> None:
    passed = []
    for prompt, check in PROMPTS:
        labels = colour_map(paint(prompt, seed, tmp_path))
        passed.append((prompt, check(labels)))
    assert sum(ok for _, ok in passed) >= MIN_PASSED_PER_SEED, passed
    # The first prompt (the quick start's own) must always come out as asked.
    assert passed[0][1], passed


def test_the_judge_fails_a_blank_or_wrong_picture() -> None:
    """Pixel checks pass only for what the prompt asks: not for grey, not for swapped
    colours or the other side."""
    grey = np.full((64, 64, 3), 128, np.uint8)
    red_on_blue = np.zeros((64, 64, 3), np.uint8)
    red_on_blue[:] = (26, 56, 235)
    red_on_blue[16:48, 16:48] = (219, 20, 20)
    for _, check in PROMPTS:
        assert not check(colour_map(grey))
    assert centre_on_border("red", "blue")(colour_map(red_on_blue))
    assert not centre_on_border("blue", "red")(colour_map(red_on_blue))
    yellow_left = np.full((64, 64, 3), 128, np.uint8)
    yellow_left[20:40, 4:24] = (250, 230, 20)
    assert more_on_side("yellow", "left")(colour_map(yellow_left))
    assert not more_on_side("yellow", "right")(colour_map(yellow_left))
