"""Operations one engine step dispatches, by part: where an eager step's host time goes.

    python benchmarks/step_ops.py --device cpu --size 64

The VQGAN f16-16384 + ViT-B-32 + 32 cutouts recipe of ``bench_step.py`` (random weights in
the real formats) runs through ``pixgen.run``; an observer plugin counts every ATen
operation dispatched during one step after warm-up, split into the VQGAN decoder's
forward, the CLIP image tower's forward, the backward pass, and the rest (generator and
loss glue, optimiser, outputs). The step runs eagerly (``speed: {compile: off}``): on a
GPU each operation is a kernel launch paid in host time, which is what bounds an eager
step; under CUDA graphs the decoder's and CLIP's parts are replays and the rest is what
is still launched one by one. The count depends on the architectures, not on the size.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step


class OpCounter(TorchDispatchMode):
    """Counts dispatched operations by the part of the step they belong to."""

    def __init__(self) -> None:
        super().__init__()
        self.forward_part: list[str] = []  # innermost module being run forward
        self.hooks: list[Any] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self.names: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def part(self) -> str:
        if torch._C._current_autograd_node() is not None:
            return "backward"
        return self.forward_part[-1] if self.forward_part else "rest"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        part = self.part()
        self.counts[part] += 1
        self.names[part][func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    def track(self, module_class: str, name: str) -> None:
        """Count the forward operations of every module of class ``module_class`` as ``name``."""

        def enter(module: torch.nn.Module, *_: Any) -> None:
            if type(module).__name__ == module_class:
                self.forward_part.append(name)

        def leave(module: torch.nn.Module, *_: Any) -> None:
            if type(module).__name__ == module_class:
                self.forward_part.pop()

        self.hooks += [
            torch.nn.modules.module.register_module_forward_pre_hook(enter),
            torch.nn.modules.module.register_module_forward_hook(leave),
        ]

    def remove_hooks(self) -> None:
        for hook in self.hooks:
            hook.remove()


class _CountOneStep:
    """Observer plugin: counts the operations of step ``step`` (from the end of the one before)."""

    def __init__(self, step: int):
        self.step = step
        self.counter = OpCounter()

    def run_step(self, ctx: Any, step: int, losses: Any) -> None:  # a pixgen hookimpl
        if step == self.step - 1:
            self.counter.__enter__()
        elif step == self.step:
            self.counter.__exit__(None, None, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cutouts", type=int, default=32)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--warmup", type=int, default=2, help="steps before the counted one")
    parser.add_argument("--top", type=int, default=12, help="most frequent operations shown")
    args = parser.parse_args(argv)

    import pixgen
    from pixgen.hookspecs import hookimpl

    hookimpl(_CountOneStep.run_step)
    observer = _CountOneStep(args.warmup)
    with tempfile.TemporaryDirectory() as tmp:
        files = bench_step.write_weights(Path(tmp))
        recipe = bench_step.bench_recipe(files, args.size, args.device, args.cutouts, None)
        recipe.update(precision=args.precision, steps=args.warmup + 1)
        # taming's decoder and open_clip's ViT image tower, by class: no loader is patched.
        observer.counter.track("Decoder", "VQGAN decoder forward")
        observer.counter.track("VisionTransformer", "CLIP image tower forward")
        try:
            pixgen.run(recipe, plugins=[observer], quiet=True, output=Path(tmp) / "run")
        finally:
            observer.counter.remove_hooks()

    counts, names = observer.counter.counts, observer.counter.names
    total = sum(counts.values())
    print(
        f"operations dispatched in one step: {total} ({args.device}, {args.size}², "
        f"{args.cutouts} cutouts, {args.precision}, eager)"
    )
    for part, n in counts.most_common():
        top = ", ".join(f"{name} {k}" for name, k in names[part].most_common(args.top))
        print(f"  {n:6d}  {part}: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
