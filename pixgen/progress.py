"""The progress bar: step, total loss, each loss and it/s, refreshed a few times a second.

The engine only reads loss values (a GPU sync) when the display is due, so the bar never
adds a host synchronisation per step.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ProgressDisplay:
    """A rich progress bar on stderr; ``enabled=False`` makes every call a no-op."""

    def __init__(
        self,
        total: int,
        *,
        enabled: bool = True,
        interval: float = 0.5,
        description: str = "painting",
        start: int = 0,
    ):
        self.enabled = enabled
        self.interval = interval
        self._last = 0.0
        self._last_step = start
        self._last_time = time.perf_counter()
        self.rate = 0.0
        self._progress: Progress | None = None
        if enabled:
            console = Console(file=sys.stderr)
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[losses]}"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                description, total=total, completed=start, losses="", rate=""
            )

    def due(self, step: int, total: int) -> bool:
        """Whether to refresh now (time-based; never forces a per-step sync)."""
        if not self.enabled:
            return False
        now = time.perf_counter()
        return step + 1 >= total or now - self._last >= self.interval

    def set_phase(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def update(self, step: int, values: dict[str, float]) -> None:
        now = time.perf_counter()
        if now > self._last_time and step > self._last_step:
            self.rate = (step - self._last_step) / (now - self._last_time)
        self._last_step, self._last_time, self._last = step, now, now
        if self._progress is None:
            return
        text = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        self._progress.update(
            self._task,
            completed=step + 1,
            losses=text,
            rate=f"{self.rate:.1f} it/s" if self.rate else "",
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
