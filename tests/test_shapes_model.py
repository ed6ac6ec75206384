"""The shipped ``pixgen/shapes`` model works offline in ``pixgen classify`` and ``search``.

The images are drawn by the shapes data generator (held-out colour/shape pairs), saved as
PNG files and given to the commands exactly as a user would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixgen.cli import main
from pixgen.models.clip import bundled_models, load_clip
from tools.shapes import data as D

BUNDLED = Path(__file__).resolve().parent.parent / "pixgen" / "models" / "bundled"
pytestmark = pytest.mark.skipif(
    not (BUNDLED / "shapes.safetensors").exists(), reason="pixgen/shapes is not trained yet"
)


def write_shapes(folder: Path, n: int, seed: int) -> tuple[list[Path], D.Attributes]:
    """``n`` single-object held-out pictures as 96-pixel PNGs (and what they show)."""
    paths, batch = D.write_samples(folder, n, "test", seed=seed, two_object_prob=0.0)
    return paths, batch.attrs


def test_the_shapes_model_is_bundled_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXGEN_OFFLINE", "1")
    assert "pixgen/shapes" in bundled_models()
    clip = load_clip("pixgen/shapes", device="cpu")
    assert clip.input_size == (64, 64) and clip.prompt_template == "{}"
    # The quick start's second judge, another build of the same small CLIP.
    assert "pixgen/shapes-vit" in bundled_models()
    assert load_clip("pixgen/shapes-vit", device="cpu").input_size == (64, 64)
    shipped = sum(path.stat().st_size for path in BUNDLED.iterdir())
    assert shipped <= 20 * 10**6  # the size budget, both models together


def test_classify_names_the_colour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIXGEN_OFFLINE", "1")
    paths, attrs = write_shapes(tmp_path / "imgs", 20, seed=5)
    labels = [f"a {name} shape" for name in D.COLOUR_NAMES]
    argv = ["classify", *map(str, paths), "--labels", ",".join(labels)]
    code = main([*argv, "--model", "pixgen/shapes", "--device", "cpu", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["failed"] == []
    right = sum(
        item["labels"][0]["label"] == labels[int(attrs.colour[i, 0])]
        for i, item in enumerate(data["results"])
    )
    assert right >= 18, f"{right}/20 colours named"


def test_search_finds_the_colour_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIXGEN_OFFLINE", "1")
    paths, attrs = write_shapes(tmp_path / "imgs", 40, seed=6)
    colours = attrs.colour[:, 0].tolist()
    for colour in sorted({c for c in colours if colours.count(c) >= 3})[:3]:
        name = D.COLOUR_NAMES[colour]
        argv = ["search", f"a {name} shape", "--images", str(tmp_path / "imgs"), "--top", "3"]
        code = main([*argv, "--model", "pixgen/shapes", "--device", "cpu", "--json"])
        data = json.loads(capsys.readouterr().out)
        assert code == 0
        found = [colours[paths.index(Path(r["path"]))] for r in data["results"]]
        assert found == [colour] * 3, (name, found)
