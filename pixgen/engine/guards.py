"""Process-wide state a run sets and puts back: Ctrl-C/SIGTERM handling, cuDNN's flag."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import torch


class StopRequest:
    """Ctrl-C (or SIGTERM) while a run paints: the first asks the loop to stop after the
    step in flight; the second stops at once (KeyboardInterrupt).

    SIGTERM (``kill``, ``timeout``, ``docker stop``) counts as a Ctrl-C, so that a run
    stopped that way also keeps its image, run.json and checkpoint.
    """

    def __init__(self, quiet: bool) -> None:
        self.requested = False
        self.quiet = quiet

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if not self.quiet:
            sys.stderr.write("\nstopping after this step (Ctrl-C again to stop now)…\n")

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The handlers, for the main thread only (signals cannot be caught elsewhere)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._handler) for sig in signals}
        try:
            yield
        finally:
            for sig, before in previous.items():
                signal.signal(sig, before)


@contextlib.contextmanager
def cudnn_benchmark(device: torch.device, enabled: bool) -> Iterator[None]:
    """cuDNN's algorithm timing for this run's convolutions, as ``speed:`` says.

    The flag is process-wide, so it is put back as it was when the run ends.
    """
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
