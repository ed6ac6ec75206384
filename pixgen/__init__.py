"""pixgen: paint pictures by optimisation, guided by CLIP.

The public surface for notebooks and other programs::

    import pixgen
    result = pixgen.run("recipes/quickstart.yaml", steps=50)
    result.image.save("out.png")

Plugins use :data:`hookimpl` and subclass :class:`Generator`, :class:`Loss` or
:class:`Output`. Heavy modules (torch) load on first use of these names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixgen.version import __version__

__all__ = [
    "Generator",
    "InputFile",
    "Loss",
    "Output",
    "PixgenError",
    "PlainName",
    "PluginOptions",
    "Recipe",
    "RunContext",
    "RunResult",
    "__version__",
    "hookimpl",
    "load_recipe",
    "resume",
    "run",
]

_LAZY = {
    "run": ("pixgen.engine", "run"),
    "resume": ("pixgen.engine", "resume"),
    "RunResult": ("pixgen.engine", "RunResult"),
    "load_recipe": ("pixgen.recipe", "load_recipe"),
    "Recipe": ("pixgen.schema", "Recipe"),
    "hookimpl": ("pixgen.hookspecs", "hookimpl"),
    "Generator": ("pixgen.plugin", "Generator"),
    "Loss": ("pixgen.plugin", "Loss"),
    "Output": ("pixgen.plugin", "Output"),
    "PluginOptions": ("pixgen.options", "PluginOptions"),
    "InputFile": ("pixgen.options", "InputFile"),
    "PlainName": ("pixgen.options", "PlainName"),
    "RunContext": ("pixgen.context", "RunContext"),
    "PixgenError": ("pixgen.errors", "PixgenError"),
}

if TYPE_CHECKING:
    from pixgen.context import RunContext
    from pixgen.engine import RunResult, resume, run
    from pixgen.errors import PixgenError
    from pixgen.hookspecs import hookimpl
    from pixgen.options import InputFile, PlainName, PluginOptions
    from pixgen.plugin import Generator, Loss, Output
    from pixgen.recipe import load_recipe
    from pixgen.schema import Recipe


def __getattr__(name: str) -> Any:
    # Lazy so that `import pixgen` (and the tools.shapes scripts) stay light.
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pixgen' has no attribute {name!r}")
