"""What a step spends its time on: a torch.profiler window summed by kind of work.

Used by ``bench_step.py --profile N``, which profiles N steps of each engine variant
after its timed ones (so the profiler's own cost does not touch the it/s figures). On a
GPU it sums the kernels' device time; on the CPU, the operators' own CPU time. The
kinds are guessed from kernel and operator names (cuDNN, cuBLAS/CUTLASS, Triton kernels
that inductor names after what they fuse, ATen's own kernels), so the ``top`` list of
names is kept beside the sums for a reader to check them.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

# First match wins, so the specific names come before the generic ones: cuDNN's layout
# kernels are copies, not convolutions; its convolution kernels contain "gemm".
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("layout copy", ("nchwtonhwc", "nhwctonchw", "transpose", "permute")),
    (
        "convolution",
        ("convol", "conv2d", "conv_", "fprop", "dgrad", "wgrad", "cudnn", "winograd", "im2col"),
    ),
    ("attention", ("flash", "fmha", "attention", "sdpa", "softmax")),
    ("matmul", ("gemm", "cutlass", "cublas", "nvjet", "matmul", "addmm", "bmm", "aten::mm")),
    ("normalisation", ("group_norm", "groupnorm", "layer_norm", "layernorm", "moments")),
    ("cutouts", ("roi_align", "roialign", "upsample", "interpolate")),
    ("optimiser", ("adam", "multi_tensor", "foreach")),
    ("copy / cast", ("copy", "cast", "convert", "clone", "cat", "fill", "memset", "memcpy")),
    ("reduction", ("reduce", "sum", "mean", "norm")),
    ("elementwise", ("elementwise", "vectorized", "pointwise", "aten::")),
)


def kind_of(name: str) -> str:
    lowered = name.lower()
    if lowered.startswith("triton_"):
        # Inductor's kernels are named after what they fuse: triton_poi_fused_add_convolution_3
        # is the bias add after a cuDNN convolution, not a convolution.
        if lowered.startswith("triton_tem"):
            return "convolution" if "convol" in lowered else "matmul"
        if any(norm in lowered for norm in ("group_norm", "layer_norm", "batch_norm")):
            return "normalisation"
        if lowered.startswith(("triton_red", "triton_per")):
            return "reduction (fused)"
        return "elementwise (fused)"
    for kind, needles in KINDS:
        if any(needle in lowered for needle in needles):
            return kind
    return "other"


def flop_kind(op: str) -> str:
    """The kind of an operator named as FlopCounterMode names it (``aten.convolution``)."""
    return kind_of(op.replace("aten.", "aten::", 1))


class StepProfiler:
    """A profiler window opened and closed from inside a run (by an observer plugin)."""

    def __init__(self, device: torch.device):
        self.device = device
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self._profiler = profile(activities=activities)
        self.steps = 0
        self._started = self.wall_s = 0.0

    def start(self) -> None:
        self._profiler.__enter__()
        self._started = time.perf_counter()

    def stop(self, steps: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.wall_s = time.perf_counter() - self._started
        self._profiler.__exit__(None, None, None)
        self.steps = steps

    def timings_us(self) -> Counter[str]:
        """Microseconds by kernel (GPU) or by operator's own CPU time (CPU)."""
        times: Counter[str] = Counter()
        if self.device.type == "cuda":
            for event in self._profiler.events():
                if event.device_type == DeviceType.CUDA:
                    times[event.name] += event.time_range.elapsed_us()
        else:
            for average in self._profiler.key_averages():
                if average.key.startswith("aten::"):
                    times[average.key] += average.self_cpu_time_total
        return times

    def summary(self, top: int = 15) -> dict[str, Any]:
        """Milliseconds per step by kind, the busy total, and the ``top`` names."""
        times = self.timings_us()
        per_step = 1000.0 * max(1, self.steps)
        kinds: Counter[str] = Counter()
        for name, us in times.items():
            kinds[kind_of(name)] += us
        graph_launches = sum(
            1 for event in self._profiler.events() if event.name.startswith("cudaGraphLaunch")
        )
        return {
            "clock": "GPU kernels" if self.device.type == "cuda" else "CPU operators (self)",
            "steps": self.steps,
            "busy_ms_per_step": sum(times.values()) / per_step,
            # Under the profiler, so a little slower than the timed steps.
            "wall_ms_per_step": 1000.0 * self.wall_s / max(1, self.steps),
            "cuda_graph_launches_per_step": graph_launches / max(1, self.steps),
            "ms_per_step_by_kind": {k: us / per_step for k, us in kinds.most_common()},
            "top": [
                {"name": name[:140], "kind": kind_of(name), "ms_per_step": us / per_step}
                for name, us in times.most_common(top)
            ],
        }


def format_summary(
    label: str,
    summary: dict[str, Any],
    its: float | None = None,
    tflop_by_kind: dict[str, float] | None = None,
) -> str:
    """The profile as lines of text; with the step's TFLOP by kind, the rate each reaches."""
    busy = summary["busy_ms_per_step"]
    head = (
        f"{label}: {busy:.2f} ms of {summary['clock']} per step, "
        f"{summary['wall_ms_per_step']:.2f} ms wall per profiled step"
    )
    if its:
        head += f", {1000.0 / its:.2f} ms per timed step"
    lines = [head, f"  CUDA graph launches per step: {summary['cuda_graph_launches_per_step']:g}"]
    for kind, ms in summary["ms_per_step_by_kind"].items():
        line = f"  {ms:8.3f} ms  {100.0 * ms / busy if busy else 0.0:5.1f} %  {kind}"
        tflop = (tflop_by_kind or {}).get(kind)
        if tflop and ms > 0:
            line += f"  ({tflop:.3g} TFLOP, {tflop / (ms / 1000.0):.3g} TFLOP/s)"
        lines.append(line)
    lines.append("  largest:")
    for entry in summary["top"]:
        lines.append(f"  {entry['ms_per_step']:8.3f} ms  [{entry['kind']}] {entry['name']}")
    return "\n".join(lines)
