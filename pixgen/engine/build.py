"""Building a run's plugins from its recipe: the generator, the losses, the outputs, the
optimiser over the generator's parameters, the animator. Each plugin's set-up failure
names the plugin."""

from __future__ import annotations

import torch

from pixgen.animation import Animator
from pixgen.context import RunContext
from pixgen.engine.blame import blame
from pixgen.engine.optim import make_optimizer
from pixgen.engine.step import LossSlot
from pixgen.errors import PluginRunError, RecipeError
from pixgen.fileio import RUN_FOLDER_FILES
from pixgen.plugin import Generator, Output
from pixgen.plugins import PluginInfo, PluginSet
from pixgen.schema import Recipe
from pixgen.steps import ScheduleFn


def build_generator(
    recipe: Recipe, plugins: PluginSet, ctx: RunContext
) -> tuple[Generator, PluginInfo]:
    entry = recipe.generator
    info = plugins.registry.get(entry.use, "generator")
    with blame(info, "set-up"):
        generator = info.cls(entry.options, ctx)  # type: ignore[call-arg]
        generator.to(ctx.device)  # type: ignore[attr-defined]
    return generator, info  # type: ignore[return-value]


def build_losses(recipe: Recipe, plugins: PluginSet, ctx: RunContext) -> list[LossSlot]:
    """The losses in recipe order, labelled (a label used twice gets ``#2``, ``#3``)."""
    slots: list[LossSlot] = []
    seen: dict[str, int] = {}
    for entry in recipe.losses:
        info = plugins.registry.get(entry.use, "loss")
        with blame(info, "set-up"):
            loss = info.cls(entry.options, ctx)  # type: ignore[call-arg]
        label = entry.label or entry.use
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}#{seen[label]}"
        slots.append(LossSlot(label, loss, info, ScheduleFn(entry.weight, recipe.steps)))  # type: ignore[arg-type]
    return slots


def build_outputs(
    recipe: Recipe, plugins: PluginSet, ctx: RunContext
) -> list[tuple[Output, PluginInfo]]:
    built: list[tuple[Output, PluginInfo]] = []
    for entry in recipe.outputs:
        info = plugins.registry.get(entry.use, "output")
        with blame(info, "set-up"):
            built.append((info.cls(entry.options, ctx), info))  # type: ignore[call-arg, arg-type]
    check_output_names(built)
    return built


def check_output_names(outputs: list[tuple[Output, PluginInfo]]) -> None:
    """No two outputs write the same name, and none writes one of the engine's files."""
    writer_of: dict[str, str] = {name: "the run itself" for name in RUN_FOLDER_FILES}
    for index, (output, info) in enumerate(outputs):
        who = f"outputs[{index}] ({info.name})"
        with blame(info, "writes()"):
            names = output.writes()
        for name in dict.fromkeys(names):
            if name in writer_of:
                raise RecipeError(
                    f"{who} would write {name}, which {writer_of[name]} writes too; "
                    "give it another file or folder name"
                )
            writer_of[name] = who


def build_optimizer(
    recipe: Recipe, generator: Generator, info: PluginInfo, device: torch.device
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The recipe's optimiser over the generator's parameters (or its parameter groups)."""
    groups = generator.parameter_groups()
    params = (
        groups if groups is not None else [p for p in generator.parameters() if p.requires_grad]
    )
    if not params:
        raise PluginRunError(
            f"generator {info.name!r} ({info.file}) has no trainable parameters "
            "(nn.Parameter attributes) for the optimiser to change"
        )
    return make_optimizer(params, recipe.optimizer, recipe.steps, device)


def build_animator(recipe: Recipe, generator: Generator) -> Animator | None:
    config = recipe.animation
    if config is None:
        return None
    if not type(generator).supports_init_image():
        raise RecipeError(
            f"{recipe.origin}: animation needs a generator that can start from an "
            f"image; {recipe.generator.use!r} cannot (use pixel, image or vqgan)"
        )
    return Animator(config, recipe.steps)
