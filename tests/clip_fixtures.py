"""Tiny CLIP checkpoints for tests: real open_clip ``CLIP`` instances, real file formats.

No real weights are reachable here, so tests fabricate small randomly initialised models
of the real class and save them the way open_clip checkpoints are saved. They load back
through the same code as real weights (``pixgen.models.clip.load_clip``)::

    from tests.clip_fixtures import make_tiny_clip_checkpoint
    spec = make_tiny_clip_checkpoint(tmp_path)      # "pixgen-tiny-clip:/tmp/.../tiny.safetensors"
    recipe["losses"] = [{"use": "clip", "models": [spec], "prompts": ["a cat"], "cutouts": 8}]

The architecture travels as ``ARCH.json`` beside the checkpoint (an open_clip model
config), which is how ``ARCH:/path`` names find configs that open_clip does not ship.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

TINY_ARCH = "pixgen-tiny-clip"


def tiny_clip_config(
    image_size: int = 32,
    width: int = 32,
    layers: int = 2,
    embed_dim: int = 32,
    context_length: int = 16,
) -> dict[str, Any]:
    """An open_clip model config for a very small ViT CLIP (vocab as the real tokenizer's)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "layers": layers,
            "width": width,
            "head_width": 16,
            "patch_size": 8,
            "mlp_ratio": 2.0,
        },
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": 49408,
            "width": width,
            "heads": max(1, width // 16),
            "layers": layers,
        },
    }


def make_tiny_clip(config: dict[str, Any] | None = None, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised open_clip ``CLIP`` of the tiny config."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(**(config or tiny_clip_config()))


def save_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    """Save as open_clip checkpoints are saved: safetensors, ``.bin`` state dict, or ``.pt``
    with ``{"state_dict": ..., "epoch": ...}`` (as open_clip's training script writes)."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif path.suffix == ".bin":
        torch.save(state, path)
    else:
        torch.save(
            {
                "epoch": 1,
                "name": "tiny",
                "state_dict": {f"module.{k}": v for k, v in state.items()},
            },
            path,
        )
    return path


def make_tiny_clip_checkpoint(
    directory: str | Path,
    *,
    fmt: str = "safetensors",
    arch: str = TINY_ARCH,
    seed: int = 0,
    **config: Any,
) -> str:
    """Write ``ARCH.json`` and a checkpoint (``fmt``: safetensors | bin | pt) into
    ``directory``; returns the model name to use: ``"ARCH:/abs/path/ARCH.fmt"``.

    ``config`` overrides :func:`tiny_clip_config` (``image_size``, ``width``, ``layers`` …).
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = tiny_clip_config(**config)
    (folder / f"{arch}.json").write_text(json.dumps(cfg, indent=2))
    path = save_checkpoint(make_tiny_clip(cfg, seed), folder / f"{arch}.{fmt}")
    return f"{arch}:{path.resolve()}"


def make_bundled_model(
    directory: str | Path, name: str = "tiny", seed: int = 0, **config: Any
) -> Path:
    """A bundled-style model (``NAME.json`` with ``preprocess_cfg`` + ``NAME.safetensors``);
    point ``PIXGEN_BUNDLED_MODELS`` at ``directory`` and load it as ``pixgen/NAME``."""
    folder = Path(directory)
    cfg = tiny_clip_config(**config)
    data = {
        **cfg,
        "preprocess_cfg": {
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "size": cfg["vision_cfg"]["image_size"],
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(data, indent=2))
    save_checkpoint(make_tiny_clip(cfg, seed), folder / f"{name}.safetensors")
    return folder


def write_images(
    directory: str | Path, count: int = 4, size: int = 40, seed: int = 0
) -> list[Path]:
    """``count`` small distinct PNGs (solid colours with noise) for classify/search tests."""
    import numpy as np
    from PIL import Image

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        base = rng.integers(0, 256, size=3)
        pixels = np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
        path = folder / f"img{i:02d}.png"
        Image.fromarray(pixels, "RGB").save(path)
        paths.append(path)
    return paths
