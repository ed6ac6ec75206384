"""The run context: what plugins may know about the run and the services they share."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from pixgen.compiling import CompiledOrEager, describe_error

if TYPE_CHECKING:
    from pixgen.schema import Recipe

T = TypeVar("T")

# ``compile: auto`` compiles runs at least this long. Compilation costs about a minute the
# first time (78 s on an H200 at 512², decoder and CLIP) and saves ~19 ms a step there
# (37 -> 18 ms), so a 300-step run would finish later compiled than eager.
AUTO_COMPILE_MIN_STEPS = 1000


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
    # The step the loop starts from: above 0 when a run is resumed from its checkpoint,
    # so that an output can go on from the files of the steps before.
    start_step: int = 0
    status: str = "running"  # running | completed | interrupted | early_stopped | failed
    notices: list[str] = field(default_factory=list)
    notice_sink: Callable[[str], None] | None = None
    # The run's generator once built: an output may export from it (an SVG of strokes).
    generator: torch.nn.Module | None = None
    # This step's loss values, set after the losses have run and before the outputs' on_step
    # (on_finish sees the last step's): {"total": weighted sum, LABEL: unweighted value,
    # "LABEL/TERM": a term of a loss returning several}. Device tensors: float() on one
    # waits for the GPU, so read them only on the steps an output writes.
    losses: Mapping[str, torch.Tensor] = field(default_factory=dict)
    _services: dict[Any, Any] = field(default_factory=dict)
    _step_cache: dict[Any, Any] = field(default_factory=dict)
    _compiled: list[CompiledOrEager] = field(default_factory=list)

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
            return self.device.type == "cuda" and self.steps >= AUTO_COMPILE_MIN_STEPS
        return setting == "on"

    def compile_module(self, module: Callable[..., Any], name: str) -> Callable[..., Any]:
        """``module`` compiled as the recipe's ``speed:`` says, or unchanged.

        Model services and generators route their heavy frozen parts through here, so
        the speed policy stays in the engine. A module that fails to compile runs eagerly
        with a one-line notice.
        """
        if not self.compile_enabled:
            speed = getattr(self.recipe, "speed", None)
            if speed is not None and speed.compile == "auto" and self.device.type == "cuda":
                self.notice(
                    f"not compiling for a run of {self.steps} steps: compilation takes about "
                    f"a minute and pays back from about {AUTO_COMPILE_MIN_STEPS} steps "
                    "(speed: {compile: on} compiles anyway)"
                )
            return module
        speed = self.recipe.speed
        channels_last = speed.conv_layout == "channels_last"
        compiled = CompiledOrEager(module, name, speed.mode, self.notice, channels_last)
        self._compiled.append(compiled)
        return compiled

    def stop_compiling(self, step: int, error: BaseException) -> bool:
        """Run every compiled module uncompiled from now on, because step ``step`` failed
        with ``error``; False if nothing was running compiled (the error is not compiling's).

        A compiled module's backward is compiled at its first use, in the engine's
        ``backward()``, where the per-module fallback cannot catch it.
        """
        running = [module for module in self._compiled if module.compiled is not None]
        for module in running:
            module.compiled = None
        if running:
            self.notice(
                f"compiled step {step} failed ({describe_error(error)}); running uncompiled"
            )
        return bool(running)

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
