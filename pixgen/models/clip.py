"""CLIP models: naming, finding weights, loading once per process, and the weights provider.

A CLIP model is named in one of three ways:

- ``ARCH/PRETRAINED`` (``ViT-B-32/openai``, ``ViT-B-32/laion2b_s34b_b79k``, ``RN50/openai``):
  open_clip's own pretrained registry. The weights are looked for, in order, in pixgen's
  cache (``$PIXGEN_HOME/clip/ARCH/PRETRAINED/``, filled by ``pixgen models import``), in
  the Hugging Face cache open_clip downloads into, and in open_clip's URL cache
  (``~/.cache/clip``); when absent they are fetched through open_clip's downloader unless
  pixgen is offline.
- ``ARCH:/path/to/checkpoint`` (``.safetensors``, ``.bin``, ``.pt``/``.pth`` holding a
  state dict or ``{"state_dict": ...}``): a local file. The architecture comes from
  ``ARCH.json`` beside the file (an open_clip model config, optionally with
  ``preprocess_cfg``), or ``open_clip_config.json`` beside it (the Hugging Face layout),
  or open_clip's registry (built-in names and ``open_clip.add_model_config``).
- ``pixgen/NAME``: a model shipped with pixgen, ``NAME.json`` + ``NAME.safetensors`` in
  one of :func:`bundled_dirs` (the package's ``models/bundled`` folder, plus the folders
  in ``$PIXGEN_BUNDLED_MODELS``).

Every form is built the same way: the open_clip class from its config, then
``open_clip.load_checkpoint`` with ``weights_only=True`` (pickles are never unpickled
freely); a safetensors file may store only some rows of a weight (:data:`ROWS_SUFFIX`).
A loaded model is frozen (``requires_grad_(False)``), in eval mode, on the run's device,
and cached for the process: every loss and command naming it shares one instance.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import json
import logging
import os
import re
import shutil
import threading
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from pixgen.errors import WeightsError
from pixgen.models.weights import WeightsInfo, offline_mode, pixgen_home

if TYPE_CHECKING:
    from pixgen.context import RunContext

DEFAULT_MODEL = "ViT-B-32/openai"
"""The model commands use when ``--model`` is not given."""

DEFAULT_PROMPT_TEMPLATE = "a photo of {}"  # CLIP paper's zero-shot default
BUNDLED_DIRS: list[Path] = [Path(__file__).parent / "bundled"]
"""Folders holding bundled models (``NAME.json`` + ``NAME.safetensors`` -> ``pixgen/NAME``)."""

CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@-]*$")


def bundled_dirs() -> list[Path]:
    """Where bundled models are looked for: ``$PIXGEN_BUNDLED_MODELS`` first, then the package."""
    extra = [Path(p) for p in os.environ.get("PIXGEN_BUNDLED_MODELS", "").split(os.pathsep) if p]
    return [*extra, *BUNDLED_DIRS]


def bundled_models() -> dict[str, tuple[Path, Path]]:
    """``{"pixgen/NAME": (config.json, weights.safetensors)}`` of every bundled model."""
    found: dict[str, tuple[Path, Path]] = {}
    for folder in bundled_dirs():
        if not folder.is_dir():
            continue
        for config in sorted(folder.glob("*.json")):
            weights = config.with_suffix(".safetensors")
            if weights.is_file():
                found.setdefault(f"pixgen/{config.stem}", (config, weights))
    return found


def _open_clip() -> Any:
    import open_clip  # heavy: imported on first use only

    return open_clip


def pretrained_names() -> list[str]:
    """Every ``ARCH/PRETRAINED`` open_clip knows."""
    return [f"{arch}/{tag}" for arch, tag in _open_clip().list_pretrained()]


def _clean_tag(tag: str) -> str:
    return tag.lower().replace("-", "_")  # as open_clip normalises tags


# -- naming --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model name: where its architecture and weights come from."""

    name: str  # canonical name (file paths made absolute)
    source: str  # "pretrained" | "file" | "bundled"
    arch: str
    tag: str | None = None
    checkpoint: Path | None = None
    config_file: Path | None = None


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _known_names() -> list[str]:
    return [*pretrained_names(), *bundled_models(), *weights_provider().imported_names()]


