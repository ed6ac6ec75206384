"""Building CLIP models: config, open_clip class, tokenizer, weights; one instance per process.

Every name form (:mod:`pixgen.models.clip.names`) is built the same way: the open_clip
class from its config (:class:`ClipConfig`), then its weights read by
:mod:`pixgen.safeload` (pickles are never unpickled freely) and put in place with
open_clip's own adjustments of third-party layouts; a safetensors file may store only
some rows of a weight (:data:`ROWS_SUFFIX`). A loaded model is frozen
(``requires_grad_(False)``), in eval mode, on the run's device, and cached for the
process: every loss and command naming it shares one instance.
"""

from __future__ import annotations

import copy
import functools
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pixgen import safeload
from pixgen.errors import WeightsError
from pixgen.models.clip.model import DEFAULT_PROMPT_TEMPLATE, ClipModel
from pixgen.models.clip.names import (
    ModelSpec,
    did_you_mean,
    import_open_clip,
    parse_model_spec,
)
from pixgen.models.clip.weights import CHECKPOINT_KIND, weights_provider
from pixgen.models.weights import offline_mode

if TYPE_CHECKING:
    from pixgen.context import RunContext

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


# -- configs ---------------------------------------------------------------------------------


@dataclass
class ClipConfig:
    """Everything needed to build one model: open_clip's model config plus normalisation,
    QuickGELU and the prompt template."""

    config: dict[str, Any]
    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    quick_gelu: bool = False
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    registry_arch: str | None = None  # set when the config came from open_clip's registry


