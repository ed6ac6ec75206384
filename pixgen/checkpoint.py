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
import random
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from pixgen import safeload
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
    animation_transforms: int
    # What a resumed run cannot change: seed, size, generator and optimiser names.
    settings: dict[str, Any]


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
    parts = {part.name: getattr(checkpoint, part.name) for part in fields(Checkpoint)}
    torch.save({"format": FORMAT, "version": VERSION, **parts}, buffer)
    atomic_write_bytes(run_dir / CHECKPOINT, buffer.getvalue())


def read_checkpoint(path: Path) -> Checkpoint:
    """Load a checkpoint into host memory (``load_state_dict`` moves each part to its
    device); a missing, damaged or foreign file is a :class:`PixgenError` saying which."""
    if not path.is_file():
        raise PixgenError(
            f"{path.parent} has no {CHECKPOINT} to resume from (a run writes one when it stops "
            "between two steps, and every checkpoint_every steps if its recipe says so)"
        )
    data = safeload.load_pickle(
        path,
        safeload.FileKind(
            what="pixgen checkpoint",
            # Generator and optimiser states: a few MB for most runs, a few GB at most.
            max_bytes=16 * safeload.GiB,
            damaged_fix="Resume from another copy of the run, or start it again.",
            unsafe_fix="A pixgen checkpoint holds only tensors, numbers and strings: "
            "this one is damaged or not a pixgen checkpoint.",
        ),
    )
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PixgenError(f"{path} is not a pixgen checkpoint")
    if data.get("version") != VERSION:
        raise PixgenError(
            f"{path} is a version {data.get('version')} checkpoint; this pixgen reads "
            f"version {VERSION}"
        )
    problem = _problem(data)
    if problem is not None:
        raise PixgenError(f"{path} is damaged: {problem}")
    return Checkpoint(**{part.name: data[part.name] for part in fields(Checkpoint)})


def _problem(data: dict[str, Any]) -> str | None:
    """What is wrong with a loaded checkpoint's structure, or None: checked here so that
    a damaged file is one clear error before the run starts, not a failure inside it."""
    step = data.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        return f"its step is {step!r}, not a count of steps done"
    generator = data.get("generator")
    if not isinstance(generator, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in generator.items()
    ):
        return "its generator state is not a set of named tensors"
    optimizer = data.get("optimizer")
    if (
        not isinstance(optimizer, dict)
        or not isinstance(optimizer.get("state"), dict)
        or not isinstance(optimizer.get("param_groups"), list)
    ):
        return "its optimiser state is incomplete"
    if not isinstance(data.get("scheduler"), dict):
        return "its lr schedule state is missing"
    if not isinstance(data.get("settings"), dict):
        return "its run settings are missing"
    transforms = data.get("animation_transforms")
    if not isinstance(transforms, int) or isinstance(transforms, bool) or transforms < 0:
        return f"its animation count is {transforms!r}"
    history = data.get("history")
    if not isinstance(history, dict):
        return "its loss history is missing"
    columns, rows = history.get("columns"), history.get("rows")
    if not (
        isinstance(columns, list)
        and columns
        and all(isinstance(c, str) for c in columns)
        and isinstance(rows, list)
        and all(
            isinstance(row, list)
            and len(row) <= len(columns)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row)
            for row in rows
        )
    ):
        return "its loss history is malformed"
    if len(rows) != step:
        return f"its loss history has {len(rows)} steps, its step is {step}"
    return _rng_problem(data.get("rng"))


def _rng_problem(rng: Any) -> str | None:
    """Try the random states on throwaway generators: the global ones stay untouched."""
    if not isinstance(rng, dict):
        return "its random state is missing"
    try:
        torch.Generator().set_state(rng["torch"])
        version, internal, gauss = rng["python"]
        random.Random().setstate((version, tuple(internal), gauss))
        device_state = rng.get("device")
        if device_state is not None and not (
            isinstance(device_state, torch.Tensor) and device_state.dtype == torch.uint8
        ):
            raise TypeError("device state")
    except (KeyError, TypeError, ValueError, RuntimeError):
        return "its random state is malformed"
    return None
