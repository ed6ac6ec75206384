"""Every recipe in recipes/ runs (fewer steps; tiny models where weights are needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import pixgen

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_quickstart_yaml_makes_pixel_art_of_the_shipped_picture(tmp_path: Path) -> None:
    result = pixgen.run(RECIPES / "quickstart.yaml", output=tmp_path / "run", steps=60)
    assert result.status == "completed"
    assert (tmp_path / "run" / "final.png").exists()
    assert (tmp_path / "run" / "steps" / "000050.png").exists()
    history = json.loads((tmp_path / "run" / "run.json").read_text())["history"]
    assert history["losses"]["target_image"][-1] < history["losses"]["target_image"][0] / 3
    palette = result.recipe.generator.options.palette
    allowed = {tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in palette}
    used = {tuple(c) for c in np.asarray(result.image).reshape(-1, 3)}
    assert used <= allowed
