"""torch.compile for the heavy frozen modules, with a fallback to eager execution.

The speed policy (whether and how to compile) is the recipe's ``speed:`` section, applied
by :meth:`pixgen.context.RunContext.compile_module`; this module only wraps a module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message``, short enough for a one-line notice."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:160]}" if lines else type(exc).__name__


class CompiledOrEager:
    """torch.compile with a fallback to eager execution if compilation fails."""

    def __init__(
        self,
        module: Callable[..., Any],
        name: str,
        mode: str,
        notice: Callable[[str], None],
        channels_last: bool = False,
    ):
        self.eager = module
        self.name = name
        self.notice = notice
        self.compiled: Callable[..., Any] | None
        if channels_last:
            from torch._inductor import list_mode_options

            # Inductor keeps a training graph NCHW when a convolution narrows the channels
            # (the VQGAN decoder's 512->256, 256->128, 128->3); this makes it NHWC anyway.
            options = {
                **list_mode_options(mode),
                "force_layout_optimization": True,
            }
            self.compiled = torch.compile(module, options=options, dynamic=False)
        else:
            self.compiled = torch.compile(module, mode=mode, dynamic=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except torch.cuda.OutOfMemoryError:
                raise  # not compiling's fault: uncompiled would need more memory still
            except Exception as exc:  # dynamo/inductor failures of any kind
                self.compiled = None
                self.notice(
                    f"{self.name}: torch.compile failed ({describe_error(exc)}); running it uncompiled"
                )
        return self.eager(*args, **kwargs)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.eager, item)
