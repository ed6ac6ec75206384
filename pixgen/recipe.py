"""Loading a recipe: YAML (or a dict) -> ``--set`` overrides -> a validated :class:`Recipe`.

Loading is in three phases so that nothing is allocated before everything is checked:

1. The text is parsed safely with each value's line (:mod:`pixgen.yamltext`).
2. ``--set PATH=VALUE`` overrides (values parsed as YAML) are applied to the raw data.
3. The recipe's local plugin files are loaded (their options are needed), then the
   whole recipe is validated by :class:`pixgen.schema.Recipe`. All problems are reported
   together, each with its place (``losses[1].weight``), its line, what was expected
   and, for unknown names, the closest valid ones.

Loading a recipe loads no plugin into anything that outlives the call: the returned
:class:`Recipe` names its plugin files, and whoever runs it builds its plugins from them
(:func:`pixgen.plugins.plugins_for`).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from pixgen.errors import RecipeError
from pixgen.kinds import KIND_OF_SECTION
from pixgen.plugins import PluginSet, did_you_mean, load_plugins
from pixgen.schema import QUALITY_STEPS, PluginFiles, Recipe
from pixgen.yamltext import MAX_RECIPE_BYTES, Path_, SourceText, format_path, parse_yaml

__all__ = [
    "QUALITY_STEPS",
    "Recipe",
    "apply_override",
    "load_recipe",
    "parse_override",
    "read_recipe_source",
]


def read_recipe_source(
    source: str | os.PathLike[str] | Mapping[str, Any],
) -> tuple[SourceText, Path]:
    """A path, a YAML string or a dict -> (parsed text, folder relative paths resolve in)."""
    if isinstance(source, Mapping):
        return SourceText(copy.deepcopy(dict(source)), {}, "<dict>"), Path.cwd()
    text_source = (
        isinstance(source, str)
        and ("\n" in source or ":" in source)
        and not (Path(source).suffix.lower() in {".yaml", ".yml"} and "\n" not in source)
    )
    if text_source:
        return parse_yaml(str(source), "<string>"), Path.cwd()
    path = Path(source)
    if path.is_dir():
        raise RecipeError(f"{path} is a folder, not a recipe file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {path}") from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: larger than {MAX_RECIPE_BYTES} bytes; not a recipe")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file (not UTF-8)") from None
    return parse_yaml(text, str(path)), path.resolve().parent


# -- phase 2: --set overrides ------------------------------------------------------------

_OVERRIDE = re.compile(r"^\s*([A-Za-z_][\w\-]*(?:\.[\w\-]+)*)\s*=(.*)$", re.S)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"losses.0.weight=2"`` -> (["losses", "0", "weight"], 2); the value is YAML."""
    match = _OVERRIDE.match(text)
    if not match:
        raise RecipeError(
            f"--set {text!r}: expected PATH=VALUE, e.g. --set steps=50 or --set losses.0.weight=2"
        )
    path, value_text = match.group(1).split("."), match.group(2)
    try:
        value = (
            parse_yaml(value_text, f"--set {match.group(1)}").data if value_text.strip() else None
        )
    except RecipeError as exc:
        raise RecipeError(f"--set {text!r}: {exc.message}") from None
    return path, value


