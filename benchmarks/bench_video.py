"""Cost of the ``video`` output: loop speed with a frame every step against no outputs.

Both runs happen in one process on the same recipe, after a warm-up run of each; the
runs alternate and the median of ``--repeats`` is reported. The recipe is an ``image`` or
``pixel`` generator guided either by ``target_image`` + ``smoothness`` (``--guide target``,
weight-free: the fastest loop there is, the hardest case for the video) or by the
``clip`` loss (``--guide clip``: what users run; ``--clip-model ViT-B-32`` takes open_clip's
architecture with random weights written in the real format, any other model spec is
loaded as the ``clip`` loss would, e.g. ``pixgen/shapes``). Two speeds per variant:

- loop: the engine's own steps/s (run.json ``steps_per_second``: the steps, not the
  final flush) — what the progress bar shows;
- end-to-end: steps / wall time of the whole ``Engine.run()``, including waiting for
  the encoder to drain its queue and close the file at the end.

Usage::

    python benchmarks/bench_video.py --device cuda --size 512 --steps 300
    python benchmarks/bench_video.py --device cuda --size 512 --guide clip --steps 200
    python benchmarks/bench_video.py --device cpu --size 256 --steps 60 --repeats 2

Target on a GPU: overhead at most 5 % at 512×512.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import write_random_clip


def make_target(path: Path, size: int) -> Path:
    """A smooth picture (gradients and a soft disc) that H.264 encodes faithfully."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([x, y, 1 - x * y], axis=-1)
    disc = np.exp(-(((x - 0.6) ** 2 + (y - 0.4) ** 2) / 0.02))[..., None]
    img = img * (1 - disc) + np.array([0.95, 0.6, 0.2]) * disc
    Image.fromarray((img * 255).clip(0, 255).astype(np.uint8)).save(path)
    return path


def losses(args: argparse.Namespace, target: Path) -> list[dict[str, Any]]:
    if args.guide == "clip":
        return [
            {
                "use": "clip",
                "models": [args.clip_spec],
                "prompts": ["a red disc on a blue background"],
                "cutouts": args.cutouts,
            }
        ]
    return [
        {"use": "target_image", "image": str(target)},
        {"use": "smoothness", "weight": 0.05},
    ]


