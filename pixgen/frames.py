"""Getting images off the GPU without stalling the loop.

:class:`FrameWriter` copies a device image into pinned host memory with a non-blocking
copy, records a CUDA event, and hands the frame to a background thread that waits for
the event, converts it to 8-bit HWC and then runs the (slow) consumer: PNG or video
encoding. The queue is bounded; when it is full the policy is explicit: ``wait`` (the
loop waits for the worker) or ``drop`` (the frame is skipped and counted).

The loop's share of a frame is kept to a handful of Python calls (no conversion kernels,
pinned buffers and events reused from a pool), because in a fast loop every Python call
on any thread competes with the loop's own kernel launches for the GIL.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

QueuePolicy = Literal["wait", "drop"]
_STOP = object()


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """``[1,3,H,W]`` or ``[3,H,W]`` float in [0, 1] on the CPU -> new HWC uint8 array.

    In NumPy, which runs on the calling thread only: torch would start a team of intra-op
    threads here, beside the loop's own, and on a CPU run the two teams fight over the
    same cores (the loop ran ~20 % slower with a video output on 2 cores)."""
    if image.dim() == 4:
        image = image[0]
    # A diverged run's NaN pixels are written black, not left to the cast (and its warning).
    chw = np.nan_to_num(_float32_array(image), nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(chw, 0.0, 1.0, out=chw)
    chw *= 255.0
    np.rint(chw, out=chw)  # half to even, as torch.round
    return np.ascontiguousarray(chw.astype(np.uint8).transpose(1, 2, 0))


def _float32_array(image: torch.Tensor) -> np.ndarray:
    """The CPU tensor as a float32 array, converted by NumPy (which has no bfloat16: its
    bits are the high half of a float32's)."""
    if image.dtype == torch.bfloat16:
        bits = image.contiguous().view(torch.int16).numpy().view(np.uint16)
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return image.numpy().astype(np.float32, copy=False)


class FrameWriter:
    """Runs ``consume(step, frame_hwc_uint8)`` on a worker thread for each submitted image."""

    def __init__(
        self,
        consume: Callable[[int, np.ndarray], None],
        *,
        max_queue: int = 8,
        policy: QueuePolicy = "wait",
        name: str = "pixgen-frames",
    ):
        self._consume = consume
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, max_queue))
        # Pinned buffers and events come back here once the worker has read them.
        self._spare: queue.SimpleQueue[tuple[torch.Tensor, Any]] = queue.SimpleQueue()
        self.policy = policy
        self.dropped = 0
        self.written = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _to_host(self, image: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Start the copy of ``image`` to the host; the worker converts it."""
        frame = image.detach()
        if frame.device.type == "cuda":
            try:
                host, event = self._spare.get_nowait()
                if host.shape != frame.shape or host.dtype != frame.dtype:
                    raise queue.Empty
            except queue.Empty:
                host = torch.empty(frame.shape, dtype=frame.dtype, pin_memory=True)
                event = torch.cuda.Event()
            host.copy_(frame, non_blocking=True)
            event.record()
            return host, event
        # CPU (and other devices): a synchronous copy, so that later in-place changes to
        # the image cannot reach the frame.
        return frame.to("cpu", copy=True), None

    def submit(self, step: int, image: torch.Tensor, *, policy: QueuePolicy | None = None) -> bool:
        """Queue ``image`` ([1,3,H,W] or [3,H,W] in [0,1]); False if it was dropped.

        ``policy`` overrides the writer's own for this frame (e.g. ``"wait"`` for a final
        frame that must not be dropped).
        """
        if self.error is not None:
            raise RuntimeError(f"frame writer failed: {self.error}") from self.error
        if (policy or self.policy) == "drop" and self._queue.full():
            self.dropped += 1
            return False
        host, event = self._to_host(image)
        self._queue.put((step, host, event))
        return True

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if self.error is not None:
                    continue  # drain after a failure
                step, host, event = item
                if event is not None:
                    event.synchronize()
                frame = to_uint8_hwc(host)
                if event is not None:
                    self._spare.put((host, event))
                self._consume(step, frame)
                self.written += 1
            except BaseException as exc:  # reported to the loop on the next submit/close
                self.error = exc
            finally:
                self._queue.task_done()

    def close(self) -> None:
        """Wait for every queued frame to be consumed, then stop the worker."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        if self.error is not None:
            raise RuntimeError(f"frame writer failed: {self.error}") from self.error
