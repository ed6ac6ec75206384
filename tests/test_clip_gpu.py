"""CLIP on a CUDA GPU: a ViT-B-32 step in bf16 that never waits for the GPU (skipped without one).

The model is ViT-B-32 with random weights saved as a real checkpoint and loaded through the
``ARCH:/path`` door, so the whole path (load, cutouts, loss, autocast) is the real one.
"""

from __future__ import annotations

import time

import pytest
import torch
from clip_fixtures import save_checkpoint

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def vit_b32(tmp_path_factory: pytest.TempPathFactory) -> str:
    from pixgen.models.clip import random_clip_model

    model = random_clip_model("ViT-B-32", "cpu")
    path = save_checkpoint(model.model, tmp_path_factory.mktemp("w") / "vitb32.safetensors")
    return f"ViT-B-32:{path}"  # architecture from open_clip's registry


def recipe(spec: str, steps: int, size: int = 256) -> dict:
    return {
        "name": "gpu",
        "seed": 0,
        "size": [size, size],
        "steps": steps,
        "device": "cuda",
        "precision": "bf16",
        "generator": {"use": "pixel", "cells": [64, 64]},
        "losses": [
            {
                "use": "clip",
                "models": [spec],
                "cutouts": 32,
                "prompts": ["a lighthouse in a storm | blurry:-0.5"],
            }
        ],
        "optimizer": {"name": "adam", "lr": 0.1},
    }


def test_clip_step_has_no_host_sync(vit_b32: str) -> None:
    from pixgen.engine import Engine
    from pixgen.recipe import load_recipe

    engine = Engine(load_recipe(recipe(vit_b32, 10)), write_files=False)
    loss, ctx = engine.losses[0].loss, engine.ctx
    assert loss.models[0].device.type == "cuda"

    def step(n: int) -> torch.Tensor:
        ctx.begin_step(n)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            image = engine.generator()
            terms = loss(image, ctx)
            total = torch.stack(list(terms.values())).sum()
        total.backward()
        return total

    step(0)  # first call: lazy CUDA/cuBLAS set-up and once-per-device constants
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for n in range(1, 4):
            step(n)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


def test_clip_run_on_cuda_in_bf16(vit_b32: str, capsys: pytest.CaptureFixture[str]) -> None:
    import pixgen

    steps = 60
    pixgen.run(recipe(vit_b32, 5), write_files=False)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = pixgen.run(recipe(vit_b32, steps), write_files=False)
    wall = time.perf_counter() - start
    total = result.history["total"]
    assert result.status == "completed" and all(v == v for v in total)
    assert sum(total[-5:]) < sum(total[:5])
    with capsys.disabled():
        print(
            f"\nclip ViT-B-32 bf16, 32 cutouts, 256px: {steps / wall:.1f} steps/s "
            f"({torch.cuda.get_device_name()})"
        )


def test_cutouts_are_batched_and_fast_on_cuda() -> None:
    from pixgen.models.cutouts import make_cutouts

    image = torch.rand(1, 3, 512, 512, device="cuda", requires_grad=True)
    for _ in range(3):
        make_cutouts(image, 224, 32).sum().backward()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        make_cutouts(image, 224, 32).sum().backward()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - start) / 20 * 1000
    print(f"\n32 cutouts 512->224 fwd+bwd: {ms:.2f} ms")
