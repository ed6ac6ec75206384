"""Resume state: writing ``checkpoint.pt`` between steps and putting a run back as its
checkpoint has it. The file format is :mod:`pixgen.checkpoint`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pixgen.animation import Animator
from pixgen.checkpoint import CHECKPOINT, Checkpoint, rng_state, write_checkpoint
from pixgen.engine.blame import telling_line
from pixgen.engine.history import LossHistory
from pixgen.engine.optim import restore_schedule
from pixgen.errors import PixgenError
from pixgen.plugin import Generator
from pixgen.schema import Recipe


def fixed_settings(recipe: Recipe, seed: int) -> dict[str, Any]:
    """What a resumed run must keep from the run it goes on with."""
    return {
        "seed": seed,
        "size": list(recipe.size),
        "generator": recipe.generator.use,
        "optimizer": recipe.optimizer.name,
    }


def restore(
    checkpoint: Checkpoint,
    recipe: Recipe,
    seed: int,
    generator: Generator,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    animator: Animator | None,
) -> None:
    """Put the generator, optimiser and lr schedule back as the checkpoint has them.

    The optimiser's per-parameter state (Adam's moments) comes from the checkpoint; its
    settings (lr, betas, weight decay, momentum) from the recipe, so that an edited
    recipe.yaml takes effect from the resumed step on. The random states are restored
    later, just before the first step (:func:`pixgen.checkpoint.set_rng_state`).
    """
    where = f"{CHECKPOINT} (step {checkpoint.step})"
    now = fixed_settings(recipe, seed)
    for key, then in checkpoint.settings.items():
        if key in now and now[key] != then:
            raise PixgenError(
                f"recipe.yaml's {key} is {now[key]!r}, but the run was painted with "
                f"{then!r}; a resumed run keeps its seed, size, generator and optimiser"
            )
    try:
        generator.load_state_dict(checkpoint.generator)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise PixgenError(
            f"{where} does not fit the generator of this recipe ({telling_line(exc)}); "
            "was recipe.yaml changed?"
        ) from None
    fresh = optimizer.state_dict()["param_groups"]
    saved = checkpoint.optimizer["param_groups"]
    try:
        if len(saved) != len(fresh) or any(
            len(a.get("params", ())) != len(b["params"]) for a, b in zip(saved, fresh, strict=True)
        ):
            raise ValueError("its parameter groups differ")
        optimizer.load_state_dict({"state": checkpoint.optimizer["state"], "param_groups": fresh})
        scheduler.load_state_dict(checkpoint.scheduler)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise PixgenError(
            f"{where} does not fit the optimiser of this recipe ({telling_line(exc)}); "
            "was recipe.yaml changed?"
        ) from None
    restore_schedule(optimizer, scheduler, recipe.optimizer, recipe.steps)
    if animator is not None:
        animator.transforms = checkpoint.animation_transforms


def save(
    run_dir: Path,
    steps_done: int,
    *,
    recipe: Recipe,
    seed: int,
    device: torch.device,
    generator: Generator,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    history: LossHistory,
    animator: Animator | None,
) -> None:
    """checkpoint.pt after ``steps_done`` steps; called between steps only, so the state
    and the random generators are those the next step starts from."""
    write_checkpoint(
        run_dir,
        Checkpoint(
            step=steps_done,
            generator=generator.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            rng=rng_state(device),
            history=history.state(),
            animation_transforms=animator.transforms if animator else 0,
            settings=fixed_settings(recipe, seed),
        ),
    )
