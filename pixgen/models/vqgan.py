"""VQGAN from taming-transformers' own modules, loaded safely, without pytorch-lightning.

The network is assembled from taming's ``Encoder``/``Decoder`` and its quantizers
(``VectorQuantizer2``, ``GumbelQuantize``) under the attribute names of taming's
Lightning ``VQModel``, so the ``state_dict`` of a real ``last.ckpt`` loads strictly
(its ``loss.*`` keys, the training losses, are ignored). Checkpoints are read with
``torch.load(weights_only=True)``: the few Lightning classes such files name are mapped
to inert placeholders for the duration of the load, and any other global is refused
before anything is executed.

Public surface (used by the ``vqgan`` generator, ``pixgen models`` and benchmarks):
:func:`read_config`, :func:`parse_config`, :func:`registry_config`, :func:`build_vqgan`,
:func:`read_checkpoint`, :func:`load_weights`, :func:`load_vqgan`, :func:`vector_quantize`,
:func:`clamp_with_grad`, :func:`check_size`, :func:`load_registry`, :class:`VQGANWeights`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import pickle
import re
import shutil
import sys
import threading
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from pixgen.errors import RecipeError, WeightsError
from pixgen.models.download import (
    DownloadInterrupted,
    DownloadResult,
    copy_into_cache,
    download,
)
from pixgen.models.weights import WeightsInfo, missing_message, offline_mode, pixgen_home

DEFAULT_MODEL = "vqgan_imagenet_f16_16384"
CONFIG_FILE = "model.yaml"
CHECKPOINT_FILES = ("last.ckpt", "model.safetensors")
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
CHECKPOINT_SUFFIXES = (*TORCH_SUFFIXES, ".safetensors")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")

# -- configs --------------------------------------------------------------------------

_VQ_TARGETS = {"VQModel", "VQNoDiscModel", "EMAVQ"}
_GUMBEL_TARGETS = {"GumbelVQ"}
_TRANSFORMER_TARGETS = {"Net2NetTransformer"}  # a VQGAN inside, as ``first_stage_model``
_DDCONFIG_INTS = ("ch", "out_ch", "num_res_blocks", "in_channels", "resolution", "z_channels")


@dataclass(frozen=True)
class VQGANConfig:
    """A VQGAN's architecture, as taming's model.yaml gives it."""

    target: str
    embed_dim: int
    n_embed: int
    ddconfig: Mapping[str, Any]
    gumbel: bool = False
    key_prefix: str = ""  # "first_stage_model." for a checkpoint of a transformer
    source: str = "<config>"

    @property
    def factor(self) -> int:
        """How many pixels one latent position covers, each way (16 for f16)."""
        return 2 ** (len(self.ddconfig["ch_mult"]) - 1)


def read_config(path: str | os.PathLike[str]) -> VQGANConfig:
    """Parse a taming ``model.yaml`` (with ``yaml.safe_load``; no code is imported)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WeightsError(f"VQGAN config not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WeightsError(f"cannot read VQGAN config {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WeightsError(
            f"VQGAN config {path} is not valid YAML ({exc}); is it really taming's model.yaml?"
        ) from None
    return parse_config(data, source=str(path))


def parse_config(data: Any, *, source: str = "<config>") -> VQGANConfig:
    """A :class:`VQGANConfig` from taming's model.yaml structure (``model: {target, params}``)."""

    def bad(what: str) -> WeightsError:
        return WeightsError(
            f"VQGAN config {source}: {what}. Expected taming-transformers' model.yaml format "
            "(model: {target: taming.models.vqgan.VQModel, params: {embed_dim, n_embed, "
            "ddconfig: {...}}})."
        )

    if not isinstance(data, Mapping) or not isinstance(data.get("model"), Mapping):
        raise bad("no 'model' section")
    model = data["model"]
    target = str(model.get("target", ""))
    params = model.get("params")
    if not isinstance(params, Mapping):
        raise bad("'model.params' is missing")
    prefix = ""
    cls = target.rsplit(".", 1)[-1]
    if cls in _TRANSFORMER_TARGETS:
        first = params.get("first_stage_config")
        if not isinstance(first, Mapping) or not isinstance(first.get("params"), Mapping):
            raise bad("a transformer config without 'first_stage_config'")
        target = str(first.get("target", ""))
        params = first["params"]
        cls = target.rsplit(".", 1)[-1]
        prefix = "first_stage_model."
    if cls not in _VQ_TARGETS | _GUMBEL_TARGETS:
        raise bad(f"model.target {target!r} is not a VQGAN (VQModel or GumbelVQ)")
    return _architecture({**params, "target": target}, source=source, key_prefix=prefix, bad=bad)


def _architecture(
    params: Mapping[str, Any], *, source: str, key_prefix: str = "", bad: Any = None
) -> VQGANConfig:
    def default_bad(what: str) -> WeightsError:
        return WeightsError(f"VQGAN architecture {source}: {what}")

    bad = bad or default_bad
    target = str(params.get("target", "taming.models.vqgan.VQModel"))
    if params.get("remap"):
        raise bad("'remap' (a remapped codebook) is not supported")
    ints = {}
    for key in ("embed_dim", "n_embed"):
        value = params.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(f"params.{key} must be a positive integer, got {value!r}")
        ints[key] = value
    dd = params.get("ddconfig")
    if not isinstance(dd, Mapping):
        raise bad("'params.ddconfig' is missing")
    for key in _DDCONFIG_INTS:
        value = dd.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(f"ddconfig.{key} must be a positive integer, got {value!r}")
    for key in ("ch_mult", "attn_resolutions"):
        value = dd.get(key)
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise bad(f"ddconfig.{key} must be a list of integers, got {value!r}")
    if not dd["ch_mult"]:
        raise bad("ddconfig.ch_mult must not be empty")
    gumbel = target.rsplit(".", 1)[-1] in _GUMBEL_TARGETS
    if gumbel and ints["embed_dim"] != dd["z_channels"]:
        raise bad("a Gumbel VQGAN needs embed_dim == ddconfig.z_channels")
    ddconfig = {
        k: (list(v) if isinstance(v, list | tuple) else v)
        for k, v in dd.items()
        if k
        in (
            *_DDCONFIG_INTS,
            "ch_mult",
            "attn_resolutions",
            "dropout",
            "double_z",
            "resamp_with_conv",
            "give_pre_end",
        )
    }
    ddconfig["dropout"] = 0.0  # inference only
    return VQGANConfig(
        target=target,
        embed_dim=ints["embed_dim"],
        n_embed=ints["n_embed"],
        ddconfig=ddconfig,
        gumbel=gumbel,
        key_prefix=key_prefix,
        source=source,
    )


def registry_config(name: str = DEFAULT_MODEL) -> VQGANConfig:
    """The architecture of a named model, from the registry (no download)."""
    registry = load_registry()
    if name not in registry:
        raise WeightsError(f"{name!r} is not in the VQGAN registry ({', '.join(registry)})")
    return _architecture(registry[name].architecture, source=f"registry:{name}")


# -- the network ----------------------------------------------------------------------


class VQGAN(nn.Module):
    """taming's VQModel/GumbelVQ without Lightning or training losses (same state_dict keys)."""

    def __init__(self, config: VQGANConfig, *, encoder: bool = True):
        super().__init__()
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import GumbelQuantize, VectorQuantizer2

        self.config = config
        dd = dict(config.ddconfig)
        z_channels = dd["z_channels"]
        with contextlib.redirect_stdout(io.StringIO()):  # taming's Decoder prints z's shape
            self.encoder = Encoder(**dd) if encoder else None
            self.decoder = Decoder(**dd)
        if config.gumbel:
            self.quantize: nn.Module = GumbelQuantize(
                z_channels, config.embed_dim, n_embed=config.n_embed, kl_weight=1e-8
            )
        else:
            self.quantize = VectorQuantizer2(config.n_embed, config.embed_dim, beta=0.25)
        self.quant_conv = nn.Conv2d(z_channels, config.embed_dim, 1) if encoder else None
        self.post_quant_conv = nn.Conv2d(config.embed_dim, z_channels, 1)

    @property
    def factor(self) -> int:
        return self.config.factor

    @property
    def codebook(self) -> torch.Tensor:
        """``[n_embed, embed_dim]``; for Gumbel models ``quantize.embed``, as VQGAN+CLIP does."""
        if self.config.gumbel:
            return self.quantize.embed.weight  # type: ignore[union-attr]
        return self.quantize.embedding.weight  # type: ignore[union-attr]

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantized latents ``[B, embed_dim, h, w]`` -> image ``[B, 3, H, W]`` in about [-1, 1]."""
        return self.decoder(self.post_quant_conv(z_q))

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image ``[B, 3, H, W]`` in [0, 1] -> nearest-code latents ``[B, embed_dim, h, w]``."""
        if self.encoder is None or self.quant_conv is None:
            raise RuntimeError("this VQGAN was built without its encoder")
        h = self.quant_conv(self.encoder(image.mul(2).sub(1)))
        if self.config.gumbel:
            # Deterministic: the most likely code, where taming samples with Gumbel noise.
            index = self.quantize.proj(h).argmax(1)  # type: ignore[operator]
            return self.codebook[index].permute(0, 3, 1, 2).contiguous()
        return vector_quantize(h, self.codebook)


def build_vqgan(
    config: VQGANConfig,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    encoder: bool = True,
) -> VQGAN:
    """The network with random weights, built on ``device`` (``"meta"`` allocates nothing)."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = VQGAN(config, encoder=encoder)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval().requires_grad_(False)


# -- latents --------------------------------------------------------------------------


def vector_quantize(
    z: torch.Tensor, codebook: torch.Tensor, codebook_sq: torch.Tensor | None = None
) -> torch.Tensor:
    """Snap ``[B, C, h, w]`` latents to their nearest codebook rows; straight-through gradient."""
    with torch.autocast(z.device.type, enabled=False):  # bf16 distances would pick wrong codes
        x = z.movedim(1, 3).float()
        book = codebook.float()
        sq = book.pow(2).sum(1) if codebook_sq is None else codebook_sq
        # |x|^2 is the same for every code, so it does not change the argmin.
        index = (sq - 2 * x @ book.T).argmin(-1)
        x_q = book[index]
        return (x + (x_q - x).detach()).movedim(3, 1)


class _ClampWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        # Pass the gradient where it moves an out-of-range value back towards the range.
        return grad * (grad * (x - x.clamp(ctx.lo, ctx.hi)) >= 0), None, None


def clamp_with_grad(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Clamp whose gradient does not vanish outside the range (as in VQGAN+CLIP)."""
    return _ClampWithGrad.apply(x, lo, hi)


def nearest_valid_sizes(width: int, height: int, factor: int) -> list[tuple[int, int]]:
    """The sizes closest to ``width``×``height`` that are multiples of ``factor``, nearest first."""

    def options(n: int) -> list[int]:
        lo = n // factor * factor
        return [n] if lo == n else [v for v in (lo, lo + factor) if v > 0]

    sizes = [(w, h) for w in options(width) for h in options(height)]
    return sorted(sizes, key=lambda s: (abs(s[0] - width) + abs(s[1] - height), s))


def check_size(width: int, height: int, factor: int, model: str) -> None:
    """Refuse an output size the model cannot render, naming the nearest valid sizes."""
    if width % factor == 0 and height % factor == 0:
        return
    sizes = nearest_valid_sizes(width, height, factor)
    listed = ", ".join(f"[{w}, {h}]" for w, h in sizes)
    raise RecipeError(
        f"size [{width}, {height}] does not suit VQGAN {model}: width and height must be "
        f"multiples of {factor}, its downsampling factor. Nearest valid sizes: {listed} "
        f"(e.g. `size: [{sizes[0][0]}, {sizes[0][1]}]`)."
    )


# -- safe checkpoint loading ----------------------------------------------------------


class LightningPlaceholder:
    """Stands in for a training-time class a checkpoint names: keeps data, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state


class LightningPlaceholderDict(dict):
    """Stands in for Lightning's ``AttributeDict``: a plain dict."""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state


_PLACEHOLDERS: dict[str, type] = {
    f"{pkg}.callbacks.{mod}": LightningPlaceholder
    for pkg in ("pytorch_lightning", "lightning.pytorch")
    for mod in (
        "model_checkpoint.ModelCheckpoint",
        "early_stopping.EarlyStopping",
        "lr_monitor.LearningRateMonitor",
        "progress.ProgressBar",
        "progress.tqdm_progress.TQDMProgressBar",
    )
} | {
    "pytorch_lightning.utilities.parsing.AttributeDict": LightningPlaceholderDict,
    "lightning.fabric.utilities.data.AttributeDict": LightningPlaceholderDict,
}
"""Lightning classes a taming checkpoint may name, mapped to inert placeholders."""


def _numpy_globals() -> dict[str, Any]:
    """numpy's data-only constructors (a monitored score may be a numpy scalar)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return {}
    try:
        from numpy._core.multiarray import scalar  # numpy 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import scalar
    found: dict[str, Any] = {
        "numpy.core.multiarray.scalar": scalar,
        "numpy._core.multiarray.scalar": scalar,
        "numpy.dtype": np.dtype,
    }
    for kind in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_):
        cls = type(np.dtype(kind))
        found[f"{cls.__module__}.{cls.__name__}"] = cls
    return found


def allowed_globals() -> dict[str, Any]:
    """Every non-torch global a checkpoint may name: qualified name -> what it becomes."""
    return {**_PLACEHOLDERS, **_numpy_globals()}


_LOAD_LOCK = threading.Lock()  # safe_globals edits a process-wide set while active
_REFUSED = ("Unsupported global", "unrecognized function", "Can only build", "Can only create")


@contextlib.contextmanager
def _allowlisted() -> Any:
    pairs = [(obj, name) for name, obj in allowed_globals().items()]
    with _LOAD_LOCK, torch.serialization.safe_globals(pairs):
        yield


def _unsafe_error(path: Path, names: Iterable[str]) -> WeightsError:
    listed = ", ".join(sorted(set(names)))
    return WeightsError(
        f"refused to load {path}: it names Python objects that are not plain data "
        f"({listed}); loading it could run code from the file, so nothing was executed. "
        "pixgen only loads checkpoints whose pickle holds tensors, containers and the few "
        "Lightning classes taming checkpoints use. If you trust the file, convert it to "
        ".safetensors on a machine where you can inspect it."
    )


def _corrupt_error(path: Path, exc: BaseException) -> WeightsError:
    return WeightsError(
        f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}. The file is truncated "
        "or corrupt (an interrupted copy?); delete it (`pixgen models remove NAME`) and "
        "fetch or import it again."
    )


def _safe_torch_load(path: Path) -> Any:
    with _allowlisted():
        if zipfile.is_zipfile(path):
            # Static scan of the pickle's globals first: lists every offender at once.
            try:
                unknown = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            except Exception:  # unreadable: let torch.load say what is wrong
                unknown = []
            if unknown:
                raise _unsafe_error(path, unknown)
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
        except pickle.UnpicklingError as exc:
            message = str(exc)
            if any(marker in message for marker in _REFUSED):
                found = re.findall(r"GLOBAL (\S+)", message) or ["an object constructor"]
                raise _unsafe_error(path, found) from None
            raise _corrupt_error(path, exc) from None
        except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
            raise _corrupt_error(path, exc) from None


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict of a taming checkpoint (``.ckpt``/``.pt``) or a ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"VQGAN checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise _corrupt_error(path, exc) from None
    obj = _safe_torch_load(path)
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise WeightsError(
            f"{path} holds no model state_dict (expected a Lightning checkpoint with "
            "'state_dict', or a mapping of parameter names to tensors)."
        )
    return dict(state)


def load_weights(
    model: VQGAN, state_dict: Mapping[str, torch.Tensor], *, source: str = "<checkpoint>"
) -> VQGAN:
    """Load a checkpoint's state dict strictly (``loss.*`` ignored); clear error on mismatch."""
    prefix = model.config.key_prefix
    state = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith("loss.")}
    if model.encoder is None:  # decoder-only build: the encoder half is not needed
        state = {k: v for k, v in state.items() if not k.startswith(("encoder.", "quant_conv."))}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {list(state[k].shape)} (config wants {list(expected[k].shape)})"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", wrong),
        ):
            if items:
                more = f" and {len(items) - 3} more" if len(items) > 3 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
        raise WeightsError(
            f"checkpoint {source} does not fit config {model.config.source}: "
            f"{'; '.join(parts)}. The model.yaml and the checkpoint must come from the same "
            "model; re-fetch or re-import them together."
        )
    on_meta = any(p.is_meta for p in model.parameters())
    model.load_state_dict(state, strict=True, assign=on_meta)
    return model