def unknown_model_error(name: str) -> WeightsError:
    """The did-you-mean error for a model name nobody knows."""
    known = _known_names()
    examples = ", ".join(
        n
        for n in ("ViT-B-32/openai", "ViT-B-16/openai", "RN50/openai", "ViT-B-32/laion2b_s34b_b79k")
        if n in known
    )
    return WeightsError(
        f"unknown CLIP model {name!r}.{_did_you_mean(name, known)} Name a model as "
        f"ARCH/PRETRAINED (e.g. {examples}), ARCH:/path/to/checkpoint.safetensors, or a bundled "
        f"pixgen/NAME ({', '.join(bundled_models()) or 'none installed'}). "
        "`pixgen models list` shows them all."
    )


def parse_model_spec(name: str, base_dir: Path | None = None) -> ModelSpec:
    """Parse and check a model name (paths relative to ``base_dir``); unknown names raise."""
    name = name.strip()
    if name.startswith("pixgen/"):
        bundled = bundled_models()
        if name not in bundled:
            raise unknown_model_error(name)
        config, weights = bundled[name]
        return ModelSpec(name, "bundled", name, checkpoint=weights, config_file=config)
    if ":" in name:
        arch, _, raw_path = name.partition(":")
        path = Path(os.path.expanduser(raw_path))
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():
            raise WeightsError(f"CLIP model {name!r}: checkpoint file not found: {path}")
        config = _config_beside(arch, path)
        if config is None and arch not in _open_clip().list_models():
            archs = _open_clip().list_models()
            raise WeightsError(
                f"CLIP model {name!r}: unknown architecture {arch!r}.{_did_you_mean(arch, archs)} "
                f"Put its open_clip config as {path.parent / (arch + '.json')} or name a "
                "built-in architecture (`python -c 'import open_clip; print(open_clip.list_models())'`)."
            )
        return ModelSpec(
            f"{arch}:{path.resolve()}", "file", arch, checkpoint=path.resolve(), config_file=config
        )
    if "/" in name:
        arch, _, tag = name.partition("/")
        tag = _clean_tag(tag)
        canonical = f"{arch}/{tag}"
        oc = _open_clip()
        if oc.is_pretrained_cfg(arch, tag) or weights_provider().imported_checkpoint(arch, tag):
            return ModelSpec(canonical, "pretrained", arch, tag=tag)
        raise unknown_model_error(name)
    if name in _open_clip().list_models():
        tags = _open_clip().list_pretrained_tags_by_model(name)
        some = ", ".join(f"{name}/{t}" for t in tags[:4]) or f"{name}:/path/to/weights.safetensors"
        raise WeightsError(f"CLIP model {name!r}: say which weights, e.g. {some}")
    raise unknown_model_error(name)


def _config_beside(arch: str, checkpoint: Path) -> Path | None:
    for candidate in (
        checkpoint.parent / f"{arch}.json",
        checkpoint.parent / "open_clip_config.json",
    ):
        if candidate.is_file():
            return candidate
    return None


# -- building --------------------------------------------------------------------------------


@dataclass
class _Recipe:
    """Everything needed to build one model."""

    config: dict[str, Any]
    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    quick_gelu: bool = False
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    registry_arch: str | None = None  # set when the config came from open_clip's registry


def _read_config(path: Path) -> _Recipe:
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
    recipe = _Recipe(model_cfg)
    if isinstance(template, str) and "{}" in template:
        recipe.prompt_template = template
    if pre.get("mean"):
        recipe.mean = tuple(float(v) for v in pre["mean"])
    if pre.get("std"):
        recipe.std = tuple(float(v) for v in pre["std"])
    return recipe


def _registry_recipe(arch: str, tag: str | None = None) -> _Recipe:
    oc = _open_clip()
    config = oc.get_model_config(arch)
    if config is None:
        raise WeightsError(
            f"open_clip has no architecture {arch!r}.{_did_you_mean(arch, oc.list_models())}"
        )
    recipe = _Recipe(config, registry_arch=arch)
    if tag:
        pretrained = oc.get_pretrained_cfg(arch, tag)
        recipe.mean = tuple(pretrained.get("mean", OPENAI_MEAN))
        recipe.std = tuple(pretrained.get("std", OPENAI_STD))
        # The OpenAI weights were trained with QuickGELU; open_clip only warns about it.
        recipe.quick_gelu = bool(pretrained.get("quick_gelu", False))
    return recipe


