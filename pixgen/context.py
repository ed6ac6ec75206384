"""The run context: what plugins may know about the run and the services they share."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

if TYPE_CHECKING:
    from pixgen.recipe import Recipe

T = TypeVar("T")


@dataclass
class RunContext:
    """Handed to every plugin at set-up and to losses and outputs at each step.

    Plugins read the run's settings here and share expensive objects through
    :meth:`service` (one per run, e.g. a loaded CLIP model) and :meth:`per_step` (one per
    step, e.g. the cutouts of this step's image), so two losses never load a model twice
    or cut the same image twice.
    """

    recipe: Recipe
    device: torch.device
    precision: str  # "fp32" | "bf16"
    seed: int
    run_dir: Path | None
    recipe_dir: Path
    offline: bool = False
    step: int = 0
    status: str = "running"  # running | completed | interrupted | early_stopped | failed
    notices: list[str] = field(default_factory=list)
    notice_sink: Callable[[str], None] | None = None
    _services: dict[Any, Any] = field(default_factory=dict)
    _step_cache: dict[Any, Any] = field(default_factory=dict)

    # -- the run's settings --------------------------------------------------------
    @property
    def width(self) -> int:
        return self.recipe.size[0]

    @property
    def height(self) -> int:
        return self.recipe.size[1]

    @property
    def steps(self) -> int:
        return self.recipe.steps

    @property
    def quality(self) -> str | None:
        return self.recipe.quality

    @property
    def progress(self) -> float:
        """Share of the run done, 0.0 at the first step and 1.0 after the last."""
        return min(1.0, self.step / max(1, self.steps))

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None

    @property
    def model_dtype(self) -> torch.dtype:
        """The dtype frozen models run in; autocast handles mixed precision on top."""
        return torch.float32

    # -- shared services -----------------------------------------------------------
    def service(self, key: Any, factory: Callable[[], T]) -> T:
        """The run-wide object under ``key``, created by ``factory`` on first use."""
        if key not in self._services:
            self._services[key] = factory()
        return self._services[key]

    def per_step(self, key: Any, factory: Callable[[], T]) -> T:
        """The object under ``key`` for the current step, created on first use this step."""
        if key not in self._step_cache:
            self._step_cache[key] = factory()
        return self._step_cache[key]

    def begin_step(self, step: int) -> None:
        """Called by the engine before each step."""
        self.step = step
        self._step_cache.clear()

    # -- helpers -------------------------------------------------------------------
    def resolve_path(self, path: str | os.PathLike[str]) -> Path:
        """A path from the recipe, relative to the recipe's folder."""
        p = Path(os.path.expanduser(os.fspath(path)))
        return p if p.is_absolute() else (self.recipe_dir / p)

    def notice(self, message: str) -> None:
        """A one-line notice for the user (shown once, recorded in run.json)."""
        if message in self.notices:
            return
        self.notices.append(message)
        if self.notice_sink is not None:
            self.notice_sink(message)
