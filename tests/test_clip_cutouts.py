"""Batched cutouts: one crop/resize call for all cutouts, deterministic, shared per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from clip_fixtures import make_tiny_clip_checkpoint

import pixgen
from pixgen.models import cutouts as cutouts_mod
from pixgen.models.cutouts import CutoutSettings, crop_boxes, make_cutouts


class _Counter:
    def __init__(self, fn: Any):
        self.fn, self.calls = fn, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.fn(*args, **kwargs)


def test_32_cutouts_come_from_one_batched_crop_and_one_warp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crop = _Counter(cutouts_mod.roi_align)
    warp = _Counter(F.grid_sample)
    monkeypatch.setattr(cutouts_mod, "roi_align", crop)
    monkeypatch.setattr(cutouts_mod.F, "grid_sample", warp)
    image = torch.rand(1, 3, 96, 80, requires_grad=True)
    cuts = make_cutouts(image, 32, 32)
    assert cuts.shape == (32, 3, 32, 32)
    assert crop.calls == 1 and warp.calls == 1
    cuts.mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_cutouts_are_deterministic_under_manual_seed() -> None:
    def once() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(11)
        image = torch.rand(1, 3, 64, 64, requires_grad=True)
        cuts = make_cutouts(image, (32, 32), 16)
        (cuts * torch.linspace(0, 1, 32)).sum().backward()
        return cuts.detach(), image.grad

    (a, ga), (b, gb) = once(), once()
    assert torch.equal(a, b) and torch.equal(ga, gb)
    torch.manual_seed(12)
    assert not torch.equal(a, make_cutouts(torch.rand(1, 3, 64, 64), 32, 16))


def test_without_augmentation_a_full_size_crop_is_the_image() -> None:
    image = torch.rand(1, 3, 32, 32)
    cuts = make_cutouts(image, 32, 4, CutoutSettings(augment=()))
    assert torch.allclose(cuts, image.expand(4, -1, -1, -1), atol=1e-6)


def test_crop_sizes_follow_cut_pow() -> None:
    torch.manual_seed(0)
    big = crop_boxes(256, 256, 32, 2000, 0.5, torch.device("cpu"))
    small = crop_boxes(256, 256, 32, 2000, 4.0, torch.device("cpu"))
    size = lambda b: (b[:, 3] - b[:, 1]).mean()  # noqa: E731
    assert size(small) < 100 < size(big)
    for boxes in (big, small):  # inside the image, square, at least the cut size
        assert boxes[:, 1:].min() >= 0 and boxes[:, 3:].max() <= 256
        assert torch.allclose(boxes[:, 3] - boxes[:, 1], boxes[:, 4] - boxes[:, 2])
        assert (boxes[:, 3] - boxes[:, 1]).min() >= 32 - 1e-4


def test_cutouts_stay_in_range_and_differ() -> None:
    torch.manual_seed(1)
    cuts = make_cutouts(torch.rand(1, 3, 64, 64), 32, 8, CutoutSettings(noise=0.0))
    assert cuts.min() >= 0 and cuts.max() <= 1
    assert not torch.equal(cuts[0], cuts[1])


def test_losses_sharing_a_model_input_size_cut_once_per_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = _Counter(cutouts_mod.make_cutouts)
    monkeypatch.setattr(cutouts_mod, "make_cutouts", counter)
    spec = make_tiny_clip_checkpoint(tmp_path)
    other = make_tiny_clip_checkpoint(tmp_path / "b", seed=2)  # same input size: same cutouts
    recipe = {
        "name": "shared",
        "seed": 1,
        "size": [48, 48],
        "steps": 3,
        "device": "cpu",
        "generator": {"use": "pixel", "cells": [12, 12]},
        "losses": [
            {"use": "clip", "models": [spec, other], "prompts": ["a cat"], "cutouts": 8},
            {"use": "clip", "models": [spec], "prompts": ["a red dog"], "cutouts": 8},
        ],
    }
    pixgen.run(recipe, write_files=False)
    assert counter.calls == 3  # one cut per step for three model uses
