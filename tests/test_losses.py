"""The weight-free losses a recipe mixes in: ``palette`` and ``symmetry``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pixgen_plugins.losses.palette import nearest_colour_distance
from pixgen_plugins.losses.symmetry import asymmetry

import pixgen
from pixgen.colours import palette_tensor
from pixgen.errors import RecipeError
from pixgen.recipe import load_recipe


def _colours_used(image: np.ndarray) -> np.ndarray:
    return np.unique(image.reshape(-1, 3), axis=0)


def test_palette_distance_is_zero_on_palette_colours_and_counts_the_nearest() -> None:
    palette = palette_tensor(["#000000", "#ff0000"])
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    assert float(nearest_colour_distance(red, palette)) == pytest.approx(0.0, abs=1e-6)
    dark_red = red * 0.75  # 0.25 from red, 0.75 from black: the nearest counts
    assert float(nearest_colour_distance(dark_red, palette)) == pytest.approx(0.25**2)


def test_a_run_with_the_palette_loss_ends_on_the_palette(basic_recipe: dict) -> None:
    colours = ["#1a1c2c", "#f4f4f4", "#b13e53"]
    recipe = {
        **basic_recipe,
        "generator": {"use": "image", "param": "pixels"},
        "steps": 60,
        "losses": [{"use": "palette", "colours": colours}],
        "optimizer": {"name": "adam", "lr": 0.05},
    }
    result = pixgen.run(recipe, write_files=False)
    losses = result.history["losses"]["palette"]
    assert losses[-1] < losses[0] / 10
    image = np.asarray(result.image, dtype=np.float32)
    palette = palette_tensor(colours).numpy() * 255
    nearest = np.min(np.linalg.norm(image[:, :, None, :] - palette[None, None], axis=-1), -1)
    assert np.median(nearest) < 12  # most pixels within a few levels of a palette colour


def test_symmetry_is_zero_for_a_mirror_image_and_positive_otherwise() -> None:
    half = torch.rand(1, 3, 8, 4)
    left_right = torch.cat([half, half.flip(3)], dim=3)
    assert float(asymmetry(left_right, "left_right")) == 0.0
    assert float(asymmetry(left_right, "top_bottom")) > 0.0
    assert float(asymmetry(left_right, "both")) > 0.0
    ramp = torch.linspace(0, 1, 8).expand(1, 3, 8, 8)
    assert float(asymmetry(ramp * ramp.transpose(2, 3), "rotate_180")) > 0.0
    centred = torch.zeros(1, 3, 8, 8)
    centred[..., 2:6, 2:6] = 1.0
    for axis in ("left_right", "top_bottom", "both", "rotate_180"):
        assert float(asymmetry(centred, axis)) == 0.0


@pytest.mark.parametrize(("axis", "flip"), [("left_right", 1), ("top_bottom", 0)])
def test_a_run_with_the_symmetry_loss_paints_a_mirror_image(
    basic_recipe: dict, target_png: Path, axis: str, flip: int
) -> None:
    recipe = {
        **basic_recipe,  # from a picture with an off-centre disc on a gradient
        "generator": {"use": "image", "param": "pixels", "init_image": str(target_png)},
        "steps": 40,
        "losses": [{"use": "symmetry", "axis": axis}],
    }
    result = pixgen.run(recipe, write_files=False)
    losses = result.history["losses"]["symmetry"]
    assert losses[-1] < losses[0] / 20

    def mirror_difference(image: np.ndarray) -> float:
        return float(np.abs(image - np.flip(image, axis=flip)).mean())

    before = mirror_difference(np.asarray(Image.open(target_png).convert("RGB"), np.float32))
    after = mirror_difference(np.asarray(result.image, dtype=np.float32))
    assert after < before / 5, (before, after)


def test_bad_palette_and_symmetry_options_are_recipe_errors(basic_recipe: dict) -> None:
    for loss, message in [
        ({"use": "palette"}, r"losses\[0\]\.colours: required"),
        ({"use": "palette", "colours": []}, "at least 1 colour"),
        ({"use": "palette", "colours": ["#12345"]}, "is not a hex colour"),
        ({"use": "palette", "colours": [None]}, "write colours in quotes"),
        ({"use": "symmetry", "axis": "diagonal"}, "left_right"),
    ]:
        with pytest.raises(RecipeError, match=message):
            load_recipe({**basic_recipe, "losses": [loss]})


def test_palette_loss_in_a_yaml_recipe_with_quoted_colours(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "size: 16\nsteps: 2\ndevice: cpu\ngenerator: pixel\n"
        "losses:\n  - {use: palette, colours: ['#000000', '#ffffff']}\n  - symmetry\n"
    )
    recipe = load_recipe(path)
    assert [entry.use for entry in recipe.losses] == ["palette", "symmetry"]


def test_plugins_show_prints_a_docstrings_later_lines_unindented(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pixgen.cli import main

    assert main(["plugins", "show", "palette"]) == 0
    out = capsys.readouterr().out
    assert "\nA softer limit than the pixel generator's fixed palette" in out, out