def _instantiate(recipe: _Recipe) -> torch.nn.Module:
    """The open_clip model class for a config, randomly initialised (as open_clip does)."""
    from open_clip.coca_model import CoCa
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = copy.deepcopy(recipe.config)
    if recipe.quick_gelu:
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
    return _open_clip().SimpleTokenizer(context_length=context_length)


def _tokenizer(recipe: _Recipe) -> Any:
    oc = _open_clip()
    if recipe.registry_arch is not None:
        return oc.get_tokenizer(recipe.registry_arch)
    text_cfg = recipe.config.get("text_cfg", {})
    context_length = int(text_cfg.get("context_length", 77))
    if text_cfg.get("hf_tokenizer_name"):
        return oc.tokenizer.HFTokenizer(
            text_cfg["hf_tokenizer_name"],
            context_length=context_length,
            **text_cfg.get("tokenizer_kwargs", {}),
        )
    return _simple_tokenizer(context_length)


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


def _has_row_subsets(checkpoint: Path) -> bool:
    if checkpoint.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    with safe_open(str(checkpoint), "pt") as f:
        names = f.keys()  # a safetensors handle is not iterable itself
    return any(name.endswith(ROWS_SUFFIX) for name in names)


def _load_weights(model: torch.nn.Module, checkpoint: Path, name: str) -> None:
    """``open_clip.load_checkpoint`` with safe unpickling; a safetensors file with row
    subsets (:data:`ROWS_SUFFIX`, written by pixgen, so needing none of open_clip's
    conversions of third-party checkpoints) is expanded and loaded directly. Any failure
    is a clear error."""
    fix = (
        f"Replace the file (`pixgen models remove {name}` then fetch or import it again)"
        if "/" in name and ":" not in name
        else "Check or replace the file"
    )
    try:
        if _has_row_subsets(checkpoint):
            from safetensors.torch import load_file

            state = expand_row_subsets(load_file(str(checkpoint)), model)
            model.load_state_dict(state, strict=True)
        else:
            _open_clip().load_checkpoint(model, str(checkpoint), strict=True, weights_only=True)
    except FileNotFoundError as exc:
        raise WeightsError(f"CLIP model {name!r}: checkpoint file not found: {checkpoint}") from exc
    except (AssertionError, KeyError, RuntimeError) as exc:
        text = str(exc)
        # open_clip asserts on shape changes; torch lists missing/unexpected keys.
        mismatch = not isinstance(exc, RuntimeError) or any(
            s in text for s in ("state_dict", "Missing key", "Unexpected key", "size mismatch")
        )
        if mismatch:
            first = (text.strip().splitlines() or [type(exc).__name__])[0][:300]
            raise WeightsError(
                f"CLIP model {name!r}: {checkpoint} does not fit the {model.__class__.__name__} "
                f"architecture of this name ({first}). {fix}."
            ) from exc
        raise WeightsError(
            f"CLIP model {name!r}: cannot read {checkpoint}: it is truncated or corrupt "
            f"({type(exc).__name__}: {text[:200]}). {fix}."
        ) from exc
    except Exception as exc:  # safetensors/pickle/zip errors: the file is damaged or unsafe
        text = str(exc)
        unsafe = "weights_only" in text or "Unsupported global" in text
        what = (
            "it holds Python objects pixgen will not unpickle (only plain tensors are loaded)"
            if unsafe
            else "it is truncated or corrupt"
        )
        raise WeightsError(
            f"CLIP model {name!r}: cannot read {checkpoint}: {what} "
            f"({type(exc).__name__}: {text[:200]}). {fix}."
        ) from exc


