"""Shared fixtures: every test runs in its own folder, with small images to aim at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in a temp folder with a private weights cache, offline, few threads."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIXGEN_HOME", str(tmp_path / "pixgen-home"))
    monkeypatch.setenv("PIXGEN_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(2)


@pytest.fixture
def target_png(tmp_path: Path) -> Path:
    """A smooth 64×48 picture: a warm disc on a blue-to-green gradient."""
    h, w = 48, 64
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    img[..., 1] = x / w
    img[..., 2] = 1 - y / h
    disc = (x - 40) ** 2 + (y - 20) ** 2 < 12**2
    img[disc] = [0.95, 0.6, 0.2]
    path = tmp_path / "target.png"
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def basic_recipe(target_png: Path) -> dict:
    """A weight-free recipe that runs in well under a second on the CPU."""
    return {
        "name": "basic",
        "seed": 3,
        "size": [64, 48],
        "steps": 20,
        "device": "cpu",
        "generator": {"use": "pixel", "cells": [16, 12]},
        "losses": [
            {"use": "target_image", "image": str(target_png)},
            {"use": "smoothness", "weight": 0.01},
        ],
        "optimizer": {"name": "adam", "lr": 0.2},
    }
