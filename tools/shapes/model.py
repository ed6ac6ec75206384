"""The ``pixgen/shapes`` model: a small open_clip ``CLIP``, its config and its weight files.

The weights are saved as fp16 safetensors (``shapes.safetensors``) with the config next to
them (``shapes.json``, open_clip's model-config format plus ``preprocess_cfg`` and pixgen's
``prompt_template``), so any program with open_clip can rebuild it: drop those two keys,
``open_clip.model.CLIP(**cfg)``, then ``load_state_dict``. The token embedding is stored
for the caption words' tokens only (``token_embedding.weight`` rows and their indices in
``token_embedding.weight.rows``; every other row is zero): put the rows into a zero
``[vocab_size, width]`` matrix first (:func:`pixgen.models.clip.expand_row_subsets`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

MODEL_NAME = "pixgen-shapes"
IMAGE_SIZE = 64
CONTEXT_LENGTH = 32
# OpenAI CLIP's normalisation, so pixgen's CLIP preprocessing needs no special case.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

# The shipped image tower: open_clip's ModifiedResNet (a list of layers selects it), width
# 24, one bottleneck per stage, 3 M parameters. Convolutions learn shape apart from colour
# on a CPU budget where a ViT does not (benchmarks/RESULTS.md).
RESNET_VISION_CFG: dict[str, Any] = {
    "image_size": IMAGE_SIZE,
    "layers": [1, 1, 1, 1],
    "width": 24,
    "head_width": 32,
}
# The first shipped tower (``train --config vit``): a ViT 64², patch 8, width 192, 5 layers.
# It names colours and positions as well but barely tells shapes apart.
VIT_VISION_CFG: dict[str, Any] = {
    "image_size": IMAGE_SIZE,
    "patch_size": 8,
    "width": 192,
    "layers": 5,
    "head_width": 32,
}
# open_clip model-config format (as in open_clip/model_configs/*.json). The text tower's
# token embedding (49408 x width) dominates the size: text width 96 keeps the fp16 file
# under 16 MiB, the most a device run can hand back in one file. Captions use a few dozen
# words, so a narrow text tower loses little.
SHAPES_MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": RESNET_VISION_CFG,
    "text_cfg": {
        "context_length": CONTEXT_LENGTH,
        "vocab_size": 49408,
        "width": 96,
        "heads": 4,
        "layers": 4,
    },
}
PREPROCESS_CFG: dict[str, Any] = {"mean": list(MEAN), "std": list(STD), "size": IMAGE_SIZE}
# How `pixgen classify` turns a bare label into a prompt: captions here are plain
# descriptions ("a red circle"); CLIP's "a photo of {}" uses words the model never saw.
PROMPT_TEMPLATE = "{}"
TOKEN_EMBEDDING = "token_embedding.weight"


def build_model(config: dict[str, Any] | None = None) -> torch.nn.Module:
    """A freshly initialised ``open_clip.model.CLIP`` (nothing is downloaded)."""
    from open_clip.model import CLIP

    cfg = copy.deepcopy(config or SHAPES_MODEL_CONFIG)
    cfg.pop("preprocess_cfg", None)
    cfg.pop("prompt_template", None)
    return CLIP(**cfg)


_NORM_CACHE: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}


def input_size(model: torch.nn.Module) -> int:
    """The side of the square images ``model``'s vision tower takes."""
    from pixgen.models.clip import vision_input_size

    return vision_input_size(model)[0]


def normalize(images: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """[0, 1] RGB ``[B, 3, H, W]`` -> the model's input (resized to ``size`` if needed)."""
    if images.shape[-1] != size or images.shape[-2] != size:
        images = torch.nn.functional.interpolate(
            images, size=(size, size), mode="bilinear", antialias=True
        )
    key = (images.device, images.dtype)
    if key not in _NORM_CACHE:  # a fresh GPU tensor per call would stall the stream
        mean = torch.tensor(MEAN, dtype=images.dtype)[:, None, None]
        std = torch.tensor(STD, dtype=images.dtype)[:, None, None]
        _NORM_CACHE[key] = (mean.to(images.device), std.to(images.device))
    mean, std = _NORM_CACHE[key]
    return (images - mean) / std


def config_json(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON written next to the weights: model config + ``preprocess_cfg``."""
    cfg = copy.deepcopy(config or SHAPES_MODEL_CONFIG)
    cfg["preprocess_cfg"] = {**PREPROCESS_CFG, "size": cfg["vision_cfg"]["image_size"]}
    cfg["prompt_template"] = PROMPT_TEMPLATE
    return cfg


def save_weights(
    model: torch.nn.Module,
    path: str | Path,
    metadata: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
    token_rows: Sequence[int] | None = None,
) -> Path:
    """Write ``path`` (fp16 safetensors) and its config (``shapes.json`` for ``shapes.safetensors``)
    beside it; returns ``path``. With ``token_rows``, only those rows of the token embedding
    are stored (the tokens training can see; the others never move from their random start)."""
    from safetensors.torch import save_file

    from pixgen.models.clip import ROWS_SUFFIX

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Integer buffers (BatchNorm's step counter) keep their type: fp16 would overflow.
    state = {
        k: v.detach().to("cpu", torch.float16 if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    if token_rows is not None:
        rows = torch.tensor(sorted(set(token_rows)), dtype=torch.int64)
        state[TOKEN_EMBEDDING] = state[TOKEN_EMBEDDING][rows].contiguous()
        state[TOKEN_EMBEDDING + ROWS_SUFFIX] = rows
    meta = {"format": "pt", "model": MODEL_NAME, **(metadata or {})}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.chmod(0o644)  # a package data file: readable by all
    tmp.replace(path)  # atomic: a kill mid-write never leaves a truncated file
    path.with_suffix(".json").write_text(json.dumps(config_json(config), indent=2) + "\n")
    return path


def config_beside(path: str | Path) -> dict[str, Any] | None:
    """The config saved next to weights ``path`` (``shapes.json``), or None if there is none."""
    cfg_path = Path(path).with_suffix(".json")
    return json.loads(cfg_path.read_text()) if cfg_path.exists() else None


def load_weights(path: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Rebuild the model from ``path`` (and its ``.json`` config beside it when present)."""
    from safetensors.torch import load_file

    from pixgen.models.clip import expand_row_subsets

    path = Path(path)
    model = build_model(config_beside(path))
    state = expand_row_subsets(load_file(str(path)), model)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device).eval()
