"""Speed of the ``strokes`` generator: its rasteriser alone, and a whole weight-free run.

Two figures per size:

- raster: one forward + backward of the generator (``gen().mean().backward()``), the
  median of ``--repeats`` after one warm-up, between device synchronisations;
- run: the engine's steps/s (run.json ``steps_per_second``) for a run with the ``strokes``
  generator, a ``smoothness`` loss and no outputs, after a 2-step warm-up run.

Usage::

    python benchmarks/bench_strokes.py --device cpu --sizes 224 --strokes 256
    python benchmarks/bench_strokes.py --device cuda --sizes 224,512 --strokes 256,1024

CLIP is left out on purpose: its cost is the same with every generator (bench_step.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import pixgen
from pixgen.engine import Engine


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def recipe(size: int, strokes: int, steps: int, device: str) -> dict[str, Any]:
    return {
        "name": "bench-strokes",
        "seed": 0,
        "size": size,
        "steps": steps,
        "device": device,
        "generator": {"use": "strokes", "strokes": strokes},
        "losses": ["smoothness"],
        "optimizer": {"name": "adam", "lr": 1.0},
    }


def time_raster(size: int, strokes: int, device: str, repeats: int) -> float:
    """Median seconds of one generator forward + backward."""
    engine = Engine(pixgen.load_recipe(recipe(size, strokes, 1, device)), write_files=False)
    generator = engine.generator
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        _sync(engine.device)
        t0 = time.perf_counter()
        generator().mean().backward()
        _sync(engine.device)
        times.append(time.perf_counter() - t0)
        generator.zero_grad(set_to_none=True)
    return statistics.median(times[1:])


def time_run(size: int, strokes: int, device: str, steps: int) -> float:
    """The engine's steps/s over ``steps`` steps."""
    pixgen.run(recipe(size, strokes, 2, device), write_files=False)  # warm-up
    result = pixgen.run(recipe(size, strokes, steps, device), write_files=False)
    return float(result.info["steps_per_second"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="224", help="comma-separated square sizes")
    parser.add_argument("--strokes", default="256", help="comma-separated stroke counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps of the timed run")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for strokes in (int(n) for n in args.strokes.split(",")):
            raster_s = time_raster(size, strokes, args.device, args.repeats)
            its = time_run(size, strokes, args.device, args.steps)
            rows.append({"size": size, "strokes": strokes, "raster_s": raster_s, "run_its": its})
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(
        f"strokes generator on {name}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("| size | strokes | forward + backward | run (smoothness) |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['size']}² | {row['strokes']} | {row['raster_s'] * 1000:.0f} ms | "
            f"{row['run_its']:.2f} it/s |"
        )
    if args.json:
        args.json.write_text(json.dumps({"device": name, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
