"""The ``strokes`` generator (CLIPDraw-style vector strokes) and the ``svg`` output."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pixgen_plugins.generators import strokes as strokes_module
from pixgen_plugins.generators.strokes import StrokesGenerator, composite, polyline_distance
from pixgen_plugins.outputs.svg import SvgOutput

import pixgen
from pixgen.cli import main
from pixgen.context import RunContext
from pixgen.errors import RecipeError
from pixgen.recipe import load_recipe

SVG = "{http://www.w3.org/2000/svg}"


def make_generator(size: tuple[int, int] = (40, 30), **options: Any) -> StrokesGenerator:
    """A strokes generator set up as a run would, without running."""
    recipe = load_recipe(
        {
            "size": list(size),
            "steps": 10,
            "device": "cpu",
            "generator": {"use": "strokes", **options},
            "losses": [{"use": "smoothness"}],
        }
    )
    ctx = RunContext(
        recipe=recipe,
        device=torch.device("cpu"),
        precision="fp32",
        seed=0,
        run_dir=None,
        recipe_dir=recipe.base_dir,
    )
    torch.manual_seed(0)
    generator = StrokesGenerator(recipe.generator.options, ctx)  # type: ignore[arg-type]
    ctx.generator = generator
    return generator


def one_horizontal_stroke(generator: StrokesGenerator, rgba: list[float]) -> None:
    """Stroke 0 straight across the middle, from x = 10% to 90%; the others invisible."""
    with torch.no_grad():
        generator.points[0] = torch.tensor([[0.1, 0.5], [0.35, 0.5], [0.65, 0.5], [0.9, 0.5]])
        generator.colours[0] = torch.tensor(rgba)
        generator.colours[1:, 3] = 0.0


def test_invisible_strokes_leave_exactly_the_background() -> None:
    generator = make_generator(strokes=20, opacity=[0.0, 0.0], background="#336699")
    image = generator()
    assert image.shape == (1, 3, 30, 40)
    expected = torch.tensor([0x33, 0x66, 0x99]) / 255.0
    assert torch.allclose(image, expected.view(1, 3, 1, 1).expand_as(image), atol=1e-6)


def test_a_stroke_colours_the_pixels_under_it_and_not_the_corners() -> None:
    generator = make_generator(strokes=3, width=4.0, min_width=1.0, max_width=6.0)
    one_horizontal_stroke(generator, [0.0, 0.0, 1.0, 1.0])  # opaque blue on white
    image = generator().detach()[0]
    assert image.min() >= 0 and image.max() <= 1
    middle = image[:, 15, 8:32]  # the row under the stroke, away from its round ends
    assert torch.allclose(middle, torch.tensor([0.0, 0.0, 1.0]).view(3, 1), atol=0.02)
    for y, x in [(0, 0), (0, 39), (29, 0), (29, 39), (5, 20), (25, 20)]:
        assert torch.allclose(image[:, y, x], torch.ones(3), atol=1e-4), (y, x)
    # Four times thinner: the row whose pixel centres are 1.5 px off the line is no
    # longer covered.
    assert image[:2, 16, 20].max() < 0.2
    with torch.no_grad():
        generator.widths[0] = 1.0
    thin = generator().detach()[0]
    assert thin[:2, 16, 20].min() > 0.9


def test_later_strokes_are_drawn_on_top() -> None:
    generator = make_generator(strokes=2, width=4.0, max_width=6.0)
    one_horizontal_stroke(generator, [1.0, 0.0, 0.0, 1.0])
    with torch.no_grad():
        generator.points[1] = generator.points[0]
        generator.colours[1] = torch.tensor([0.0, 1.0, 0.0, 0.5])
    pixel = generator().detach()[0, :, 15, 20]
    assert torch.allclose(pixel, torch.tensor([0.5, 0.5, 0.0]), atol=0.02)


def test_gradients_reach_points_widths_and_colours() -> None:
    generator = make_generator(strokes=8, width=3.0)
    one_horizontal_stroke(generator, [0.2, 0.4, 0.6, 0.8])
    generator().mean().backward()
    for name in ("points", "widths", "colours"):
        grad = getattr(generator, name).grad
        assert grad is not None and torch.isfinite(grad).all(), name
        assert grad[0].abs().sum() > 0, name


def test_distance_and_compositing_match_plain_torch_and_their_gradients_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(1)
    samples = (torch.rand(5, 4, 2, dtype=torch.float64) * 9).requires_grad_()
    xs = torch.arange(9, dtype=torch.float64) + 0.5
    ys = torch.arange(7, dtype=torch.float64) + 0.5
    # Brute force: the distance to every segment, the smallest kept.
    a, e = samples[:, :-1, None, None], (samples[:, 1:] - samples[:, :-1])[:, :, None, None]
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None, None]
    t = (((grid - a) * e).sum(-1) / (e * e).sum(-1)).clamp(0, 1)
    reference = (grid - a - t[..., None] * e).norm(dim=-1).amin(1)
    assert torch.allclose(polyline_distance(samples, xs, ys), reference)
    # One stroke per chunk gives the same distances as one chunk for all.
    monkeypatch.setattr(strokes_module, "CHUNK_ELEMENTS", {"cpu": 1})
    assert torch.allclose(polyline_distance(samples, xs, ys), reference)
    assert torch.autograd.gradcheck(lambda s: polyline_distance(s, xs, ys), (samples,))

    alpha = torch.rand(4, 7, 9, dtype=torch.float64)
    alpha[1, :2] = 1.0  # fully opaque pixels too
    alpha.requires_grad_()
    rgb = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    background = torch.rand(3, dtype=torch.float64, requires_grad=True)
    expected = background.view(3, 1, 1).expand(3, 7, 9)
    for i in range(4):  # "over", one stroke after another
        expected = expected * (1 - alpha[i]) + rgb[i].view(3, 1, 1) * alpha[i]
    assert torch.allclose(composite(alpha, rgb, background)[0], expected)
    assert torch.autograd.gradcheck(composite, (alpha, rgb, background))


def test_post_step_clamps_every_parameter_into_its_range() -> None:
    generator = make_generator(strokes=4, min_width=1.5, max_width=5.0, opacity=[0.2, 0.6])
    with torch.no_grad():
        generator.points.add_(torch.tensor([-3.0, 3.0]))
        generator.widths.copy_(torch.tensor([0.0, 1.0, 9.0, 3.0]))
        generator.colours.mul_(4).sub_(2)
    generator.post_step()
    assert generator.points.min() >= 0 and generator.points.max() <= 1
    assert generator.widths.tolist() == [1.5, 1.5, 5.0, 3.0]
    assert generator.colours[:, :3].min() >= 0 and generator.colours[:, :3].max() <= 1
    assert generator.colours[:, 3].min() >= 0.2 and generator.colours[:, 3].max() <= 0.6


def test_a_short_run_paints_towards_a_dark_line(tmp_path: Path) -> None:
    target = np.full((32, 32, 3), 255, np.uint8)
    target[14:18, 4:28] = 0  # a black bar across the middle
    Image.fromarray(target).save(tmp_path / "line.png")
    recipe = {
        "seed": 1,
        "size": [32, 32],
        "steps": 40,
        "device": "cpu",
        "generator": {"use": "strokes", "strokes": 16, "width": 3.0},
        "losses": [{"use": "target_image", "image": str(tmp_path / "line.png")}],
        "optimizer": {"name": "adam", "lr": 1.0},
    }
    result = pixgen.run(recipe, write_files=False)
    losses = result.history["losses"]["target_image"]
    assert result.status == "completed"
    assert losses[-1] < 0.3 * losses[0]


def test_the_same_seed_paints_the_same_strokes() -> None:
    recipe = strokes_recipe()
    recipe.pop("outputs")
    first = pixgen.run(recipe, write_files=False)
    second = pixgen.run(recipe, write_files=False)
    assert first.image.tobytes() == second.image.tobytes()
    assert first.history["total"] == second.history["total"]


def test_to_svg_is_an_svg_document_of_every_stroke() -> None:
    generator = make_generator(strokes=12, width=2.0, max_width=6.0, background="#102030")
    one_horizontal_stroke(generator, [1.0, 0.5, 0.0, 0.75])
    root = ET.fromstring(generator.to_svg())
    assert root.tag == f"{SVG}svg"
    assert (root.get("width"), root.get("height")) == ("40", "30")
    assert root.find(f"{SVG}rect").get("fill") == "#102030"  # type: ignore[union-attr]
    paths = root.findall(f"{SVG}path")
    assert len(paths) == 12
    first = paths[0]
    assert first.get("d") == "M 4.00 15.00 C 14.00 15.00, 26.00 15.00, 36.00 15.00"
    assert first.get("stroke") == "rgb(255,128,0)"
    assert float(first.get("stroke-opacity", "")) == 0.75
    assert float(first.get("stroke-width", "")) == pytest.approx(2.0, abs=0.01)


def strokes_recipe(**outputs: Any) -> dict[str, Any]:
    return {
        "name": "svg-test",
        "seed": 2,
        "size": [24, 16],
        "steps": 4,
        "device": "cpu",
        "generator": {"use": "strokes", "strokes": 5},
        "losses": [{"use": "smoothness"}],
        "outputs": [{"use": "svg", **outputs}],
    }


def test_the_svg_output_writes_the_final_strokes_into_the_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    pixgen.run(strokes_recipe(every=2), output=run)
    final = ET.parse(run / "final.svg").getroot()
    assert len(final.findall(f"{SVG}path")) == 5
    # Snapshots numbered by the updates the strokes have had, as png's stills are.
    assert sorted(p.name for p in (run / "svg").iterdir()) == [
        "000000.svg",
        "000002.svg",
        "000004.svg",
    ]
    assert (run / "svg" / "000004.svg").read_text() == (run / "final.svg").read_text()
    info = json.loads((run / "run.json").read_text())
    assert info["outputs"]["svg"] == {"file": "final.svg", "snapshots": 3, "folder": "svg"}


def test_a_resumed_run_keeps_its_svg_snapshots(tmp_path: Path) -> None:
    unstopped = tmp_path / "a"
    pixgen.run(strokes_recipe(every=2), output=unstopped, steps=6)
    pixgen.run(strokes_recipe(every=2), output=tmp_path / "b")
    pixgen.resume(tmp_path / "b", steps=6)  # paint the finished 4-step run further
    names = sorted(p.name for p in (unstopped / "svg").iterdir())
    assert sorted(p.name for p in (tmp_path / "b" / "svg").iterdir()) == names
    for name in names:  # 000000.svg still holds the starting strokes
        assert (tmp_path / "b" / "svg" / name).read_text() == (unstopped / "svg" / name).read_text()
    assert (tmp_path / "b" / "final.svg").read_text() == (unstopped / "final.svg").read_text()


def test_the_svg_output_still_writes_when_the_final_image_is_missing(tmp_path: Path) -> None:
    generator = make_generator(strokes=3)
    generator.ctx.run_dir = tmp_path
    output = SvgOutput(SvgOutput.Options(file="strokes.svg"), generator.ctx)
    output.on_finish(generator.ctx, None)
    assert len(ET.parse(tmp_path / "strokes.svg").getroot().findall(f"{SVG}path")) == 3
    assert output.summary() == {"file": "strokes.svg"}


def test_the_svg_output_refuses_a_generator_without_strokes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = dict(strokes_recipe(), generator={"use": "pixel"})
    path = tmp_path / "pixel-svg.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    assert main(["run", str(path), "-q", "-o", str(run)]) == 2
    message = capsys.readouterr().err
    assert "svg" in message and "strokes" in message and "'pixel'" in message
    assert not run.exists()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"strokes": 0}, "strokes"),
        ({"strokes": 5000}, "strokes"),
        ({"width": -2}, "width"),
        ({"min_width": 0}, "min_width"),
        ({"min_width": 4, "max_width": 2}, "max_width"),
        ({"segments": 0}, "segments"),
        ({"opacity": [0.8, 0.2]}, "opacity"),
        ({"opacity": [0.0, 1.5]}, "opacity"),
        ({"background": "#12"}, "background"),
        ({"background": None}, "quotes"),
        ({"softness": 0}, "softness"),
    ],
)
def test_bad_options_are_refused_before_the_run(options: dict[str, Any], field: str) -> None:
    recipe = dict(strokes_recipe(), generator={"use": "strokes", **options})
    with pytest.raises(RecipeError, match=field):
        load_recipe(recipe)


@pytest.mark.parametrize(
    "options",
    [{"file": "../x.svg"}, {"folder": "a/b"}, {"every": 0}, {"every": 2, "file": "svg"}],
)
def test_bad_svg_output_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(RecipeError, match="outputs"):
        load_recipe(strokes_recipe(**options))


def test_points_widths_and_colours_learn_at_clipdraws_relative_rates() -> None:
    generator = make_generator(size=(50, 20), strokes=3)
    groups = generator.parameter_groups()
    lr = generator.ctx.recipe.optimizer.lr
    assert [g["params"][0] for g in groups] == [
        generator.points,
        generator.widths,
        generator.colours,
    ]
    assert [g["lr"] for g in groups] == pytest.approx([lr / 50, lr * 0.1, lr * 0.01])
