"""The engine's speed settings on a CUDA GPU (skipped without one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from clip_fixtures import make_tiny_clip_checkpoint
from vqgan_fixtures import tiny_vqgan_clip_recipe, write_tiny_vqgan

pytestmark = pytest.mark.gpu


class _FlagWatcher:
    """Observer plugin: what torch.backends.cudnn.benchmark was at each step."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def run_step(self, ctx: Any, step: int, losses: Any) -> None:  # a pixgen hookimpl
        self.seen.append(torch.backends.cudnn.benchmark)


@pytest.mark.parametrize("setting", [True, False])
def test_cudnn_benchmark_holds_for_the_run_only(setting: bool) -> None:
    import pixgen
    from pixgen.hookspecs import hookimpl

    hookimpl(_FlagWatcher.run_step)
    watcher = _FlagWatcher()
    recipe = {
        "name": "cudnn",
        "size": [64, 64],
        "steps": 3,
        "device": "cuda",
        "generator": {"use": "image"},
        "losses": [{"use": "smoothness"}],
        "speed": {"compile": "off", "cudnn_benchmark": setting},
    }
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = not setting
    try:
        result = pixgen.run(recipe, plugins=[watcher], write_files=False, quiet=True)
        after = torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = saved
    assert result.status == "completed"
    assert watcher.seen == [setting] * 3
    assert after is (not setting)


class _SyncGuard:
    """Observer plugin: any host synchronisation in steps (first, last] raises."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.guarded: list[int] = []

    def run_step(self, ctx: Any, step: int, losses: Any) -> None:  # a pixgen hookimpl
        if step == self.first:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        elif self.first < step:
            self.guarded.append(step)
            if step == self.last:
                torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("compile", ["off", "on"])
def test_a_vqgan_clip_step_never_waits_for_the_gpu(tmp_path: Path, compile: str) -> None:
    """Render, cutouts, CLIP, loss row, backward, fused Adam and the clamp of z, eager and
    compiled with CUDA graphs: no step synchronises with the host once warmed up."""
    import pixgen
    from pixgen.hookspecs import hookimpl

    hookimpl(_SyncGuard.run_step)
    guard = _SyncGuard(first=4, last=8)
    recipe = tiny_vqgan_clip_recipe(
        write_tiny_vqgan(tmp_path / "vq"),
        make_tiny_clip_checkpoint(tmp_path / "clip"),
        speed={"compile": compile},
        size=[64, 64],
        steps=9,
        device="cuda",
        precision="bf16",
    )
    try:
        result = pixgen.run(recipe, plugins=[guard], write_files=False, quiet=True)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert result.status == "completed"
    assert guard.guarded == [5, 6, 7, 8]
    assert result.info["notices"] == []  # compiled, it stayed compiled