def load_vqgan(
    config: str | os.PathLike[str] | VQGANConfig,
    checkpoint: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    encoder: bool = True,
) -> VQGAN:
    """Build from a taming config and load a checkpoint: frozen, eval mode, on ``device``."""
    cfg = config if isinstance(config, VQGANConfig) else read_config(config)
    state = read_checkpoint(checkpoint)
    model = build_vqgan(cfg, device="meta", encoder=encoder)
    load_weights(model, state, source=str(checkpoint))
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


# -- the registry ---------------------------------------------------------------------


@dataclass(frozen=True)
class FileSpec:
    urls: tuple[str, ...]
    sha256: str | None = None
    approx_size: int | None = None


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    description: str
    architecture: Mapping[str, Any]
    config: FileSpec
    checkpoint: FileSpec
    origin: str = "built-in"


def load_registry() -> dict[str, RegistryEntry]:
    """The named VQGAN models: the packaged registry plus ``$PIXGEN_VQGAN_REGISTRY`` files."""
    return dict(_load_registry(os.environ.get("PIXGEN_VQGAN_REGISTRY", "")))


@functools.lru_cache(maxsize=8)
def _load_registry(extra: str) -> tuple[tuple[str, RegistryEntry], ...]:
    texts = [("built-in", resources.files("pixgen.models").joinpath("vqgan_registry.yaml"))]
    texts += [(p, Path(p)) for p in extra.split(os.pathsep) if p.strip()]
    entries: dict[str, RegistryEntry] = {}
    for origin, where in texts:
        try:
            data = yaml.safe_load(where.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise WeightsError(f"cannot read VQGAN registry {origin}: {exc}") from None
        models = data.get("models") if isinstance(data, Mapping) else None
        if not isinstance(models, Mapping):
            raise WeightsError(f"VQGAN registry {origin} has no 'models' mapping")
        for name, spec in models.items():
            entries[str(name)] = _registry_entry(str(name), spec, origin)
    return tuple(entries.items())


def _registry_entry(name: str, spec: Any, origin: str) -> RegistryEntry:
    def file_spec(key: str) -> FileSpec:
        raw = (spec.get("files") or {}).get(key) if isinstance(spec, Mapping) else None
        if not isinstance(raw, Mapping) or not raw.get("urls"):
            raise WeightsError(f"VQGAN registry {origin}: {name}.files.{key}.urls is missing")
        mb = raw.get("approx_size_mb")
        return FileSpec(
            urls=tuple(str(u) for u in raw["urls"]),
            sha256=raw.get("sha256") or None,
            approx_size=int(mb * 1_000_000) if mb else None,
        )

    if not _NAME.match(name):
        raise WeightsError(f"VQGAN registry {origin}: bad model name {name!r}")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("architecture"), Mapping):
        raise WeightsError(f"VQGAN registry {origin}: {name}.architecture is missing")
    arch = spec["architecture"]
    _architecture(arch, source=f"registry {origin}: {name}")  # validate early
    return RegistryEntry(
        name=name,
        description=str(spec.get("description", "")),
        architecture=arch,
        config=file_spec("config"),
        checkpoint=file_spec("checkpoint"),
        origin=origin,
    )


