"""The prompt test of ``tests/test_shapes_prompts.py`` with changed settings: pass matrix.

    python -m benchmarks.shapes_prompt_sweep                  # the quick start, seeds 0-2
    PIXGEN_BUNDLED_MODELS=runs/resnet python -m benchmarks.shapes_prompt_sweep \\
        '{"clip": {"models": ["pixgen/shapes"], "cutouts": 32}, "seeds": [3, 4, 5]}'

Paints the test's five prompts with the quick-start recipe (its 150 steps, both shipped
models) for seeds 0, 1, 2 and judges each picture with the test's pixel checks. The JSON
argument overrides recipe fields (``generator``, ``optimizer``, ``steps``, ...; ``clip``:
fields of the clip loss; ``smoothness``: its weight; ``seeds``: the seeds).
``PIXGEN_BUNDLED_MODELS`` pointing at a training run's folder makes ``pixgen/shapes`` that
run's model (a folder holding ``NAME.json`` + ``NAME.safetensors`` adds ``pixgen/NAME``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_shapes_prompts as T

import pixgen


def main() -> None:
    overrides = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    seeds = overrides.pop("seeds", [0, 1, 2])
    clip_fields = overrides.pop("clip", {})
    smoothness = overrides.pop("smoothness", None)
    t0, rows = time.monotonic(), []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            row = []
            for i, (prompt, check) in enumerate(T.PROMPTS):
                recipe = T.prompt_recipe(prompt, seed)
                for loss in recipe["losses"]:
                    if loss["use"] == "clip":
                        loss.update(clip_fields)
                    if loss["use"] == "smoothness" and smoothness is not None:
                        loss["weight"] = smoothness
                recipe.update(overrides)
                result = pixgen.run(recipe, output=Path(tmp) / f"{seed}-{i}")
                row.append(bool(check(T.colour_map(np.asarray(result.image)))))
            rows.append(row)
            print(f"seed {seed}: {''.join('X' if ok else '.' for ok in row)}", flush=True)
    print(
        f"{sum(map(sum, rows))}/{5 * len(rows)} passed; per seed {[sum(r) for r in rows]}; "
        f"per prompt {[sum(c) for c in zip(*rows, strict=True)]}; "
        f"{time.monotonic() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
