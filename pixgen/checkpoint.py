"""Resume checkpoints: ``checkpoint.pt`` in a run folder, and reading it back.

A checkpoint holds what the loop needs to go on exactly where it stopped: the
generator's ``state_dict()`` (its own parameters and buffers; frozen models such as the
VQGAN decoder are kept out of it), the optimiser's and the lr schedule's state, the
random number generators and the loss history. It is written with ``torch.save`` and
read with ``weights_only=True``, so loading one never runs code; only tensors, numbers,
strings and containers of them go in.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pixgen.errors import PixgenError
from pixgen.fileio import CHECKPOINT, atomic_write_bytes

FORMAT = "pixgen-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """The state of a run after ``step`` steps."""

    step: int
    generator: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    history: dict[str, Any]  # {"columns": [...], "rows": [[total, loss, ...], ...]}
    animation_transforms: int = 0


def rng_state(device: torch.device) -> dict[str, Any]:
    """The random states a step may draw from: torch's (CPU and the run's device) and
    Python's."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "device": None,
    }
    if device.type == "cuda":
        state["device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and state.get("device") is not None:
        torch.cuda.set_rng_state(state["device"], device)


def write_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint.pt`` atomically (the previous one stays until the new is whole)."""
    buffer = io.BytesIO()
    torch.save(
        {
            "format": FORMAT,
            "version": VERSION,
            "step": checkpoint.step,
            "generator": checkpoint.generator,
            "optimizer": checkpoint.optimizer,
            "scheduler": checkpoint.scheduler,
            "rng": checkpoint.rng,
            "history": checkpoint.history,
            "animation_transforms": checkpoint.animation_transforms,
        },
        buffer,
    )
    atomic_write_bytes(run_dir / CHECKPOINT, buffer.getvalue())


def read_checkpoint(path: Path) -> Checkpoint:
    """Load a checkpoint into host memory (``load_state_dict`` moves each part to its
    device); a missing, damaged or foreign file is a :class:`PixgenError` saying which."""
    if not path.is_file():
        raise PixgenError(
            f"{path.parent} has no {CHECKPOINT} to resume from (was it made by a pixgen run, "
            "and did that run finish at least one step?)"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        RuntimeError,
        EOFError,
        ValueError,
        OSError,
    ) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PixgenError(f"{path} is damaged or not a pixgen checkpoint ({reason})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PixgenError(f"{path} is not a pixgen checkpoint")
    if data.get("version") != VERSION:
        raise PixgenError(
            f"{path} is a version {data.get('version')} checkpoint; this pixgen reads "
            f"version {VERSION}"
        )
    try:
        return Checkpoint(
            step=int(data["step"]),
            generator=data["generator"],
            optimizer=data["optimizer"],
            scheduler=data["scheduler"],
            rng=data["rng"],
            history=data["history"],
            animation_transforms=int(data.get("animation_transforms", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PixgenError(f"{path} is an incomplete pixgen checkpoint (no {exc})") from None


def checkpoint_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / CHECKPOINT
