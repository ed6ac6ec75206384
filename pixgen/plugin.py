"""The plugin base classes: what a generator, a loss and an output are.

A plugin is a class with a short ``name``, a one-line docstring and a nested pydantic
``Options`` model (``extra="forbid"``, every field described). The recipe loader
validates the recipe entry against ``Options``; ``pixgen plugins show NAME`` and the
docs print it. Plugins register their classes through the hooks in
:mod:`pixgen.hookspecs`.

Inside the optimisation loop the engine calls these methods directly, in a fixed order
(generator, losses, optimiser, generator.post_step, outputs last); pluggy is only used
for discovery and run-level lifecycle events.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

# Re-exported: plugin authors find the option types beside the base classes.
from pixgen.options import InputFile, NonEmptyStr, PlainName, PluginOptions

if TYPE_CHECKING:
    from pixgen.context import RunContext


class Plugin:
    """What every plugin class has: a name, options and the context it runs in."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    Options: ClassVar[type[PluginOptions]] = PluginOptions

    @classmethod
    def doc(cls) -> str:
        """The class docstring without its indentation (reST marks such as ``x`` kept)."""
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def plain_doc(cls) -> str:
        """The docstring as plain text for the terminal and JSON: docstrings mark code
        reST-style, ``like this``."""
        return cls.doc().replace("``", "")

    @classmethod
    def summary_line(cls) -> str:
        doc = cls.plain_doc()
        return doc.splitlines()[0] if doc else ""


class Generator(nn.Module, Plugin):
    """Owns the parameters that render the image.

    ``forward()`` returns the image as ``[1, 3, H, W]`` float in [0, 1] on the run's device.
    """

    kind: ClassVar[str] = "generator"

    def __init__(self, options: PluginOptions, ctx: RunContext):
        super().__init__()
        self.options = options
        self.ctx = ctx

    def forward(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def supports_init_image(cls) -> bool:
        return cls.init_from_image is not Generator.init_from_image

    def init_from_image(self, image: torch.Tensor) -> None:
        """Set the parameters so that ``forward()`` renders ``image`` ([1, 3, H, W], [0, 1])."""
        raise NotImplementedError(f"generator {self.name!r} cannot start from an image")

    def post_step(self) -> None:
        """Called after each optimiser step (clamps, projections); no host sync please."""

    def parameter_groups(self) -> list[dict[str, Any]] | None:
        """Optional optimiser parameter groups (e.g. per-group lr scale); None = all params."""
        return None


class Loss(Plugin):
    """Scores the image: lower is better.

    ``__call__(image, ctx)`` returns a scalar tensor, or a mapping of named scalar terms
    (summed by the engine; each term is recorded in the loss history). The recipe gives
    the weight (a constant or a schedule); the loss never sees it.
    """

    kind: ClassVar[str] = "loss"

    def __init__(self, options: PluginOptions, ctx: RunContext):
        self.options = options
        self.ctx = ctx

    def __call__(
        self, image: torch.Tensor, ctx: RunContext
    ) -> torch.Tensor | Mapping[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


class Output(Plugin):
    """Records what happens. Must not stall the loop: copy to host asynchronously and
    encode off-thread where work is heavy."""

    kind: ClassVar[str] = "output"

    def __init__(self, options: PluginOptions, ctx: RunContext):
        self.options = options
        self.ctx = ctx

    def on_start(self, ctx: RunContext) -> None:
        """Before the first step (the run folder exists)."""

    def wants(self, step: int) -> bool:
        """Whether ``on_step`` should get the image of ``step``; asked every step, so cheap."""
        return False

    def on_step(self, ctx: RunContext, step: int, image: torch.Tensor) -> None:
        """The image after ``step`` optimiser updates (detached, on the run's device)."""

    def on_finish(self, ctx: RunContext, image: torch.Tensor | None) -> None:
        """After the last step, also on Ctrl-C or failure (``ctx.status`` says which).

        ``image`` is the final image, or None if it could not be rendered."""

    def writes(self) -> list[str]:
        """The names in the run folder this output writes (files or folders), known before
        the run: the engine refuses two outputs that would write the same one."""
        return []

    def summary(self) -> dict[str, Any]:
        """Facts for run.json (files written, frames dropped …)."""
        return {}


__all__ = [
    "Generator",
    "InputFile",
    "Loss",
    "NonEmptyStr",
    "Output",
    "PlainName",
    "Plugin",
    "PluginOptions",
]
