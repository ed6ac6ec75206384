"""Generate the recipe reference from the schemas, so the docs cannot drift.

``python -m pixgen.docgen docs/recipe-reference.md`` writes it; ``--check`` fails when the
file differs from what the code says (the test suite runs the check).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

HEADER = """\
# Recipe reference

Generated from the code by `python -m pixgen.docgen docs/recipe-reference.md`
(`make docs`); a test fails when this file is out of date. Every plugin's section is its
options schema; `pixgen plugins show NAME` prints the same.

Any setting that names a step accepts a count (`150`) or a share of the run (`"75%"`).
A loss `weight` is a number or a schedule of keyframes, `{0: 1.0, "50%": 0.2}`,
interpolated linearly.
"""


def _named_validator(metadata: Any) -> str | None:
    from pixgen.plugin import _resolve_input_file
    from pixgen.steps import _check_interval, _check_schedule, _check_step_value

    names = {
        _check_step_value: "step",
        _check_interval: "steps (≥ 1)",
        _check_schedule: "number | schedule",
        _resolve_input_file: "path",
    }
    for item in metadata or ():
        func = getattr(item, "func", None)
        if func in names:
            return names[func]
    return None


def type_text(annotation: Any, metadata: Any = ()) -> str:
    """A short, stable, human-readable name of an option's type."""
    import types
    import typing

    named = _named_validator(metadata)
    if named:
        return named
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0], args[1:])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin is list:
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is tuple:
        return "[" + ", ".join(type_text(a) for a in args) + "]"
    if origin is dict:
        return "mapping"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "mapping"
        return {
            "str": "text",
            "int": "integer",
            "float": "number",
            "bool": "true | false",
            "Path": "path",
            "PosixPath": "path",
        }.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def field_type_text(field: Any) -> str:
    return type_text(field.annotation, field.metadata)


def _default_text(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = None if field.default is PydanticUndefined else field.default
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{value!r}`"


def _table(model: type[BaseModel], skip: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    lines = ["| option | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        kind = field_type_text(field).replace("|", "or")
        lines.append(f"| `{name}` | {kind} | {_default_text(field)} | {desc} |")
    return lines


def render() -> str:
    from pixgen.plugins import load_plugins
    from pixgen.recipe import EarlyStopConfig, OptimizerConfig, RecipeCore

    out = [HEADER, "## Top level", "", *_table(RecipeCore), ""]
    out += ["## `optimizer`", "", *_table(OptimizerConfig), ""]
    out += ["## `early_stop`", "", *_table(EarlyStopConfig), ""]
    extra_sections = _extra_sections()
    for title, model in extra_sections:
        out += [f"## `{title}`", "", *_table(model), ""]
    plugins = load_plugins()
    for kind, title in (("generator", "Generators"), ("loss", "Losses"), ("output", "Outputs")):
        out += [f"## {title}", ""]
        for name in plugins.registry.names(kind):
            info = plugins.registry.get(name)
            if not info.source.startswith("pixgen "):
                continue  # only the built-ins are documented here
            doc = info.cls.doc()
            out += [f"### `{name}`", "", doc, ""]
            if kind == "loss":
                out += [
                    "Every loss also takes `weight` (number or schedule, default 1.0) and "
                    "`label` (name in the loss history).",
                    "",
                ]
            out += [*_table(info.cls.Options), ""]
    return "\n".join(out).rstrip() + "\n"


def _extra_sections() -> list[tuple[str, type[BaseModel]]]:
    """Core sections defined outside recipe.py (e.g. animation)."""
    sections: list[tuple[str, type[BaseModel]]] = []
    try:
        from pixgen.animation import AnimationConfig

        sections.append(("animation", AnimationConfig))
    except ImportError:
        pass
    try:
        from pixgen.recipe import SpeedConfig  # type: ignore[attr-defined]

        sections.append(("speed", SpeedConfig))
    except ImportError:
        pass
    return sections


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    paths = [a for a in args if not a.startswith("--")]
    target = Path(paths[0] if paths else "docs/recipe-reference.md")
    text = render()
    if check:
        if not target.exists() or target.read_text() != text:
            sys.stderr.write(f"{target} is out of date: run `make docs`\n")
            return 1
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
