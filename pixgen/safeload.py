"""Safe checkpoint loading: the one place pixgen opens a weights or state file.

Every file is measured and checked before it is read: larger than its kind allows
(:attr:`FileKind.max_bytes`) is refused unread; then its structure must hold (a
safetensors header that fits the file, a torch zip archive's directory, or a legacy
pickle's protocol byte). safetensors files hold tensors only and are loaded as they are.
Torch and Lightning pickles are loaded with ``torch.load(weights_only=True)`` inside a
``torch.serialization.safe_globals`` allow-list of the few extra classes the caller's
kind names (the VQGAN's Lightning placeholders, numpy scalars); a zip archive's pickle is
first scanned statically, so every offending global is named at once. A pickle naming
anything else is refused before any of it runs, as one :class:`UnsafeCheckpoint` that
never repeats torch's advice to load with ``weights_only=False``.

Used by the CLIP and VQGAN loaders (and ``pixgen models import``/``fetch``, ``pixgen
classify --model ARCH:FILE``) and by resume's :func:`pixgen.checkpoint.read_checkpoint`.
"""

from __future__ import annotations

import contextlib
import pickle
import re
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pixgen.errors import WeightsError

GiB = 1 << 30


def _no_extra_globals() -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class FileKind:
    """A kind of file pixgen loads: its size bound, the globals its pickle may name, and
    how its errors read."""

    what: str  # how messages name it: "VQGAN checkpoint", "pixgen checkpoint"
    max_bytes: int  # larger files are refused before a byte is read
    damaged_fix: str = "Check or replace the file."
    unsafe_fix: str = (
        "If you trust the file, convert it to .safetensors on a machine where you can inspect it."
    )
    # Qualified name -> the object it becomes (built on first use: numpy is imported then).
    allowed_globals: Callable[[], Mapping[str, Any]] = field(default=_no_extra_globals)


class CheckpointError(WeightsError):
    """A file that was not loaded: too large, damaged, or unsafe to unpickle."""


class OversizeCheckpoint(CheckpointError):
    """Larger than its kind allows; nothing was read."""


class DamagedCheckpoint(CheckpointError):
    """Truncated, corrupt or another kind of file."""


class UnsafeCheckpoint(CheckpointError):
    """A pickle naming code or classes outside the allow-list; nothing was executed."""


def oversize_error(path: Path, size: int, kind: FileKind) -> OversizeCheckpoint:
    return OversizeCheckpoint(
        f"refused to read {path}: it is {size:,} bytes, more than a {kind.what} can be "
        f"({kind.max_bytes:,} bytes), so none of it was read. Is it the right file?"
    )


def damaged_error(path: Path, kind: FileKind, reason: str) -> DamagedCheckpoint:
    return DamagedCheckpoint(
        f"{path} is damaged or not a {kind.what} (truncated or corrupt, or another kind of "
        f"file: {reason}). {kind.damaged_fix}"
    )


def unsafe_error(path: Path, kind: FileKind, names: Iterable[str]) -> UnsafeCheckpoint:
    listed = ", ".join(sorted(set(names))) or "an object constructor"
    return UnsafeCheckpoint(
        f"refused to load {path}: it names Python objects that are not plain data "
        f"({listed}); loading it could run code from the file, so nothing was executed. "
        f"{kind.unsafe_fix}"
    )


def _reason(exc: BaseException) -> str:
    """An exception as a short detail for a message (one line, at most 200 characters)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:200]


def check_size(path: Path, kind: FileKind) -> None:
    """Refuse a file larger than its kind allows, reading nothing but its size."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"{kind.what} not found: {path}") from None
    except OSError as exc:
        raise damaged_error(path, kind, exc.strerror or _reason(exc)) from None
    if size > kind.max_bytes:
        raise oversize_error(path, size, kind)