def vision_input_size(model: torch.nn.Module) -> tuple[int, int]:
    """(height, width) of the images an open_clip model's vision tower takes."""
    size = getattr(model.visual, "image_size", 224)
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ClipModel:
    """A frozen open_clip model with its tokenizer and image normalisation.

    Images go in as float ``[N, 3, H, W]`` in [0, 1] at :attr:`input_size`; features come
    out L2-normalised. ``model`` is the open_clip module itself. ``prompt_template`` is how
    a bare label becomes a prompt for this model (``"a photo of {}"`` unless its config
    says otherwise).
    """

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        tokenizer: Any,
        mean: Sequence[float],
        std: Sequence[float],
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    ):
        self.name = name
        self.prompt_template = prompt_template
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        self.input_size = vision_input_size(model)
        # Read once at load time so that scoring never syncs for it.
        self.logit_scale = float(model.logit_scale.detach().float().exp().reshape(-1)[0])
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.detach().float().reshape(-1)[0])

    def __repr__(self) -> str:
        return f"ClipModel({self.name!r}, input_size={self.input_size}, device={self.device})"

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image features of ``[N, 3, h, w]`` images in [0, 1] (differentiable)."""
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        if self.dtype != torch.float32:
            # Frozen bf16 weights run purely in bf16: autocast would re-cast around every
            # LayerNorm and softmax in every step.
            with torch.autocast(x.device.type, enabled=False):
                return self.model.encode_image(x.to(self.dtype), normalize=True)
        if torch.is_autocast_enabled(x.device.type):
            return self.model.encode_image(x, normalize=True)
        return self.model.encode_image(x.to(self.dtype), normalize=True)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised float32 text features ``[len(texts), D]`` (no gradient)."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self.model.encode_text(tokens, normalize=True).float()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """A PIL image as ``[1, 3, h, w]`` in [0, 1]: shortest side resized, centre crop."""
        from pixgen.fileio import pil_to_tensor

        h, w = self.input_size
        rgb = image.convert("RGB")
        scale = max(h / rgb.height, w / rgb.width)
        size = (max(w, round(rgb.width * scale)), max(h, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - w) // 2, (size[1] - h) // 2
        return pil_to_tensor(rgb.crop((left, top, left + w, top + h))).to(self.device)

    @torch.no_grad()
    def encode_pil(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Normalised float32 features of PIL images (no gradient)."""
        batch = torch.cat([self.preprocess(im) for im in images])
        return self.encode_image(batch).float()

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """CLIP's logits: ``logit_scale * cos`` (+ the bias of SigLIP models)."""
        out = self.logit_scale * image_features @ text_features.T
        return out + self.logit_bias if self.logit_bias is not None else out


def _finish(
    name: str,
    model: torch.nn.Module,
    recipe: _Recipe,
    device: torch.device | str,
    dtype: torch.dtype,
) -> ClipModel:
    model = model.to(device=torch.device(device), dtype=dtype)
    return ClipModel(
        name, model, _tokenizer(recipe), recipe.mean, recipe.std, recipe.prompt_template
    )


def _recipe_for(spec: ModelSpec) -> _Recipe:
    if spec.source == "bundled" or (spec.source == "file" and spec.config_file is not None):
        assert spec.config_file is not None
        return _read_config(spec.config_file)
    if spec.source == "file":
        return _registry_recipe(spec.arch)
    provider = weights_provider()
    imported_config = provider.imported_config(spec.arch, spec.tag or "")
    if imported_config is not None:
        recipe = _read_config(imported_config)
        base = _open_clip().get_pretrained_cfg(spec.arch, spec.tag or "")
        recipe.quick_gelu = recipe.quick_gelu or bool(base.get("quick_gelu", False))
        return recipe
    return _registry_recipe(spec.arch, spec.tag)


