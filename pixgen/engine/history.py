"""The loss history: per-step values kept on the device and read back in batches; the
checks that read it (a NaN or infinite total, early stop)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from pixgen.errors import LossNotFinite
from pixgen.schema import EarlyStopConfig
from pixgen.steps import resolve_interval

# How often the loop reads the loss back to stop a run whose loss is NaN or infinite.
FINITE_CHECK_INTERVAL_S = 1.0


class LossHistory:
    """One row per step: the weighted total, then each loss (and term) unweighted.

    Rows are recorded as device tensors and copied to the host only when read, so a
    step does no host synchronisation of its own.
    """

    def __init__(self) -> None:
        self.columns: list[str] = ["total"]
        self._pending: list[torch.Tensor] = []
        self.rows: list[list[float]] = []
        self._finite_rows = 0  # rows already found to have a finite total

    def column(self, name: str) -> int:
        if name not in self.columns:
            self.columns.append(name)
        return self.columns.index(name)

    def record(self, values: torch.Tensor) -> None:
        self._pending.append(values.detach())

    def sync(self) -> None:
        if not self._pending:
            return
        width = max(v.numel() for v in self._pending)
        padded = [
            torch.nn.functional.pad(v.float(), (0, width - v.numel()), value=math.nan)
            for v in self._pending
        ]
        host = torch.stack(padded).cpu().tolist()
        self.rows.extend(host)
        self._pending.clear()

    def first_non_finite_total(self) -> int | None:
        """The first step read back whose weighted total is NaN or infinite, if any."""
        self.sync()
        for step in range(self._finite_rows, len(self.rows)):
            if not math.isfinite(self.rows[step][0]):
                return step
        self._finite_rows = len(self.rows)
        return None

    def latest(self) -> dict[str, float]:
        self.sync()
        if not self.rows:
            return {}
        row = self.rows[-1]
        return {c: row[i] for i, c in enumerate(self.columns) if i < len(row)}

    def row_dict(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """A recorded row (still on the device) by column name."""
        return {c: row[i] for i, c in enumerate(self.columns) if i < row.numel()}

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue the history of a checkpoint (a loss added since gets a new column)."""
        self.columns = list(saved["columns"])
        self.rows = [list(map(float, row)) for row in saved["rows"]]

    def state(self) -> dict[str, Any]:
        self.sync()
        return {"columns": list(self.columns), "rows": [list(row) for row in self.rows]}

    def as_dict(self) -> dict[str, Any]:
        """For run.json: ``{"step": [...], "total": [...], "losses": {LABEL: [...]}}``."""
        self.sync()

        def col(i: int) -> list[float | None]:
            return [None if i >= len(r) or math.isnan(r[i]) else r[i] for r in self.rows]

        return {
            "step": list(range(len(self.rows))),
            "total": col(0),
            "losses": {c: col(i) for i, c in enumerate(self.columns) if i > 0},
        }


def stop_if_not_finite(history: LossHistory, active_at: Any) -> None:
    """A NaN or infinite total poisons the gradients, then the image: stop there.

    ``active_at(step)`` gives the labels of the losses weighted at that step. Called
    about once a second (reading the history back waits for the GPU).
    """
    step = history.first_non_finite_total()
    if step is None:
        return
    row = history.rows[step]
    active: Sequence[str] = active_at(step)
    terms = [
        column
        for i, column in enumerate(history.columns[1:], start=1)
        if i < len(row)
        and not math.isfinite(row[i])
        and any(column == label or column.startswith(f"{label}/") for label in active)
    ]
    what = "NaN" if math.isnan(row[0]) else "infinite"
    source = f" ({', '.join(map(repr, terms))} was {what})" if terms else ""
    raise LossNotFinite(
        f"the loss became {what} at step {step}{source}, and no later step can recover "
        "from it, so the run stopped; try a lower optimizer lr or loss weight, or "
        "precision: fp32"
    )


def early_stop_due(
    history: LossHistory, cfg: EarlyStopConfig | None, step: int, steps: int
) -> bool:
    """Whether the total has not improved by ``min_delta`` for ``patience`` steps; checked
    every ``check_every`` steps (each check reads the history back)."""
    if cfg is None or (step + 1) % cfg.check_every:
        return False
    history.sync()
    patience = resolve_interval(cfg.patience, steps)
    best, best_step = math.inf, 0
    for i, row in enumerate(history.rows):
        if row[0] < best - cfg.min_delta:
            best, best_step = row[0], i
    return step - best_step >= patience