def read_config(path: Path) -> ClipConfig:
    """An open_clip model config file (optionally with ``preprocess_cfg`` and pixgen's
    ``prompt_template``, or Hugging Face's ``{"model_cfg": ...}`` layout)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read the CLIP model config {path}: {exc}") from exc
    model_cfg = data.get("model_cfg", data) if isinstance(data, dict) else None
    if not isinstance(model_cfg, dict) or not all(
        k in model_cfg for k in ("embed_dim", "vision_cfg", "text_cfg")
    ):
        raise WeightsError(
            f"{path} is not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)"
        )
    model_cfg = copy.deepcopy(model_cfg)
    pre = model_cfg.pop("preprocess_cfg", None) or data.get("preprocess_cfg") or {}
    template = model_cfg.pop("prompt_template", None) or data.get("prompt_template")
    config = ClipConfig(model_cfg)
    if isinstance(template, str) and "{}" in template:
        config.prompt_template = template
    if pre.get("mean"):
        config.mean = tuple(float(v) for v in pre["mean"])
    if pre.get("std"):
        config.std = tuple(float(v) for v in pre["std"])
    return config


def registry_config(arch: str, tag: str | None = None) -> ClipConfig:
    """The config of one of open_clip's architectures (and its pretrained tag's settings)."""
    oc = import_open_clip()
    model_cfg = oc.get_model_config(arch)
    if model_cfg is None:
        raise WeightsError(
            f"open_clip has no architecture {arch!r}.{did_you_mean(arch, oc.list_models())}"
        )
    config = ClipConfig(model_cfg, registry_arch=arch)
    if tag:
        pretrained = oc.get_pretrained_cfg(arch, tag)
        config.mean = tuple(pretrained.get("mean", OPENAI_MEAN))
        config.std = tuple(pretrained.get("std", OPENAI_STD))
        # The OpenAI weights were trained with QuickGELU; open_clip only warns about it.
        config.quick_gelu = bool(pretrained.get("quick_gelu", False))
    return config


def config_for(spec: ModelSpec) -> ClipConfig:
    """The config a parsed name is built from: its file, an import's, or open_clip's."""
    if spec.source == "bundled" or (spec.source == "file" and spec.config_file is not None):
        assert spec.config_file is not None
        return read_config(spec.config_file)
    if spec.source == "file":
        return registry_config(spec.arch)
    imported_config = weights_provider().imported_config(spec.arch, spec.tag or "")
    if imported_config is not None:
        config = read_config(imported_config)
        base = import_open_clip().get_pretrained_cfg(spec.arch, spec.tag or "")
        config.quick_gelu = config.quick_gelu or bool(base.get("quick_gelu", False))
        return config
    return registry_config(spec.arch, spec.tag)


# -- building ---------------------------------------------------------------------------------


def instantiate(config: ClipConfig) -> torch.nn.Module:
    """The open_clip model class for a config, randomly initialised (as open_clip does)."""
    from open_clip.coca_model import CoCa
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = copy.deepcopy(config.config)
    if config.quick_gelu:
        cfg["quick_gelu"] = True
    text_cfg, vision_cfg = cfg.get("text_cfg", {}), cfg.get("vision_cfg", {})
    if "timm_model_name" in vision_cfg:
        vision_cfg["timm_model_pretrained"] = False  # our checkpoint has every weight
    hf_text = "hf_model_name" in text_cfg
    if hf_text:
        text_cfg["hf_model_pretrained"] = False
    custom_text = cfg.pop("custom_text", False) or hf_text
    cls = (CoCa if "multimodal_cfg" in cfg else CustomTextCLIP) if custom_text else CLIP
    # Random init must not consume the run's random stream: a run would otherwise cut
    # different crops depending on whether the model was already loaded in this process.
    with torch.random.fork_rng(devices=[]):
        return cls(**cfg)


@functools.lru_cache(maxsize=8)
def _simple_tokenizer(context_length: int) -> Any:
    return import_open_clip().SimpleTokenizer(context_length=context_length)


def tokenizer_for(config: ClipConfig) -> Any:
    """open_clip's tokenizer for a config (the registry's, Hugging Face's, or CLIP's own)."""
    oc = import_open_clip()
    if config.registry_arch is not None:
        return oc.get_tokenizer(config.registry_arch)
    text_cfg = config.config.get("text_cfg", {})
    context_length = int(text_cfg.get("context_length", 77))
    if text_cfg.get("hf_tokenizer_name"):
        return oc.tokenizer.HFTokenizer(
            text_cfg["hf_tokenizer_name"],
            context_length=context_length,
            **text_cfg.get("tokenizer_kwargs", {}),
        )
    return _simple_tokenizer(context_length)


# -- weights ----------------------------------------------------------------------------------

ROWS_SUFFIX = ".rows"
"""A safetensors checkpoint may hold only some rows of a weight ``KEY`` (``[n, ...]``) with
their indices in ``KEY.rows``; every other row is zero. ``pixgen/shapes`` stores its token
embedding so: the captions it was trained on use 45 of the vocabulary's 49,408 tokens, and
the untrained rows would be most of the file."""


def expand_row_subsets(
    state: dict[str, torch.Tensor], model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """``state`` with every ``KEY`` + ``KEY.rows`` pair made the full weight ``model`` has."""
    subsets = [k for k in state if k.endswith(ROWS_SUFFIX)]
    if not subsets:
        return state
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    state = dict(state)
    for rows_key in subsets:
        key = rows_key[: -len(ROWS_SUFFIX)]
        rows, values = state.pop(rows_key), state.get(key)
        if values is None or key not in shapes:
            raise KeyError(f"Unexpected key {rows_key!r}: it names no weight of the model")
        if values.shape[0] != rows.numel() or values.shape[1:] != shapes[key][1:]:
            raise RuntimeError(
                f"size mismatch for {key}: {tuple(values.shape)} rows stored, the model has "
                f"{tuple(shapes[key])}"
            )
        full = values.new_zeros(shapes[key])
        full[rows.long()] = values
        state[key] = full
    return state


def _open_clip_layout(
    model: torch.nn.Module, state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """What ``open_clip.load_checkpoint`` does to a state dict after reading it (reading is
    :mod:`pixgen.safeload`'s): third-party layouts (MobileCLIP), the old text-tower keys,
    scalar/1-d logit scale and bias, stale position ids, resized position embeddings."""
    from open_clip.model import (
        convert_to_custom_text_state_dict,
        resize_pos_embed,
        resize_text_pos_embed,
    )

    if next(iter(state), "").startswith("module."):  # saved from DistributedDataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        from open_clip.convert import convert_state_dict
    except ImportError:  # open_clip before MobileCLIP support: nothing to convert
        pass
    else:
        state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for key in ("logit_scale", "logit_bias"):
        param = getattr(model, key, None)
        if key in state and param is not None and param.ndim != state[key].ndim:
            state[key] = state[key].reshape(param.shape)
    if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None:
        state["logit_bias"] = torch.zeros_like(state["logit_scale"])
    # Text towers of transformers >= 4.31 no longer keep position ids as a buffer.
    state.pop("text.transformer.embeddings.position_ids", None)
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    return state


def load_weights(model: torch.nn.Module, checkpoint: Path, name: str) -> None:
    """Read ``checkpoint`` safely and load it strictly into ``model``; a damaged, unsafe or
    ill-fitting file is one clear error. A safetensors file with row subsets
    (:data:`ROWS_SUFFIX`, written by pixgen, so needing none of open_clip's adjustments of
    third-party checkpoints) is expanded and loaded as it is."""
    try:
        state = safeload.read_state_dict(checkpoint, CHECKPOINT_KIND)
    except safeload.CheckpointError as exc:
        raise type(exc)(f"CLIP model {name!r}: {exc.message}") from None
    try:
        if any(k.endswith(ROWS_SUFFIX) for k in state):
            state = expand_row_subsets(state, model)
        else:
            state = _open_clip_layout(model, state)
        model.load_state_dict(state, strict=True)
    except (AssertionError, KeyError, RuntimeError, ValueError) as exc:
        # open_clip asserts on shape changes; torch lists missing/unexpected keys.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise WeightsError(
            f"CLIP model {name!r}: {checkpoint} does not fit the {model.__class__.__name__} "
            f"architecture of this name ({first}). {CHECKPOINT_KIND.damaged_fix}"
        ) from exc


# -- loading, once per process ----------------------------------------------------------------


def _finish(
    name: str,
    model: torch.nn.Module,
    config: ClipConfig,
    device: torch.device | str,
    dtype: torch.dtype,
) -> ClipModel:
    model = model.to(device=torch.device(device), dtype=dtype)
    return ClipModel(
        name, model, tokenizer_for(config), config.mean, config.std, config.prompt_template
    )


def checkpoint_for(spec: ModelSpec, offline: bool) -> Path:
    """The weights file of a parsed name, fetched on first use unless offline."""
    if spec.checkpoint is not None:
        return spec.checkpoint
    provider = weights_provider()
    found = provider.locate(spec.arch, spec.tag or "")
    if found is not None:
        return found
    if offline_mode(offline):
        raise WeightsError(provider.missing_message(spec.name, offline=True))
    return provider.fetch(spec.name, progress=True)


_CACHE: dict[tuple[Any, ...], ClipModel] = {}
_CACHE_LOCK = threading.Lock()


def _fingerprint(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def load_clip(
    name: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    offline: bool = False,
    base_dir: Path | None = None,
) -> ClipModel:
    """The model called ``name``, loaded once per process (per device and dtype)."""
    spec = parse_model_spec(name, base_dir)
    checkpoint = checkpoint_for(spec, offline)
    key = (spec.name, str(checkpoint), _fingerprint(checkpoint), str(torch.device(device)), dtype)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        config = config_for(spec)
        try:
            model = instantiate(config)
        except Exception as exc:  # a config open_clip cannot build
            where = spec.config_file or f"open_clip's config {spec.arch!r}"
            raise WeightsError(
                f"CLIP model {spec.name!r}: cannot build it from {where}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        load_weights(model, checkpoint, spec.name)
        loaded = _finish(spec.name, model, config, device, dtype)
        _CACHE[key] = loaded
        return loaded


def clear_model_cache() -> None:
    """Forget loaded models (frees their memory once nothing else holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def random_clip_model(
    arch: str = "ViT-B-32",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    quick_gelu: bool = False,
    seed: int | None = 0,
) -> ClipModel:
    """An open_clip architecture with random weights (benchmarks; no files needed)."""
    config = registry_config(arch)
    config.quick_gelu = quick_gelu
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream alone
        if seed is not None:
            torch.manual_seed(seed)
        model = instantiate(config)
    return _finish(f"{arch}/random", model, config, device, dtype)


def model_service(ctx: RunContext, name: str) -> ClipModel:
    """The run's shared instance of ``name``: every loss naming it gets the same object."""
    spec = parse_model_spec(name, ctx.recipe_dir)
    return ctx.service(
        ("clip-model", spec.name),
        lambda: load_clip(spec.name, ctx.device, ctx.model_dtype, offline=ctx.offline),
    )
