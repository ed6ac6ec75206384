"""Loading VQGAN checkpoints safely, without pytorch-lightning.

Checkpoints are read by :mod:`pixgen.safeload`: ``torch.load(weights_only=True)`` with
the few Lightning classes taming checkpoints name mapped to inert placeholders (and
numpy's scalar constructors allowed) for the duration of the load; any other global is
refused before anything is executed. The state dict then loads strictly into
:class:`~pixgen.models.vqgan.network.VQGAN` (its ``loss.*`` keys, the training losses,
are ignored).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pixgen import safeload
from pixgen.errors import WeightsError
from pixgen.models.vqgan.config import VQGANConfig, read_config
from pixgen.models.vqgan.network import VQGAN, build_vqgan


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


CHECKPOINT_KIND = safeload.FileKind(
    what="VQGAN checkpoint",
    # The largest taming checkpoints (a class-conditional transformer with its VQGAN
    # inside) are about 8 GB; a VQGAN alone is about 1 GB.
    max_bytes=16 * safeload.GiB,
    damaged_fix=(
        "An interrupted copy? Delete it (`pixgen models remove NAME`) and fetch or import it again."
    ),
    unsafe_fix=(
        "pixgen only loads checkpoints whose pickle holds tensors, containers and the few "
        "Lightning classes taming checkpoints use. If you trust the file, convert it to "
        ".safetensors on a machine where you can inspect it."
    ),
    allowed_globals=allowed_globals,
)
"""What the VQGAN loader accepts: tensors, containers, the Lightning placeholders and
numpy scalars, up to 16 GiB."""


def check_checkpoint(path: Path) -> None:
    """Refuse a corrupt or unsafe checkpoint without loading it (cheap, static)."""
    safeload.check_file(path, CHECKPOINT_KIND)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict of a taming checkpoint (``.ckpt``/``.pt``) or a ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"VQGAN checkpoint not found: {path}")
    return safeload.read_state_dict(path, CHECKPOINT_KIND)


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
