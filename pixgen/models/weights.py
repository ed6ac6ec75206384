"""The weights manager: one catalogue of every model pixgen can load, whatever its kind.

Each kind of model (CLIP, VQGAN …) contributes a :class:`WeightsProvider`; ``pixgen
models list|fetch|import|path|remove`` and the loaders go through :func:`catalog`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


def pixgen_home() -> Path:
    """The cache folder: ``$PIXGEN_HOME`` or ``~/.cache/pixgen``."""
    return Path(os.environ.get("PIXGEN_HOME") or Path.home() / ".cache" / "pixgen")


def offline_mode(flag: bool = False) -> bool:
    """True when fetching is forbidden (``--offline`` or ``PIXGEN_OFFLINE=1``)."""
    return flag or os.environ.get("PIXGEN_OFFLINE", "").strip().lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class WeightsInfo:
    name: str
    kind: str  # "clip" | "vqgan" | ...
    present: bool
    path: Path | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    source: str | None = None  # download URL or where it comes from
    description: str = ""


class WeightsProvider(Protocol):
    kind: str

    def owns(self, name: str) -> bool: ...
    def entries(self) -> list[WeightsInfo]: ...
    def info(self, name: str) -> WeightsInfo: ...
    def fetch(self, name: str, *, progress: bool = True) -> Path: ...
    def import_files(self, name: str, files: list[Path]) -> Path: ...
    def remove(self, name: str) -> None: ...
