"""Average the weights of several ``pixgen/shapes`` fine-tunes of one model (a "model soup",
Wortsman et al. 2022): the runs of benchmarks/RESULTS.md's sixth-session table.

    python benchmarks/shapes_soup.py runs/soup runs/a runs/b runs/c
    python -m tools.shapes.evaluate --weights runs/soup/shapes.safetensors

Writes OUT/shapes.safetensors (the element-wise mean, fp16 as trained; integer buffers from
the first run) and copies the first run's shapes.json beside it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file


def main() -> None:
    out, runs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
    states = [load_file(str(run / "shapes.safetensors")) for run in runs]
    if any(state.keys() != states[0].keys() for state in states):
        sys.exit("error: the runs are not the same architecture (their weights differ in names)")
    mean = {
        name: (sum(s[name].float() for s in states) / len(states)).to(tensor.dtype)
        if tensor.is_floating_point()
        else tensor
        for name, tensor in states[0].items()
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(mean, str(out / "shapes.safetensors"))
    shutil.copy(runs[0] / "shapes.json", out / "shapes.json")
    print(f"{out / 'shapes.safetensors'}: mean of {len(runs)} runs")


if __name__ == "__main__":
    main()
