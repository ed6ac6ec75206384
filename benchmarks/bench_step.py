"""Step speed: the pixgen engine beside the canonical VQGAN+CLIP reference, one process.

    python benchmarks/bench_step.py --device cuda                       # the full table
    python benchmarks/bench_step.py --device cpu --sizes 64 --cutouts 2 --steps 2 --warmup 1

Same card, same settings, same random weights (the real architectures: taming's VQGAN
imagenet f16-16384 and open_clip's ViT-B-32; no trained weights are needed to time the
arithmetic). The weights are written once in the real file formats and the engine loads
them through its normal path (``config:``/``checkpoint:`` and ``ViT-B-32:/file``).
Prints it/s, the ratio to the fp32 reference, peak GPU memory and the engine's achieved
TFLOP/s against the step's FLOP count; ``--json FILE`` keeps everything.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference
import step_profile

# Engine variants are MODE[:FLAG...]; each flag sets speed options of the recipe.
VARIANT_FLAGS: dict[str, dict[str, Any]] = {
    "cudnn-heuristics": {"cudnn_benchmark": False},  # cuDNN picks by heuristics, not timing
    "channels-last": {"conv_layout": "channels_last"},  # NHWC forced in compiled graphs
}


def parse_variant(variant: str) -> tuple[str | None, dict[str, Any]]:
    """``reduce-overhead:channels-last`` -> (compile mode or None for eager, speed options)."""
    mode, *flags = variant.split(":")
    speed: dict[str, Any] = {}
    for flag in flags:
        if flag not in VARIANT_FLAGS:
            raise SystemExit(f"unknown variant flag {flag!r}; known: {', '.join(VARIANT_FLAGS)}")
        speed.update(VARIANT_FLAGS[flag])
    return (None if mode == "eager" else mode), speed


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak_memory(device: torch.device, out: dict[str, Any]) -> Iterator[None]:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30


def write_random_clip(folder: Path, arch: str = "ViT-B-32") -> Path:
    """open_clip's ``arch`` with random weights, as a safetensors file in ``folder``."""
    import open_clip
    from safetensors.torch import save_file

    clip = open_clip.create_model(arch, pretrained=None)
    path = folder / f"{arch.lower().replace('-', '')}.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    return path


def f16_16384_model_yaml() -> dict[str, Any]:
    """taming's model.yaml of VQGAN imagenet f16-16384, as a mapping."""
    return {
        "model": {
            "base_learning_rate": 4.5e-6,
            "target": "taming.models.vqgan.VQModel",
            "params": {
                **reference.F16_16384_EMBED,
                "ddconfig": reference.F16_16384_DDCONFIG,
                "lossconfig": {
                    "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator"
                },
            },
        }
    }


def write_weights(folder: Path) -> dict[str, Path]:
    """Random VQGAN f16-16384 and ViT-B-32 weights in the real formats."""
    import yaml
    from safetensors.torch import save_file

    from pixgen.models.vqgan import build_vqgan, parse_config

    model_yaml = f16_16384_model_yaml()
    (folder / "model.yaml").write_text(yaml.safe_dump(model_yaml))
    torch.manual_seed(0)
    vqgan = build_vqgan(parse_config(model_yaml))
    save_file(
        {k: v.contiguous() for k, v in vqgan.state_dict().items()},
        str(folder / "vqgan.safetensors"),
    )
    del vqgan
    return {
        "config": folder / "model.yaml",
        "checkpoint": folder / "vqgan.safetensors",
        "clip": write_random_clip(folder),
    }