def _checkpoint_for(spec: ModelSpec, offline: bool) -> Path:
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
    checkpoint = _checkpoint_for(spec, offline)
    key = (spec.name, str(checkpoint), _fingerprint(checkpoint), str(torch.device(device)), dtype)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        recipe = _recipe_for(spec)
        try:
            model = _instantiate(recipe)
        except Exception as exc:  # a config open_clip cannot build
            where = spec.config_file or f"open_clip's config {spec.arch!r}"
            raise WeightsError(
                f"CLIP model {spec.name!r}: cannot build it from {where}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        _load_weights(model, checkpoint, spec.name)
        loaded = _finish(spec.name, model, recipe, device, dtype)
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
    recipe = _registry_recipe(arch)
    recipe.quick_gelu = quick_gelu
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream alone
        if seed is not None:
            torch.manual_seed(seed)
        model = _instantiate(recipe)
    return _finish(f"{arch}/random", model, recipe, device, dtype)


def model_service(ctx: RunContext, name: str) -> ClipModel:
    """The run's shared instance of ``name``: every loss naming it gets the same object."""
    spec = parse_model_spec(name, ctx.recipe_dir)
    return ctx.service(
        ("clip-model", spec.name),
        lambda: load_clip(spec.name, ctx.device, ctx.model_dtype, offline=ctx.offline),
    )


# -- the weights provider --------------------------------------------------------------------


class ClipWeightsProvider:
    """CLIP weights for ``pixgen models``: open_clip's pretrained tags, imports, bundled models."""

    kind = "clip"

    # -- where things are ----------------------------------------------------------------
    @staticmethod
    def home() -> Path:
        return pixgen_home() / "clip"

    def _import_dir(self, arch: str, tag: str) -> Path:
        if not (_SAFE_NAME.match(arch) and _SAFE_NAME.match(tag)):
            raise WeightsError(f"{arch}/{tag}: names may use letters, digits and . _ + @ - only")
        return self.home() / arch / tag

    def imported_checkpoint(self, arch: str, tag: str) -> Path | None:
        """The file ``pixgen models import`` put in pixgen's cache, if any."""
        if not (_SAFE_NAME.match(arch) and _SAFE_NAME.match(tag)):
            return None
        folder = self.home() / arch / tag
        for suffix in CHECKPOINT_SUFFIXES:
            path = folder / f"open_clip_model{suffix}"
            if path.is_file():
                return path
        return None

    def imported_config(self, arch: str, tag: str) -> Path | None:
        path = self.home() / arch / tag / "config.json"
        return path if _SAFE_NAME.match(arch) and _SAFE_NAME.match(tag) and path.is_file() else None

    def imported_names(self) -> list[str]:
        home = self.home()
        if not home.is_dir():
            return []
        return sorted(
            f"{d.parent.name}/{d.name}"
            for d in home.glob("*/*")
            if self.imported_checkpoint(d.parent.name, d.name)
        )

    @staticmethod
    def _hf_candidates(cfg: dict[str, Any]) -> tuple[str, list[str]] | None:
        """The Hugging Face repo and file names open_clip would download for a tag."""
        hub = cfg.get("hf_hub", "")
        if not hub:
            return None
        repo, filename = os.path.split(hub)
        names = []
        if not filename:
            names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        else:
            if filename.endswith((".bin", ".pth")):
                names.append(filename[:-4] + ".safetensors")
            names.append(filename)
        return repo, names

    def _hf_cached(self, cfg: dict[str, Any]) -> Path | None:
        found = self._hf_candidates(cfg)
        if found is None:
            return None
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - open_clip depends on it
            return None
        repo, names = found
        for filename in names:
            hit = try_to_load_from_cache(repo, filename)
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit)
        return None

    @staticmethod
    def _url_cache(cfg: dict[str, Any]) -> Path | None:
        url = cfg.get("url", "")
        return Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url) if url else None

    def searched(self, arch: str, tag: str) -> list[str]:
        """Where the weights of ``arch/tag`` are looked for, in order (for messages)."""
        places = [str(self.home() / arch / tag)]
        cfg = _open_clip().get_pretrained_cfg(arch, tag)
        hf = self._hf_candidates(cfg)
        if hf is not None:
            from huggingface_hub.constants import HF_HUB_CACHE

            places.append(f"{HF_HUB_CACHE}/models--{hf[0].replace('/', '--')} (Hugging Face cache)")
        url_path = self._url_cache(cfg)
        if url_path is not None:
            places.append(str(url_path))
        return places

    def locate(self, arch: str, tag: str) -> Path | None:
        """The checkpoint of ``arch/tag`` on this machine, or None."""
        imported = self.imported_checkpoint(arch, tag)
        if imported is not None:
            return imported
        cfg = _open_clip().get_pretrained_cfg(arch, tag)
        if not cfg:
            return None
        hit = self._hf_cached(cfg)
        if hit is not None:
            return hit
        url_path = self._url_cache(cfg)
        return url_path if url_path is not None and url_path.is_file() else None

    # -- the protocol ----------------------------------------------------------------------
    def owns(self, name: str) -> bool:
        if name.startswith("pixgen/"):
            return name in bundled_models()
        arch, sep, tag = name.partition("/")
        if not sep or ":" in name:
            return False
        tag = _clean_tag(tag)
        return bool(
            _open_clip().is_pretrained_cfg(arch, tag) or self.imported_checkpoint(arch, tag)
        )

    def info(self, name: str) -> WeightsInfo:
        if name.startswith("pixgen/"):
            bundled = bundled_models()
            if name not in bundled:
                raise unknown_model_error(name)
            weights = bundled[name][1]
            return WeightsInfo(
                name,
                self.kind,
                True,
                weights,
                weights.stat().st_size,
                source="bundled with pixgen",
                description="bundled model",
            )
        arch, _, tag = name.partition("/")
        tag = _clean_tag(tag)
        if not self.owns(f"{arch}/{tag}"):
            raise unknown_model_error(name)
        cfg = _open_clip().get_pretrained_cfg(arch, tag)
        path = self.locate(arch, tag)
        hf = self._hf_candidates(cfg) if cfg else None
        source = (f"hf-hub:{hf[0]}" if hf else cfg.get("url")) if cfg else "imported"
        if self.imported_checkpoint(arch, tag):
            source = "imported"
        return WeightsInfo(
            name=f"{arch}/{tag}",
            kind=self.kind,
            present=path is not None,
            path=path if path is not None else self.home() / arch / tag,
            size_bytes=path.stat().st_size if path is not None else None,
            source=source,
            description=f"open_clip {arch}, {tag} weights",
        )

    def entries(self) -> list[WeightsInfo]:
        names = [*pretrained_names()]
        names += [n for n in self.imported_names() if n not in set(names)]
        names += list(bundled_models())
        return [self.info(n) for n in names]

    def fetch(self, name: str, *, progress: bool = True) -> Path:
        """Download through open_clip's own downloader (Hugging Face hub or URL)."""
        spec = parse_model_spec(name)
        if spec.source != "pretrained":
            raise WeightsError(f"{name!r} is not downloadable (it is a {spec.source} model)")
        cfg = _open_clip().get_pretrained_cfg(spec.arch, spec.tag or "")
        if not cfg:
            raise WeightsError(f"{name!r} was imported by hand; open_clip has no download for it")
        _check_reachable(cfg, spec.name, self.missing_message(spec.name))
        try:
            # huggingface_hub logs every retry; the one message that matters is ours.
            with _quiet_logger("huggingface_hub"):
                target = _open_clip().download_pretrained(cfg)
        except Exception as exc:
            raise WeightsError(
                f"could not download CLIP model {spec.name!r}: {type(exc).__name__}: "
                f"{str(exc)[:300]}\n{self.missing_message(spec.name)}"
            ) from exc
        if not target or not Path(target).is_file():
            raise WeightsError(f"open_clip returned no file for {spec.name!r}")
        return Path(target)

    def import_files(self, name: str, files: list[Path]) -> Path:
        """Copy a checkpoint (and optionally its ``.json`` config) into pixgen's cache."""
        arch, sep, tag = name.partition("/")
        if not sep or not arch or not tag or ":" in name:
            raise WeightsError(
                f"import a CLIP model as ARCH/NAME (e.g. ViT-B-32/openai), got {name!r}"
            )
        tag = _clean_tag(tag)
        checkpoints = [Path(f) for f in files if Path(f).suffix in CHECKPOINT_SUFFIXES]
        configs = [Path(f) for f in files if Path(f).suffix == ".json"]
        if (
            len(checkpoints) != 1
            or len(configs) > 1
            or len(files) != len(checkpoints) + len(configs)
        ):
            raise WeightsError(
                f"import {name} takes one checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) "
                "and optionally one .json open_clip config"
            )
        if not configs and arch not in _open_clip().list_models():
            raise WeightsError(
                f"{arch!r} is not an open_clip architecture; add its config: "
                f"`pixgen models import {name} weights.safetensors {arch}.json`"
            )
        check_checkpoint_file(checkpoints[0])
        if configs:
            _read_config(configs[0])  # refuse a bad config now, not at the first run
        folder = self._import_dir(arch, tag)
        if folder.exists():
            shutil.rmtree(folder)
        from pixgen.models.download import copy_into_cache

        dest = folder / f"open_clip_model{checkpoints[0].suffix}"
        copy_into_cache(checkpoints[0], dest)
        if configs:
            copy_into_cache(configs[0], folder / "config.json")
        try:  # a checkpoint that does not fit is refused now, not at the first run
            load_clip(f"{arch}/{tag}", "cpu", offline=True)
        except WeightsError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise WeightsError(f"not imported: {exc.message}") from exc
        finally:
            clear_model_cache()
        return dest

    def remove(self, name: str) -> None:
        if name.startswith("pixgen/"):
            raise WeightsError(f"{name!r} is bundled with pixgen and cannot be removed")
        arch, _, tag = name.partition("/")
        tag = _clean_tag(tag)
        if self.imported_checkpoint(arch, tag):
            shutil.rmtree(self._import_dir(arch, tag))
            return
        path = self.locate(arch, tag)
        if path is None:
            raise WeightsError(f"CLIP model {name!r} is not in the cache; nothing to remove")
        raise WeightsError(
            f"CLIP model {name!r} is in open_clip's download cache ({path}), which pixgen "
            "shares and does not delete; remove it with `huggingface-cli delete-cache` "
            "(or delete the file)"
        )

    def import_usage(self, name: str) -> str:
        return f"{name} open_clip_model.safetensors"

    def accepts_new(self, name: str, files: list[Path]) -> bool:
        arch, sep, tag = name.partition("/")
        if not sep or not tag or ":" in name or name.startswith("pixgen/"):
            return False
        has_ckpt = any(Path(f).suffix in CHECKPOINT_SUFFIXES for f in files)
        has_cfg = any(Path(f).suffix == ".json" for f in files)
        return has_ckpt and (has_cfg or arch in _open_clip().list_models())

    def missing_message(self, name: str, *, offline: bool = False) -> str:
        """Which model, where pixgen looked, and the commands that fix it."""
        arch, _, tag = name.partition("/")
        places = "; ".join(self.searched(arch, tag))
        why = "pixgen is offline, so it will not download them. " if offline else ""
        return (
            f"the weights of CLIP model {name!r} are not on this machine (looked in: {places}). "
            f"{why}Run `pixgen models fetch {name}` on a machine with internet access, or copy "
            f"the checkpoint here and run `pixgen models import {self.import_usage(name)}`."
        )


