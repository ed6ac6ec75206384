"""Errors raised in plugin code, turned into one message naming the plugin and its file."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from pixgen.errors import PixgenError, PluginRunError
from pixgen.plugins import PluginInfo


def out_of_memory(what: str) -> PixgenError:
    return PixgenError(
        f"out of GPU memory in {what}; lower the size, the cutouts or use fewer models"
    )


@contextlib.contextmanager
def blame(info: PluginInfo, what: str) -> Iterator[None]:
    """Turn an exception from plugin code into one message naming the plugin and file."""
    try:
        yield
    except (PixgenError, KeyboardInterrupt):
        raise
    except torch.cuda.OutOfMemoryError as exc:
        raise out_of_memory(what) from exc
    except Exception as exc:
        source = f" ({info.file})" if info.file else ""
        raise PluginRunError(
            f"{info.kind} plugin {info.name!r}{source} failed in {what}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def telling_line(exc: BaseException) -> str:
    """The line of an error's message that says most (load_state_dict's first line only
    names the class; the size mismatch is further down)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    for line in lines:
        if "size mismatch" in line or "Missing key" in line or "Unexpected key" in line:
            return line.rstrip(".")
    return lines[0] if lines else type(exc).__name__