def time_steps(step: Callable[[], Any], device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps / (time.perf_counter() - start)


def reference_vqgan(
    files: dict[str, Path], size: int, device: torch.device, precision: str, cutouts: int
) -> reference.ReferenceStep:
    import open_clip
    from safetensors.torch import load_file

    from pixgen.models.vqgan import build_vqgan, read_config

    vqgan = build_vqgan(read_config(files["config"]), encoder=False)
    state = load_file(str(files["checkpoint"]))
    vqgan.load_state_dict(
        {k: v for k, v in state.items() if not k.startswith(("encoder.", "quant_conv."))}
    )
    vqgan = vqgan.to(device)
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    clip.load_state_dict(load_file(str(files["clip"])))
    clip = clip.to(device).eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    with torch.no_grad():
        text = clip.encode_text(tokenizer(["a lighthouse in a storm"]).to(device)).float()
    torch.manual_seed(1)
    codebook = vqgan.codebook
    side = size // 16
    z = codebook[torch.randint(codebook.shape[0], (side * side,), device=device)]
    z = z.view(1, side, side, -1).permute(0, 3, 1, 2).contiguous()
    return reference.ReferenceStep(
        vqgan.decoder,
        vqgan.post_quant_conv,
        codebook,
        clip,
        text,
        z,
        cutn=cutouts,
        precision=precision,
    )


class _Timer:
    """An observer plugin that times steps [warmup, warmup + steps) with two syncs, then
    profiles the next ``profile`` steps (so the profiler does not touch the timing)."""

    def __init__(self, device: torch.device, warmup: int, steps: int, profile: int = 0):
        self.device, self.warmup, self.steps, self.profile = device, warmup, steps, profile
        self.start = self.end = 0.0
        self.profiler = step_profile.StepProfiler(device) if profile else None
        self.profile_error: str | None = None

    def run_step(self, ctx: Any, step: int, losses: Any) -> None:  # a pixgen hookimpl
        timed_end = self.warmup + self.steps - 1
        if step == self.warmup - 1:
            sync(self.device)
            self.start = time.perf_counter()
        elif step == timed_end:
            sync(self.device)
            self.end = time.perf_counter()
            self.profiling(lambda profiler: profiler.start())
        elif self.profile and step == timed_end + self.profile:
            self.profiling(lambda profiler: profiler.stop(self.profile))

    def profiling(self, action: Callable[[step_profile.StepProfiler], Any]) -> Any:
        """``action(profiler)``, if profiling; a profiler that fails (no CUPTI, say) costs
        its own figures, not the benchmark's."""
        if self.profiler is None:
            return None
        try:
            return action(self.profiler)
        except Exception as exc:
            self.profile_error = f"{type(exc).__name__}: {exc}"
            self.profiler = None
            return None


def engine_its(
    recipe: dict[str, Any],
    device: torch.device,
    warmup: int,
    steps: int,
    out_dir: Path,
    profile: int = 0,
) -> tuple[float, dict[str, Any]]:
    """The engine's it/s over ``steps`` after ``warmup``, and what else the run says; with
    ``profile`` > 0 also a profile of that many steps after the timed ones."""
    import pixgen
    from pixgen.hookspecs import hookimpl

    hookimpl(_Timer.run_step)
    timer = _Timer(device, warmup, steps, profile)
    started = time.perf_counter()
    result = pixgen.run(
        dict(recipe, steps=warmup + steps + profile), plugins=[timer], quiet=True, output=out_dir
    )
    total = time.perf_counter() - started
    its = steps / (timer.end - timer.start)
    extra: dict[str, Any] = {"notices": result.info.get("notices", []), "wall_s": round(total, 1)}
    summary = timer.profiling(lambda profiler: profiler.summary())
    if summary is not None:
        extra["profile"] = summary
    if timer.profile_error:
        extra["profile_error"] = timer.profile_error
    return its, extra


def bench_recipe(
    files: dict[str, Path],
    size: int,
    device: str,
    cutouts: int,
    compile_mode: str | None,
    speed: dict[str, Any] | None = None,
    generator: str = "vqgan",
) -> dict[str, Any]:
    """The benchmark's recipe: ``generator`` (vqgan or pixel) + ViT-B-32, 32 cutouts."""
    vqgan = {
        "use": "vqgan",
        "config": str(files["config"]),
        "checkpoint": str(files["checkpoint"]),
        "init": "random_codes",
    }
    return {
        "name": f"bench-{generator}-{size}",
        "seed": 1,
        "size": [size, size],
        "device": device,
        "generator": vqgan if generator == "vqgan" else {"use": generator},
        "losses": [
            {
                "use": "clip",
                "models": [f"ViT-B-32:{files['clip']}"],
                "prompts": ["a lighthouse in a storm"],
                "cutouts": cutouts,
                "augment": [],
            }
        ],
        "optimizer": {"name": "adam", "lr": 0.1},
        "speed": {
            "compile": "off" if compile_mode is None else "on",
            **({"mode": compile_mode} if compile_mode else {}),
            **(speed or {}),
        },
    }


def count_flops(step_loss: Callable[[], torch.Tensor]) -> tuple[float, dict[str, float]]:
    """FLOPs of one forward + backward of ``step_loss``: the total, and by kind of work
    (as ``step_profile`` names kernels), to set against the profile's time by kind."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step_loss().backward()
    by_kind: dict[str, float] = {}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        kind = step_profile.flop_kind(str(op))
        by_kind[kind] = by_kind.get(kind, 0.0) + float(flops)
    return float(counter.get_total_flops()), by_kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--cutouts", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile-warmup", type=int, default=15)
    parser.add_argument(
        "--modes",
        default="eager,reduce-overhead",
        help="engine variants: eager, default, reduce-overhead, max-autotune-no-cudagraphs; "
        f"each may end in :FLAG ({', '.join(VARIANT_FLAGS)}), e.g. reduce-overhead:channels-last",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="profile N steps of each engine variant after its timed ones",
    )
    parser.add_argument("--pixel", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = args.modes.split(",")
    if device.type != "cuda":  # a smoke test: compiling on the CPU takes minutes
        modes = [m for m in modes if parse_variant(m)[0] is None] or ["eager"]
    rows: list[dict[str, Any]] = []
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cutouts": args.cutouts,
        "steps": args.steps,
    }
    print(json.dumps(info), flush=True)

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = write_weights(folder)

        def engine_row(
            case: str,
            generator: str,
            size: int,
            mode: str,
            flops: tuple[float, dict[str, float]] | None,
        ) -> dict[str, Any]:
            """One pixgen variant: eager, or compiled in ``mode``."""
            row: dict[str, Any] = {"case": case, "impl": f"pixgen {mode}"}
            compiled, speed = parse_variant(mode)
            warm = args.warmup if compiled is None else args.compile_warmup
            recipe = bench_recipe(
                files, size, args.device, args.cutouts, compiled, speed, generator
            )
            with peak_memory(device, row):
                its, extra = engine_its(
                    recipe,
                    device,
                    warm,
                    args.steps,
                    folder / f"run-{case.replace(' ', '-')}-{mode.replace(':', '-')}",
                    profile=args.profile,
                )
            row.update(its=its, **extra)
            if flops is not None:
                total, by_kind = flops
                row.update(
                    tflop_per_step=total / 1e12,
                    achieved_tflops=total * its / 1e12,
                    tflop_per_step_by_kind={k: v / 1e12 for k, v in by_kind.items()},
                )
            return row

        for size in sizes:
            flops = None
            for precision in ("fp32", "bf16"):
                row: dict[str, Any] = {"case": f"vqgan {size}", "impl": f"reference {precision}"}
                with peak_memory(device, row):
                    ref = reference_vqgan(files, size, device, precision, args.cutouts)
                    row["its"] = time_steps(ref.step, device, args.warmup, args.steps)
                    if flops is None:
                        flops = count_flops(ref.loss)
                row["tflop_per_step"] = flops[0] / 1e12
                emit(row)
                del ref
            for mode in modes:
                emit(engine_row(f"vqgan {size}", "vqgan", size, mode, flops))
        if args.pixel:
            for mode in (m for m in modes if ":" not in m):  # the plain variants only
                emit(engine_row(f"pixel {max(sizes)}", "pixel", max(sizes), mode, None))

    for row in rows:
        if "profile" in row:
            print()
            print(
                step_profile.format_summary(
                    f"{row['case']}, {row['impl']}",
                    row["profile"],
                    row["its"],
                    row.get("tflop_per_step_by_kind"),
                )
            )
    print()
    print(
        f"{'case':<12} {'implementation':<34} {'it/s':>8} {'x ref fp32':>10} "
        f"{'peak GiB':>9} {'TFLOP/s':>8}"
    )
    base: dict[str, float] = {}
    for row in rows:
        if row["impl"] == "reference fp32":
            base[row["case"]] = row["its"]
        ratio = row["its"] / base[row["case"]] if row["case"] in base else float("nan")
        print(
            f"{row['case']:<12} {row['impl']:<34} {row['its']:>8.2f} {ratio:>10.2f} "
            f"{row.get('peak_gib', float('nan')):>9.2f} {row.get('achieved_tflops', float('nan')):>8.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