def recipe(args: argparse.Namespace, target: Path, steps: int, video: bool) -> dict[str, Any]:
    generator: dict[str, Any] = (
        {"use": "image", "param": args.param}
        if args.generator == "image"
        else {"use": "pixel", "cells": [args.size // 4, args.size // 4]}
    )
    outputs: list[dict[str, Any]] = []
    if video:
        outputs.append(
            {
                "use": "video",
                "every": args.every,
                "format": args.format,
                "fps": 30,
                "keep_frames": args.keep_frames,
                "preset": args.preset,
                "queue": args.queue,
                "when_full": args.when_full,
            }
        )
    return {
        "name": "bench-video" if video else "bench-none",
        "seed": 0,
        "size": [args.size, args.size],
        "steps": steps,
        "device": args.device,
        "generator": generator,
        "losses": losses(args, target),
        "optimizer": {"name": "adam", "lr": 0.05},
        "speed": {"compile": args.compile},
        "outputs": outputs,
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def one_run(
    args: argparse.Namespace, target: Path, folder: Path, steps: int, video: bool
) -> dict[str, Any]:
    from pixgen.engine import Engine
    from pixgen.recipe import load_recipe

    loaded = load_recipe(recipe(args, target, steps, video))
    engine = Engine(loaded, output=folder, quiet=True)
    sync(args.device)
    t0 = time.perf_counter()
    result = engine.run()
    sync(args.device)
    wall = time.perf_counter() - t0
    if result.status != "completed":
        raise SystemExit(f"benchmark run ended {result.status}: {result.error}")
    out = result.info["outputs"].get("video", {})
    return {
        "loop": float(result.info["steps_per_second"]),
        "e2e": steps / wall,
        "dropped": out.get("dropped", 0),
        "frames": out.get("frames", 0),
        "steps_recorded": out.get("steps_recorded", 0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu | cuda | cuda:N",
    )
    parser.add_argument("--size", type=int, default=512, help="image width and height")
    parser.add_argument("--steps", type=int, default=300, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each variant")
    parser.add_argument("--generator", choices=["image", "pixel"], default="image")
    parser.add_argument(
        "--param", choices=["pixels", "fft"], default="fft", help="image generator parameterisation"
    )
    parser.add_argument(
        "--guide",
        choices=["target", "clip"],
        default="target",
        help="weight-free target_image + smoothness, or the clip loss",
    )
    parser.add_argument(
        "--clip-model",
        default="ViT-B-32",
        help="with --guide clip: an open_clip architecture (random weights) or a model spec",
    )
    parser.add_argument("--cutouts", type=int, default=32, help="with --guide clip")
    parser.add_argument(
        "--compile",
        choices=["off", "auto", "on"],
        default="off",
        help="the recipe's speed.compile; off by default because each timed run builds its "
        "own engine, and a compiled one would spend its first steps compiling",
    )
    parser.add_argument("--every", type=int, default=1, help="steps between video frames")
    parser.add_argument("--format", choices=["mp4", "gif", "webp"], default="mp4")
    parser.add_argument("--preset", default="medium", help="x264 preset of the video output")
    parser.add_argument(
        "--no-keep-frames",
        dest="keep_frames",
        action="store_false",
        help="do not also save frames/NNNNNN.png",
    )
    parser.add_argument("--queue", type=int, default=16)
    parser.add_argument("--when-full", choices=["wait", "drop"], default="wait")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(prefix="pixgen-bench-video-") as tmp:
        root = Path(tmp)
        target = make_target(root / "target.png", args.size)
        args.clip_spec = args.clip_model
        if args.guide == "clip" and "/" not in args.clip_model and ":" not in args.clip_model:
            args.clip_spec = f"{args.clip_model}:{write_random_clip(root, args.clip_model)}"
        counter = iter(range(1_000_000))

        def folder() -> Path:
            return root / f"run{next(counter)}"

        for video in (False, True):  # warm-up: kernels, allocator, ffmpeg start, imports
            one_run(args, target, folder(), min(args.steps, 20), video)
        runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        for _ in range(args.repeats):
            for video in (False, True):
                runs[video].append(one_run(args, target, folder(), args.steps, video))

    def median(video: bool, key: str) -> float:
        return statistics.median(r[key] for r in runs[video])

    device_name = (
        torch.cuda.get_device_name(torch.device(args.device))
        if args.device.startswith("cuda")
        else "cpu"
    )
    report: dict[str, Any] = {
        "device": args.device,
        "device_name": device_name,
        "torch": torch.__version__,
        "size": args.size,
        "steps": args.steps,
        "repeats": args.repeats,
        "generator": args.generator if args.generator == "pixel" else f"image/{args.param}",
        "guide": (
            f"clip {args.clip_model} × {args.cutouts} cutouts"
            if args.guide == "clip"
            else "target_image + smoothness"
        ),
        "video": {
            "format": args.format,
            "every": args.every,
            "keep_frames": args.keep_frames,
            "preset": args.preset,
            "queue": args.queue,
            "when_full": args.when_full,
        },
        "compile": args.compile,
    }
    print(
        f"pixgen video benchmark: {device_name} ({args.device}), torch {torch.__version__}, "
        f"{args.size}×{args.size}, {args.steps} steps × {args.repeats}, "
        f"generator {report['generator']}, guided by {report['guide']}"
    )
    print(
        f"video: {args.format}, a frame every {args.every} step(s), keep_frames={args.keep_frames}, "
        f"preset={args.preset}, queue={args.queue}, when_full={args.when_full}"
    )
    for key, label in (("loop", "loop (run.json steps/s)"), ("e2e", "end-to-end (with flush)")):
        base, vid = median(False, key), median(True, key)
        overhead = (base / vid - 1) * 100
        report[key] = {
            "no_outputs_it_s": round(base, 2),
            "video_it_s": round(vid, 2),
            "overhead_percent": round(overhead, 1),
        }
        print(
            f"  {label:26s} no outputs {base:8.2f} it/s   video {vid:8.2f} it/s   "
            f"overhead {overhead:+6.1f} %"
        )
    dropped = [r["dropped"] for r in runs[True]]
    report["dropped"] = dropped
    report["steps_recorded"] = [r["steps_recorded"] for r in runs[True]]
    print(f"  frames dropped per run: {dropped}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