def check_checkpoint_file(path: Path) -> None:
    """Cheap structural check of a checkpoint (header / zip directory) before importing it."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        elif not zipfile.is_zipfile(path):
            raise ValueError("not a PyTorch zip checkpoint")
    except Exception as exc:
        raise WeightsError(
            f"{path} is not a readable checkpoint (truncated or corrupt?): {exc}"
        ) from exc


def _download_host(cfg: dict[str, Any]) -> str | None:
    from urllib.parse import urlparse

    if cfg.get("hf_hub"):
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        return urlparse(endpoint).hostname
    if cfg.get("url"):
        return urlparse(cfg["url"]).hostname
    return None


def _check_reachable(cfg: dict[str, Any], name: str, hint: str) -> None:
    """Fail at once, with one message, when the download host cannot be reached at all
    (no network), instead of after a minute of retries."""
    import socket

    host = _download_host(cfg)
    if not host:
        return
    try:
        with socket.create_connection((host, 443), timeout=10):
            pass
    except OSError as exc:
        raise WeightsError(
            f"could not download CLIP model {name!r}: cannot reach {host} "
            f"({exc.strerror or exc}).\n{hint}"
        ) from None


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


_PROVIDER: ClipWeightsProvider | None = None


def weights_provider() -> ClipWeightsProvider:
    """The CLIP provider (``pixgen.models.clip:weights_provider`` in the catalogue)."""
    global _PROVIDER
    if _PROVIDER is None:
        _PROVIDER = ClipWeightsProvider()
    return _PROVIDER
