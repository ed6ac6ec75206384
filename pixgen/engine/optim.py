"""Optimisers and learning-rate schedules: what ``optimizer:`` in a recipe becomes."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from pixgen.schema import OptimizerConfig
from pixgen.steps import resolve_step


def _make_adam(params: Any, cfg: OptimizerConfig, device: torch.device) -> torch.optim.Optimizer:
    fused = device.type == "cuda"
    return torch.optim.Adam(
        params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused or None
    )


def _make_adamw(params: Any, cfg: OptimizerConfig, device: torch.device) -> torch.optim.Optimizer:
    fused = device.type == "cuda"
    return torch.optim.AdamW(
        params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused or None
    )


def _make_sgd(params: Any, cfg: OptimizerConfig, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


OPTIMIZERS: dict[str, Callable[[Any, OptimizerConfig, torch.device], torch.optim.Optimizer]] = {
    "adam": _make_adam,
    "adamw": _make_adamw,
    "sgd": _make_sgd,
}
"""Optimiser factories by the name a recipe gives (``optimizer: {name: adam}``)."""


def make_optimizer(
    params: Any, cfg: OptimizerConfig, total_steps: int, device: torch.device
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The recipe's optimiser over ``params`` and its lr schedule."""
    optimizer = OPTIMIZERS[cfg.name](params, cfg, device)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total_steps))


def lr_factor(cfg: OptimizerConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base lr at each step: warm-up, then the schedule, times drops."""
    warmup = resolve_step(cfg.warmup, total_steps)
    drops = sorted(resolve_step(d, total_steps) for d in cfg.drops)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            value = (step + 1) / warmup
        else:
            span = max(1, total_steps - warmup)
            t = min(1.0, (step - warmup) / span)
            floor = cfg.min_lr_factor
            if cfg.schedule == "cosine":
                value = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
            elif cfg.schedule == "linear":
                value = 1 - (1 - floor) * t
            else:
                value = 1.0
        for drop in drops:
            if step >= drop:
                value *= cfg.drop_factor
        return value

    return factor


def restore_schedule(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    cfg: OptimizerConfig,
    total_steps: int,
) -> None:
    """Go on with the schedule from the scheduler's step with the recipe's lr: the value
    LambdaLR would have set when the recipe is unchanged, the edited one otherwise."""
    factor = lr_factor(cfg, total_steps)
    step = scheduler.last_epoch
    scheduler.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = base * factor(step)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
