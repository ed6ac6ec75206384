"""The whole plugin contract: pluggy hook specifications.

Plugins are modules (or objects) with functions decorated ``@pixgen.hookimpl`` whose
names match the specs below. Built-in plugins enter through the ``pixgen`` entry-point
group exactly like third-party packages; a recipe can also list local ``.py`` files.

Hooks are called with keyword arguments, so an implementation may accept fewer
arguments than its spec and specs can grow without breaking plugins.

Pluggy is used for discovery, set-up and run-level events only. Inside the optimisation
step the engine calls plain methods on plugin objects (see :mod:`pixgen.plugin`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import typer

    from pixgen.context import RunContext
    from pixgen.plugin import Generator, Loss, Output

hookspec = pluggy.HookspecMarker("pixgen")
hookimpl = pluggy.HookimplMarker("pixgen")


# -- registration: plugins hand their classes to a typed registry ----------------------


@hookspec
def register_generators(register: Callable[[type[Generator]], None]) -> None:
    """Register generator classes.

    :param register: call ``register(MyGenerator)`` for each class; its ``name`` is the
        recipe's ``generator: {use: NAME}``. A name taken by another plugin is an error
        that names both sources.
    """


@hookspec
def register_losses(register: Callable[[type[Loss]], None]) -> None:
    """Register loss classes (``losses: [{use: NAME, weight: ...}]`` in a recipe).

    :param register: call ``register(MyLoss)`` for each class.
    """


@hookspec
def register_outputs(register: Callable[[type[Output]], None]) -> None:
    """Register output classes (``outputs: [{use: NAME, ...}]`` in a recipe).

    :param register: call ``register(MyOutput)`` for each class.
    """


@hookspec
def register_commands(cli: typer.Typer) -> None:
    """Add commands to the ``pixgen`` command line.

    :param cli: the root ``typer.Typer`` application; add commands or sub-apps to it.
    """


# -- run lifecycle: observers (logging, progress UIs, web previews) ---------------------


@hookspec
def run_started(ctx: RunContext) -> None:
    """A run has been set up and is about to take its first step.

    :param ctx: the run context (recipe, device, run folder …).
    """


@hookspec
def run_step(ctx: RunContext, step: int, losses: dict[str, Any]) -> None:
    """After each optimisation step. Only called when some plugin implements it, so it
    costs nothing otherwise. Values are device tensors: calling ``float()`` on them
    synchronises with the GPU, so observers should do that sparingly.

    :param ctx: the run context.
    :param step: the step just taken (0-based).
    :param losses: ``{"total": tensor, LABEL: tensor, ...}`` of that step.
    """


@hookspec
def run_finished(ctx: RunContext, result: Any) -> None:
    """The run has ended (completed, early-stopped, interrupted or failed).

    :param ctx: the run context; ``ctx.status`` says how it ended.
    :param result: the :class:`pixgen.engine.RunResult`.
    """
