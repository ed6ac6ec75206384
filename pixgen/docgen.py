"""Describing options from their schemas: the recipe reference and ``pixgen plugins show``.

One vocabulary for both: :func:`describe_fields` gives each field's name, type (``number``,
``integer``, ``text``, ``path``, ``step`` …), bounds (``≥ 0``, ``< 1``), default and
description, read from the pydantic model. ``python -m pixgen.docgen
docs/recipe-reference.md`` writes the reference; ``--check`` fails when the file differs
from what the code says (the test suite runs the check).
"""

from __future__ import annotations

import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

HEADER = """\
# Recipe reference

Generated from the code by `python -m pixgen.docgen docs/recipe-reference.md`
(`make docs`); a test fails when this file is out of date. Every plugin's section is its
options schema; `pixgen plugins show NAME` prints the same.

Any setting that names a step accepts a count (`150`) or a share of the run (`"75%"`).
A *schedule* is a number or keyframes `{0: 1.0, "50%": 0.2}`, interpolated linearly.
"""


def _named_validator(metadata: Any) -> str | None:
    """The name of a shared option type, known by its validator."""
    from pixgen.options import _resolve_input_file
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


_SCALARS = {
    "str": "text",
    "int": "integer",
    "float": "number",
    "bool": "true | false",
    "Path": "path",
    "PosixPath": "path",
    "WindowsPath": "path",
}


def type_text(annotation: Any, metadata: Any = ()) -> str:
    """A short, stable, human-readable name of an option's type."""
    named = _named_validator(metadata)
    if named:
        return named
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0], args[1:])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(type_text(a) for a in args))
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
        from pixgen.schema import PluginEntry

        if issubclass(annotation, PluginEntry):
            return "NAME | {use: NAME, …}"
        if issubclass(annotation, BaseModel):
            keys = list(annotation.model_fields)
            shown = ", ".join(keys[:3]) + (", …" if len(keys) > 3 else "")
            return f"{{{shown}}}"
        return _SCALARS.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def _number(value: Any) -> str:
    if isinstance(value, int) and value >= 2**20 and value & (value - 1) == 0:
        return f"2^{value.bit_length() - 1}"
    return str(value)


def bounds_text(metadata: Any) -> str:
    """``≥ 0, < 1`` from a field's constraints (``Field(ge=0, lt=1)``)."""
    parts: list[str] = []
    for item in metadata or ():
        if isinstance(item, Ge):
            parts.append(f"≥ {_number(item.ge)}")
        elif isinstance(item, Gt):
            parts.append(f"> {_number(item.gt)}")
        elif isinstance(item, Le):
            parts.append(f"≤ {_number(item.le)}")
        elif isinstance(item, Lt):
            parts.append(f"< {_number(item.lt)}")
        elif isinstance(item, MinLen) and item.min_length:
            parts.append(f"at least {item.min_length} long")
        elif isinstance(item, MaxLen):
            parts.append(f"at most {item.max_length} long")
    return ", ".join(parts)


@dataclass(frozen=True)
class FieldDescription:
    """One option as ``plugins show`` and the reference show it."""

    name: str
    type: str  # "number", "list of text", "adam | adamw | sgd"
    bounds: str  # "≥ 0, < 1" or ""
    default: Any  # the value, or REQUIRED
    description: str

    @property
    def type_and_bounds(self) -> str:
        return f"{self.type} ({self.bounds})" if self.bounds else self.type


REQUIRED = "(required)"


def _default(field: Any) -> Any:
    if field.is_required():
        return REQUIRED
    if field.default_factory is not None:
        return field.default_factory()
    return None if field.default is PydanticUndefined else field.default


def describe_fields(
    model: type[BaseModel], skip: typing.Collection[str] = ()
) -> list[FieldDescription]:
    """Each field of ``model``: name, type, bounds, default, description."""
    return [
        FieldDescription(
            name=name,
            type=type_text(field.annotation, field.metadata),
            bounds=bounds_text(field.metadata),
            default=_default(field),
            description=(field.description or "").strip(),
        )
        for name, field in model.model_fields.items()
        if name not in skip
    ]


# -- the reference -----------------------------------------------------------------------


def _default_cell(value: Any) -> str:
    if value == REQUIRED:
        return "required"
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{value!r}`"


def _table(model: type[BaseModel], skip: typing.Collection[str] = ()) -> list[str]:
    lines = ["| option | type | default | description |", "|---|---|---|---|"]
    for row in describe_fields(model, skip):
        desc = row.description.replace("|", "\\|").replace("\n", " ")
        kind = row.type_and_bounds.replace("|", "or")
        lines.append(f"| `{row.name}` | {kind} | {_default_cell(row.default)} | {desc} |")
    return lines


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model a recipe field holds (``EarlyStopConfig | None`` -> it)."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def render() -> str:
    from pixgen.kinds import KIND_OF_SECTION, PLUGIN_KINDS
    from pixgen.plugins import load_plugins
    from pixgen.schema import Recipe

    out = [HEADER, "## Top level", "", *_table(Recipe), ""]
    for name, field in Recipe.model_fields.items():
        model = _section_model(field.annotation)
        if model is not None and name not in KIND_OF_SECTION:
            out += [f"## `{name}`", "", *_table(model), ""]
    plugins = load_plugins()
    for kind in PLUGIN_KINDS.values():
        out += [f"## {kind.plural.capitalize()}", ""]
        entry_keys = [key for key in kind.entry.entry_keys() if key != "use"]
        if entry_keys:
            out += [
                f"Every {kind.name} entry takes these keys besides its plugin's options:",
                "",
                *_table(kind.entry, skip={"use", "options"}),
                "",
            ]
        for name in plugins.registry.names(kind.name):
            info = plugins.registry.get(name)
            if not info.source.startswith("pixgen "):
                continue  # only the built-ins are documented here
            out += [f"### `{name}`", "", info.cls.doc(), "", *_table(info.cls.Options), ""]
    return "\n".join(out).rstrip() + "\n"


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