# -- the weights provider -------------------------------------------------------------


@dataclass(frozen=True)
class ModelFiles:
    config: Path
    checkpoint: Path


class VQGANWeights:
    """VQGAN weights in ``$PIXGEN_HOME/vqgan/NAME/`` (``model.yaml`` + ``last.ckpt``)."""

    kind = "vqgan"

    def root(self) -> Path:
        return pixgen_home() / "vqgan"

    def folder(self, name: str) -> Path:
        if not _NAME.match(name):
            raise WeightsError(
                f"{name!r} is not a valid model name (letters, digits, '.', '_', '-', '+')"
            )
        return self.root() / name

    def files(self, name: str) -> ModelFiles | None:
        """The cached files of ``name``, or None when not (completely) present."""
        folder = self.folder(name)
        config = folder / CONFIG_FILE
        if not config.is_file():
            return None
        for candidate in CHECKPOINT_FILES:
            if (folder / candidate).is_file():
                return ModelFiles(config, folder / candidate)
        return None

    def owns(self, name: str) -> bool:
        if name in load_registry():
            return True
        return bool(_NAME.match(name)) and (self.root() / name / CONFIG_FILE).is_file()

    def entries(self) -> list[WeightsInfo]:
        names = list(load_registry())
        if self.root().is_dir():
            names += sorted(
                p.name
                for p in self.root().iterdir()
                if p.name not in names and _NAME.match(p.name) and (p / CONFIG_FILE).is_file()
            )
        return [self.info(name) for name in names]

    def info(self, name: str) -> WeightsInfo:
        entry = load_registry().get(name)
        folder = self.folder(name)
        present = self.files(name)
        meta = _read_meta(folder)
        if present:
            size = sum(p.stat().st_size for p in (present.config, present.checkpoint))
            sha = meta.get("checkpoint", {}).get("sha256")
        else:
            size = entry.checkpoint.approx_size if entry else None
            sha = entry.checkpoint.sha256 if entry else None
        return WeightsInfo(
            name=name,
            kind=self.kind,
            present=present is not None,
            path=folder,
            size_bytes=size,
            sha256=sha,
            source=entry.checkpoint.urls[0] if entry else meta.get("source", "imported"),
            description=entry.description if entry else "imported VQGAN",
        )

    def config_for(self, name: str) -> VQGANConfig:
        """The architecture of ``name``: its cached model.yaml, else the registry's copy."""
        present = self.files(name)
        if present is not None:
            return read_config(present.config)
        return registry_config(name)

    def import_usage(self, name: str) -> str:
        return f"{name} model.yaml last.ckpt"

    def accepts_new(self, name: str, files: list[Path]) -> bool:
        suffixes = {Path(f).suffix.lower() for f in files}
        return bool(suffixes & {".yaml", ".yml"}) and bool(suffixes & set(CHECKPOINT_SUFFIXES))

    # -- fetch ---------------------------------------------------------------------
    def fetch(self, name: str, *, progress: bool = True) -> Path:
        entry = load_registry().get(name)
        if entry is None:
            if self.files(name):
                return self.folder(name)
            raise WeightsError(
                f"VQGAN {name!r} was imported, not downloaded, and its files are incomplete; "
                f"import them again: `pixgen models import {self.import_usage(name)}`."
            )
        folder = self.folder(name)
        if self.files(name):
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        meta = _read_meta(folder)
        meta["source"] = entry.origin
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            result = self._fetch_file(name, entry.config, config_path, progress=False)
            try:
                read_config(config_path)
            except WeightsError as exc:  # e.g. an HTML error page served as model.yaml
                config_path.unlink(missing_ok=True)
                raise WeightsError(
                    f"the downloaded config of {name!r} is unusable: {exc}"
                ) from None
            meta["config"] = {"sha256": result.sha256, "url": result.url}
        checkpoint_path = folder / CHECKPOINT_FILES[0]
        result = self._fetch_file(name, entry.checkpoint, checkpoint_path, progress=progress)
        try:
            _scan_checkpoint(checkpoint_path)  # truncated upstream, or unsafe: do not keep it
        except WeightsError as exc:
            checkpoint_path.unlink(missing_ok=True)
            raise WeightsError(
                f"the downloaded checkpoint of {name!r} is unusable and was deleted: {exc}"
            ) from None
        meta["checkpoint"] = {"sha256": result.sha256, "url": result.url}
        _write_meta(folder, meta)
        return folder

    def _fetch_file(self, name: str, spec: FileSpec, dest: Path, *, progress: bool) -> _Fetched:
        errors = []
        for url in spec.urls:
            try:
                result = download(
                    url, dest, sha256=spec.sha256, progress=progress, label=f"{name}/{dest.name}"
                )
            except DownloadInterrupted:
                raise  # keep the .part for this source: rerunning resumes it
            except WeightsError as exc:
                errors.append(str(exc))
                continue
            if spec.sha256 is None:
                _report_checksum(name, dest, result)
            return _Fetched(result.sha256, url)
        raise WeightsError(
            f"could not fetch {name}/{dest.name} from any of its {len(spec.urls)} source(s):\n"
            + "\n".join(f"  - {e}" for e in errors)
            + f"\nOn a machine with access, download the files and run "
            f"`pixgen models import {self.import_usage(name)}`."
        )

    # -- import / remove -----------------------------------------------------------
    def import_files(self, name: str, files: list[Path]) -> Path:
        configs = [f for f in files if f.suffix.lower() in (".yaml", ".yml")]
        checkpoints = [f for f in files if f.suffix.lower() in CHECKPOINT_SUFFIXES]
        others = [str(f) for f in files if f not in configs and f not in checkpoints]
        if len(configs) != 1 or len(checkpoints) != 1 or others:
            raise WeightsError(
                f"importing VQGAN {name!r} takes two files: the model.yaml (.yaml) and the "
                f"checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}); got {', '.join(map(str, files))}. "
                f"Usage: `pixgen models import {self.import_usage(name)}`."
            )
        config = read_config(configs[0])  # refuse a bad config before copying anything
        entry = load_registry().get(name)
        if entry is not None:
            expected = _architecture(entry.architecture, source=f"registry:{name}")
            if (config.n_embed, config.embed_dim, config.factor, config.gumbel) != (
                expected.n_embed,
                expected.embed_dim,
                expected.factor,
                expected.gumbel,
            ):
                raise WeightsError(
                    f"{configs[0]} is not {name}: it describes {config.n_embed} codes of "
                    f"{config.embed_dim} at f={config.factor}, the registry says "
                    f"{expected.n_embed} of {expected.embed_dim} at f={expected.factor}."
                )
        _scan_checkpoint(checkpoints[0])
        folder = self.folder(name)
        ckpt_name = (
            CHECKPOINT_FILES[1]
            if checkpoints[0].suffix.lower() == ".safetensors"
            else CHECKPOINT_FILES[0]
        )
        for stale in CHECKPOINT_FILES:
            if stale != ckpt_name:
                (folder / stale).unlink(missing_ok=True)
        config_sha = copy_into_cache(configs[0], folder / CONFIG_FILE)
        ckpt_sha = copy_into_cache(checkpoints[0], folder / ckpt_name)
        if entry is not None and entry.checkpoint.sha256 and ckpt_sha != entry.checkpoint.sha256:
            (folder / ckpt_name).unlink(missing_ok=True)
            raise WeightsError(
                f"{checkpoints[0]} is not the published {name} checkpoint: sha256 {ckpt_sha}, "
                f"expected {entry.checkpoint.sha256}."
            )
        _write_meta(
            folder,
            {
                "source": f"imported from {checkpoints[0]}",
                "config": {"sha256": config_sha, "file": str(configs[0])},
                "checkpoint": {"sha256": ckpt_sha, "file": str(checkpoints[0])},
            },
        )
        return folder

    def remove(self, name: str) -> None:
        folder = self.folder(name)
        if not folder.exists():
            raise WeightsError(f"VQGAN {name!r} is not in the cache ({folder}); nothing to remove")
        shutil.rmtree(folder)

    # -- for the generator ---------------------------------------------------------
    def ensure(self, name: str, *, offline: bool = False, progress: bool = True) -> ModelFiles:
        """The files of ``name``, fetched on first use unless offline."""
        if not self.owns(name):
            known = ", ".join(info.name for info in self.entries())
            raise WeightsError(
                f"{name!r} is not a VQGAN model pixgen knows (known: {known}). Use one of "
                "those, give `config:` and `checkpoint:` files instead, or register yours "
                f"with `pixgen models import {self.import_usage(name)}`."
            )
        present = self.files(name)
        if present is not None:
            return present
        if offline_mode(offline):
            raise WeightsError(missing_message(self.info(name), self, offline=True))
        self.fetch(name, progress=progress)
        present = self.files(name)
        assert present is not None
        return present


