"""What a run produced, as :func:`pixgen.run` returns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from pixgen.schema import Recipe


@dataclass
class RunResult:
    """What a run produced."""

    image: Image.Image
    run_dir: Path | None
    history: dict[str, Any]
    status: str  # completed | early_stopped | interrupted | failed
    steps_done: int
    seed: int
    recipe: Recipe
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # run.json's content

    @property
    def final_path(self) -> Path | None:
        return self.run_dir / "final.png" if self.run_dir else None
