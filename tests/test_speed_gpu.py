"""The engine's speed settings on a CUDA GPU (skipped without one)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

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
