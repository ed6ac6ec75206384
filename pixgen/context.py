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


class _CompiledOrEager:
    """torch.compile with a fallback to eager execution if compilation fails."""

    def __init__(self, module: Callable[..., Any], name: str, mode: str, ctx: RunContext):
        self.eager = module
        self.name = name
        self.ctx = ctx
        self.compiled: Callable[..., Any] | None = torch.compile(module, mode=mode, dynamic=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # dynamo/inductor failures of any kind
                self.compiled = None
                first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
                self.ctx.notice(
                    f"{self.name}: torch.compile failed ({type(exc).__name__}: {first}); "
                    "running it uncompiled"
                )
        return self.eager(*args, **kwargs)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.eager, item)


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
        """The dtype frozen models' weights are kept in: bf16 under bf16 precision.

        Model services cast frozen weights once, so autocast does not re-cast them in
        every step; code may also run such a model with autocast off in pure bf16.
        """
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    @property
    def compile_enabled(self) -> bool:
        speed = getattr(self.recipe, "speed", None)
        if speed is None:
            return False
        setting = speed.compile
        if setting == "auto":
            return self.device.type == "cuda"
        return setting == "on"

    def compile_module(self, module: Callable[..., Any], name: str) -> Callable[..., Any]:
        """``module`` compiled as the recipe's ``speed:`` says, or unchanged.

        Model services and generators route their heavy frozen parts through here, so
        the speed policy stays in the engine. A module that fails to compile runs eagerly
        with a one-line notice.
        """
        if not self.compile_enabled:
            return module
        return _CompiledOrEager(module, name, self.recipe.speed.mode, self)

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
