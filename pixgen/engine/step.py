"""One optimisation step: render, score, back-propagate.

Losses are called in recipe order (one whose weight is 0 at this step is skipped); each
value is checked to be a scalar tensor, recorded unweighted in this step's row of the
loss history, and added to the weighted total. When a step fails while modules run
compiled, it runs again with all of them uncompiled (see :meth:`StepRunner.gradients`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from pixgen.context import RunContext
from pixgen.engine.blame import blame, out_of_memory
from pixgen.engine.history import LossHistory
from pixgen.errors import PixgenError, PluginRunError
from pixgen.plugin import Generator, Loss
from pixgen.plugins import PluginInfo
from pixgen.steps import ScheduleFn


@dataclass
class LossSlot:
    """A loss of the run: its label in the history, the plugin and its weight schedule."""

    label: str
    loss: Loss
    info: PluginInfo
    weight: ScheduleFn


class StepRunner:
    """Renders, scores and back-propagates one step; no host synchronisation."""

    def __init__(
        self,
        ctx: RunContext,
        generator: Generator,
        generator_info: PluginInfo,
        losses: list[LossSlot],
        optimizer: torch.optim.Optimizer,
        history: LossHistory,
    ) -> None:
        self.ctx = ctx
        self.generator = generator
        self.generator_info = generator_info
        self.losses = losses
        self.optimizer = optimizer
        self.history = history
        self._column_indices: dict[tuple[int, ...], torch.Tensor] = {}

    def expected_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.ctx.height, self.ctx.width)

    def check_shape(self, image: torch.Tensor) -> None:
        """A generator must render ``[1, 3, H, W]`` at the run's size."""
        expected = self.expected_shape()
        if tuple(image.shape) != expected:
            info = self.generator_info
            raise PluginRunError(
                f"generator {info.name!r} ({info.file}) rendered shape {tuple(image.shape)}, "
                f"expected {expected}"
            )

    def gradients(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Render, score and back-propagate: the image, the weighted total and the row.

        If the step fails while modules run compiled (a backward compiled at its first
        use, a CUDA graph that cannot be captured), it runs again with all of them
        uncompiled; an error that is not compiling's then happens again, eagerly.
        """
        try:
            return self._forward_backward(step)
        except PixgenError:
            raise
        except Exception as exc:
            if not self.ctx.stop_compiling(step, exc):
                raise
        self.ctx.begin_step(step)  # nothing the failed attempt cached is reused
        return self._forward_backward(step)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.ctx.precision == "bf16":
            return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward_backward(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with self._autocast():
            image = self.render(step)
            total, row = self.score(image, step)
        self.optimizer.zero_grad(set_to_none=True)
        if total.requires_grad:
            try:
                total.backward()
            except torch.cuda.OutOfMemoryError as exc:  # the backward needs the most memory
                raise out_of_memory(f"the backward pass of step {step}") from exc
        return image, total, row

    def render(self, step: int) -> torch.Tensor:
        with blame(self.generator_info, f"step {step}"):
            image = self.generator()
        if step == self.ctx.start_step:
            self.check_shape(image)
        return image

    def score(self, image: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted total and the row of values recorded for this step."""
        device = self.ctx.device
        total = torch.zeros((), device=device, dtype=torch.float32)
        values: list[tuple[int, torch.Tensor]] = []
        for slot in self.losses:
            weight = slot.weight(step)
            if weight == 0.0:
                continue  # a scheduled-off loss costs nothing
            with blame(slot.info, f"step {step}"):
                out = slot.loss(image, self.ctx)
            if isinstance(out, Mapping):
                terms = {k: _loss_value(slot, v, f"term {k!r}") for k, v in out.items()}
                value = torch.stack(list(terms.values())).sum() if terms else total * 0
                for key, term in terms.items():
                    values.append((self.history.column(f"{slot.label}/{key}"), term))
            else:
                value = _loss_value(slot, out, "value")
            if step == self.ctx.start_step:
                self._check_loss_value(slot, value, image)
            values.append((self.history.column(slot.label), value))
            total = total + weight * value
        row = torch.full((len(self.history.columns),), math.nan, device=device)
        if values:
            index = self._column_index(tuple(i for i, _ in values))
            row = row.index_copy(0, index, torch.stack([v.detach() for _, v in values]))
        row[0] = total.detach()
        return total, row

    def _check_loss_value(self, slot: LossSlot, value: torch.Tensor, image: torch.Tensor) -> None:
        """First step: a loss must be a scalar, and one without a gradient steers nothing."""
        if value.dim() != 0:
            raise PluginRunError(
                f"loss plugin {slot.info.name!r} ({slot.info.file}) returned a tensor of "
                f"shape {tuple(value.shape)}; a loss must be a scalar"
            )
        if image.requires_grad and not value.requires_grad:
            self.ctx.notice(
                f"loss {slot.label!r} ({slot.info.file}) has no gradient at step {self.ctx.step} (is it "
                "detached from the image?); it cannot steer the picture"
            )

    def _column_index(self, columns: tuple[int, ...]) -> torch.Tensor:
        """A device tensor of column numbers, made once per column set: building it each
        step would copy host-to-device, which waits for the GPU."""
        if columns not in self._column_indices:
            self._column_indices[columns] = torch.tensor(columns, device=self.ctx.device)
        return self._column_indices[columns]


def _loss_value(slot: LossSlot, value: object, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise PluginRunError(
            f"loss plugin {slot.info.name!r} ({slot.info.file}) returned a "
            f"{type(value).__name__} as its {what}; a loss returns a scalar tensor "
            "computed from the image (or a dict of them), so that it has a gradient"
        )
    return value.float()