@dataclass(frozen=True)
class _Fetched:
    sha256: str
    url: str


def _scan_checkpoint(path: Path) -> None:
    """Refuse a corrupt or unsafe checkpoint without loading it (cheap, static)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # safetensors raises its own error types
            raise _corrupt_error(path, exc) from None
        return
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            head = handle.read(4)
        if head.startswith(b"PK"):  # a zip missing its directory: cut short
            raise _corrupt_error(path, ValueError("zip archive without its central directory"))
        if not head.startswith(b"\x80"):  # neither zip nor a legacy torch pickle
            raise _corrupt_error(path, ValueError("not a PyTorch checkpoint"))
        return  # legacy pickle: torch.load(weights_only=True) checks it when loading
    with _allowlisted():
        try:
            unknown = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception as exc:
            raise _corrupt_error(path, exc) from None
    if unknown:
        raise _unsafe_error(path, unknown)


def _report_checksum(name: str, dest: Path, result: DownloadResult) -> None:
    sys.stderr.write(
        f"sha256 {result.sha256}  {name}/{dest.name} ({result.size} bytes; the registry has "
        "no checksum for this file, so it could not be verified)\n"
    )


def _read_meta(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "pixgen.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_meta(folder: Path, meta: Mapping[str, Any]) -> None:
    from pixgen.fileio import atomic_write_text

    atomic_write_text(folder / "pixgen.json", json.dumps(meta, indent=2) + "\n")


def weights_provider() -> VQGANWeights:
    """The VQGAN provider (named in :data:`pixgen.models.weights.PROVIDERS`)."""
    return VQGANWeights()


def vqgan_weights() -> VQGANWeights:
    """The VQGAN provider, without loading the other providers (CLIP pulls in open_clip)."""
    return VQGANWeights()


__all__ = [
    "DEFAULT_MODEL",
    "VQGAN",
    "VQGANConfig",
    "VQGANWeights",
    "build_vqgan",
    "check_size",
    "clamp_with_grad",
    "load_registry",
    "load_vqgan",
    "load_weights",
    "nearest_valid_sizes",
    "parse_config",
    "read_checkpoint",
    "read_config",
    "registry_config",
    "vector_quantize",
    "vqgan_weights",
]