def apply_override(data: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """Set ``value`` at ``path`` inside ``data`` (list items by index)."""
    target: Any = data
    shown = ""
    for i, key in enumerate(path):
        last = i == len(path) - 1
        shown = f"{shown}.{key}" if shown else key
        if isinstance(target, list):
            if not key.lstrip("-").isdigit():
                raise RecipeError(
                    f"--set {shown}: {shown.rsplit('.', 1)[0]} is a list; use an index"
                )
            index = int(key)
            if not -len(target) <= index < len(target):
                raise RecipeError(
                    f"--set {shown}: the list has {len(target)} entries (indices 0-{len(target) - 1})"
                )
            if last:
                target[index] = value
            else:
                target = target[index]
        elif isinstance(target, dict):
            if last:
                target[key] = value
            else:
                if key not in target or target[key] is None:
                    target[key] = {}
                target = target[key]
        else:
            raise RecipeError(f"--set {shown}: {shown.rsplit('.', 1)[0]} is not a mapping or list")


def _apply_overrides(
    parsed: SourceText, overrides: Iterable[str] | Mapping[str, Any]
) -> set[Path_]:
    """Apply ``overrides`` to ``parsed.data``; the places they replaced."""
    if isinstance(overrides, Mapping):
        items = [(str(k).split("."), v) for k, v in overrides.items()]
    else:
        items = [parse_override(text) for text in overrides]
    overridden: set[Path_] = set()
    if not items:
        return overridden
    if parsed.data is None:
        parsed.data = {}
    if not isinstance(parsed.data, dict):
        raise RecipeError(f"{parsed.origin}: a recipe is a YAML mapping; cannot apply --set")
    for path, value in items:
        apply_override(parsed.data, path, value)
        overridden.add(tuple(int(p) if p.lstrip("-").isdigit() else p for p in path))
    return overridden


# -- phase 3: validation and its report ----------------------------------------------------


@dataclass
class Problem:
    path: Path_
    message: str


class _Problems:
    """Every problem found, reported at once with lines."""

    def __init__(self, source: SourceText, overridden: set[Path_]):
        self.source = source
        self.overridden = overridden
        self.items: list[Problem] = []

    def add(self, path: Path_, message: str) -> None:
        self.items.append(Problem(tuple(path), message))

    def line_of(self, path: Path_) -> str:
        prefixes = [tuple(path[:cut]) for cut in range(len(path), -1, -1)]
        if any(prefix in self.overridden for prefix in prefixes):
            return "--set"  # the file's lines under an overridden value are gone
        for prefix in prefixes:
            if prefix in self.source.lines:
                return f"line {self.source.lines[prefix]}"
        return ""

    def raise_if_any(self) -> None:
        if not self.items:
            return
        parts = []

        def line_number(problem: Problem) -> int:
            where = self.line_of(problem.path)
            return int(where.split()[1]) if where.startswith("line ") else 10**9

        set_file_missing = False
        for problem in sorted(self.items, key=line_number)[:12]:
            where = self.line_of(problem.path)
            set_file_missing |= where == "--set" and problem.message.startswith("file not found")
            where = f"{where}, " if where else ""
            parts.append(f"  {where}{format_path(problem.path)}: {problem.message}")
        if len(self.items) > 12:
            parts.append(f"  … and {len(self.items) - 12} more")
        if set_file_missing:
            parts.append(
                "  (a --set value is read as if written in the recipe: a relative path is "
                "relative to the recipe's folder; give an absolute path, e.g. $PWD/FILE)"
            )
        noun = "problem" if len(self.items) == 1 else "problems"
        raise RecipeError(
            f"{self.source.origin}: invalid recipe ({len(self.items)} {noun}):\n" + "\n".join(parts)
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _data_path(loc: tuple[Any, ...], data: Any) -> Path_:
    """pydantic's error location as a path through the recipe's own data: drops the
    labels pydantic adds for union members, validators and an entry's ``options``
    (``mapping``, ``function-after[...]``), which are not keys of the recipe."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        in_mapping = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_mapping or in_list:
            out.append(part)
            node = node[part]
        elif last or (isinstance(part, str) and "[" not in part and node is None):
            out.append(part)
        elif isinstance(node, Mapping | list) or node is None:
            continue  # a union tag, a validator label or an entry's options
        else:
            out.append(part)
    return tuple(out)


def _yaml_typing_hint(kind: str, value: Any) -> str:
    """Why a text field got a boolean or a number: YAML typed the bare word."""
    if kind not in ("string_type", "literal_error"):
        return ""
    if isinstance(value, bool):
        return "; YAML reads a bare yes/no/on/off/true/false as a boolean: put it in quotes"
    if isinstance(value, int | float):
        return "; YAML reads a bare number as a number: put it in quotes"
    return ""


def _model_at(field_annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (``OptimizerConfig | None`` -> OptimizerConfig)."""
    import typing

    for candidate in (field_annotation, *typing.get_args(field_annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _keys_at(parent: Path_, data: Mapping[str, Any], plugins: PluginSet) -> list[str]:
    """The valid keys at a place in the recipe (for did-you-mean): the recipe's own, a
    section's, or a plugin entry's (its entry keys and its plugin's options)."""
    if not parent:
        return list(Recipe.model_fields)
    section = str(parent[0])
    kind = KIND_OF_SECTION.get(section)
    if kind is not None:
        if len(parent) != (2 if kind.many else 1):
            return []
        raw: Any = data.get(section)
        if kind.many:
            raw = raw[parent[1]] if isinstance(raw, list) and isinstance(parent[1], int) else None
        use = raw.get("use") if isinstance(raw, Mapping) else None
        keys = kind.entry.entry_keys()
        info = plugins.registry.plugins.get(use) if isinstance(use, str) else None
        if info is not None and info.kind == kind.name:
            keys = [*keys, *info.cls.Options.model_fields]
        return keys
    field = Recipe.model_fields.get(section)
    model = _model_at(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None and len(parent) == 1 else []


def _report(
    problems: _Problems,
    exc: ValidationError,
    data: Mapping[str, Any],
    keys_at: Callable[[Path_], Iterable[str]],
) -> None:
    seen: set[tuple[Path_, str]] = set()
    for err in exc.errors():
        loc = _data_path(tuple(err["loc"]), data)
        kind = err["type"]
        if (loc, kind) in seen:
            continue
        seen.add((loc, kind))
        if kind == "extra_forbidden":
            key = str(loc[-1]) if loc else "?"
            names = sorted(keys_at(loc[:-1]))
            hint = did_you_mean(key, names)
            valid = f" (valid: {', '.join(names)})" if names else ""
            problems.add(loc, f"unknown key{hint}{valid}")
        elif kind == "missing":
            problems.add(loc, "required but missing")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            got = (
                f" (got {_short(err.get('input'))}{_yaml_typing_hint(kind, err.get('input'))})"
                if "input" in err and kind != "value_error"
                else ""
            )
            problems.add(loc, f"{msg}{got}")


def _plugin_files(data: Mapping[str, Any], problems: _Problems, base_dir: Path) -> list[Path]:
    """The recipe's ``plugins:`` files, checked first: their plugins validate the rest."""
    if "plugins" not in data:
        return []
    try:
        return TypeAdapter(PluginFiles).validate_python(
            data["plugins"], context={"base_dir": base_dir}
        )
    except ValidationError as exc:
        for err in exc.errors():
            where: Path_ = ("plugins", *(p for p in err["loc"] if isinstance(p, int)))
            problems.add(where, str(err["msg"]).removeprefix("Value error, "))
        problems.raise_if_any()
    return []


def validate_recipe(
    source: SourceText,
    base_dir: Path,
    plugins: PluginSet,
    overridden: set[Path_] = frozenset(),  # type: ignore[assignment]
    check_files: bool = True,
) -> Recipe:
    """Check raw data against the recipe's schema and every plugin's options."""
    problems = _Problems(source, set(overridden))
    data = source.data
    if data is None:
        raise RecipeError(f"{source.origin}: the recipe is empty")
    if not isinstance(data, Mapping):
        raise RecipeError(
            f"{source.origin}: a recipe is a YAML mapping (name:, generator:, losses: …), "
            f"not a {type(data).__name__}"
        )
    for key in data:
        if not isinstance(key, str):
            problems.add((), f"keys must be text, got {_short(key)}")
    problems.raise_if_any()
    context = {
        "plugins": plugins.registry,
        "base_dir": base_dir,
        "check_files": check_files,
        "origin": source.origin,
    }
    try:
        return Recipe.model_validate(dict(data), context=context)
    except ValidationError as exc:
        _report(problems, exc, data, lambda parent: _keys_at(parent, data, plugins))
    problems.raise_if_any()
    raise AssertionError("unreachable: a failed validation reports a problem")


def load_recipe(
    source: str | os.PathLike[str] | Mapping[str, Any],
    overrides: Iterable[str] | Mapping[str, Any] = (),
    *,
    extra_plugins: Sequence[object] = (),
    check_files: bool = True,
) -> Recipe:
    """Read, override and validate a recipe.

    :param source: a path to a YAML file, a YAML string or a dict.
    :param overrides: ``["steps=50", "losses.0.weight=2"]`` (values parsed as YAML) or a
        mapping ``{"steps": 50, "losses.0.weight": 2}`` (values used as they are).
    :param extra_plugins: plugin objects/modules the recipe's plugins may come from,
        besides the installed ones and its ``plugins:`` files (pass them again to run it).
    """
    parsed, base_dir = read_recipe_source(source)
    overridden = _apply_overrides(parsed, overrides)
    problems = _Problems(parsed, overridden)
    files = (
        _plugin_files(parsed.data, problems, base_dir) if isinstance(parsed.data, Mapping) else []
    )
    plugin_set = load_plugins(files=files, extra=extra_plugins)
    return validate_recipe(parsed, base_dir, plugin_set, overridden, check_files=check_files)