def check_file(path: str | Path, kind: FileKind) -> None:
    """The cheap structural check of a file before it is accepted (size, safetensors
    header, zip directory and a static scan of its pickle's globals, or a legacy pickle's
    protocol byte); raises a :class:`CheckpointError` saying what is wrong."""
    path = Path(path)
    check_size(path, kind)
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:  # safetensors checks that the header's offsets fit the file's length
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # safetensors raises its own error types
            raise damaged_error(path, kind, _reason(exc)) from None
        return
    if zipfile.is_zipfile(path):
        with allowlisted(kind):
            try:
                unknown = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            except Exception as exc:
                raise damaged_error(path, kind, _reason(exc)) from None
        if unknown:
            raise unsafe_error(path, kind, unknown)
        return
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK"):  # a zip archive cut short: its directory is at the end
        raise damaged_error(path, kind, "a zip archive without its central directory")
    if not head.startswith(b"\x80"):  # neither a zip nor a pickle's PROTO opcode
        raise damaged_error(path, kind, "not a safetensors or PyTorch file")
    # A legacy (pre-zip) pickle: torch.load(weights_only=True) checks it while loading.


def load_safetensors(path: str | Path, kind: FileKind) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on the CPU."""
    from safetensors.torch import load_file

    path = Path(path)
    check_size(path, kind)
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise damaged_error(path, kind, _reason(exc)) from None


# Markers of torch's weights-only unpickler refusing something (as opposed to a pickle
# cut short): a global outside the allow-list, a call or construction of one.
_REFUSED = re.compile(r"GLOBAL |unrecognized function|Can only (build|create)|allowlisted")
_OFFENDER = re.compile(r"GLOBAL (\S+)|unrecognized function (\S+)")
_LOAD_LOCK = threading.Lock()  # safe_globals edits a process-wide set while active


@contextlib.contextmanager
def allowlisted(kind: FileKind) -> Iterator[None]:
    """torch's weights-only unpickler accepting the kind's extra globals, for this block."""
    pairs = [(obj, name) for name, obj in kind.allowed_globals().items()]
    with _LOAD_LOCK, torch.serialization.safe_globals(pairs):
        yield


def _unpickler_detail(message: str) -> str:
    """What torch's unpickler found, without the advice it wraps around it."""
    parts = [p.strip() for p in message.split("\n\n") if p.strip()]
    plain = [p for p in parts if "weights_only" not in p and "documentation" not in p]
    return (plain[0] if plain else "unreadable pickle").splitlines()[0][:200]


def load_pickle(path: str | Path, kind: FileKind) -> Any:
    """A torch (or Lightning) pickle, checked first, then loaded with
    ``torch.load(weights_only=True)`` and the kind's allow-list, on the CPU."""
    path = Path(path)
    check_file(path, kind)
    with allowlisted(kind):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
        except pickle.UnpicklingError as exc:
            # torch's own message advises weights_only=False, which would run the code.
            message = str(exc)
            if _REFUSED.search(message):
                found = [a or b for a, b in _OFFENDER.findall(message)]
                raise unsafe_error(path, kind, found) from None
            raise damaged_error(
                path, kind, f"UnpicklingError: {_unpickler_detail(message)}"
            ) from None
        except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
            raise damaged_error(path, kind, _reason(exc)) from None


def load(path: str | Path, kind: FileKind) -> Any:
    """Whatever a checkpoint holds: a safetensors file's tensors, or a pickle's object."""
    if Path(path).suffix.lower() == ".safetensors":
        return load_safetensors(path, kind)
    return load_pickle(path, kind)


def read_state_dict(path: str | Path, kind: FileKind) -> dict[str, torch.Tensor]:
    """The parameter tensors a checkpoint holds: the file itself (safetensors, a saved
    ``state_dict``) or its ``"state_dict"`` entry (Lightning and open_clip training
    checkpoints)."""
    obj = load(path, kind)
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(
            f"{path} holds no model state_dict (expected a checkpoint with 'state_dict', "
            "or a mapping of parameter names to tensors). Is it a "
            f"{kind.what}?"
        )
    return dict(state)


__all__ = [
    "CheckpointError",
    "DamagedCheckpoint",
    "FileKind",
    "GiB",
    "OversizeCheckpoint",
    "UnsafeCheckpoint",
    "check_file",
    "check_size",
    "load",
    "load_pickle",
    "load_safetensors",
    "read_state_dict",
]
