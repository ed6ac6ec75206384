"""YAML with lines: parsing a recipe's text safely, keeping each value's line.

PyYAML's safe loader composes the document; before any Python object is constructed,
the node tree is walked to record where each value came from and to refuse what no
recipe needs: more than :data:`MAX_VALUES` values once aliases are expanded (a "billion
laughs" bomb), recursive aliases, nesting deeper than :data:`MAX_DEPTH`, files over
:data:`MAX_RECIPE_BYTES`, and keys given twice in one mapping.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from pixgen.errors import RecipeError

MAX_RECIPE_BYTES = 1 << 20
MAX_VALUES = 20_000  # after alias expansion
MAX_DEPTH = 64

Path_ = tuple[str | int, ...]
"""A place in the recipe's data: ``("losses", 1, "weight")``."""


def format_path(path: Iterable[str | int]) -> str:
    """``("losses", 1, "weight")`` as ``losses[1].weight``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


@dataclass
class SourceText:
    """Parsed YAML and where each value came from."""

    data: Any
    lines: dict[Path_, int]
    origin: str  # file name or "<string>"


def _walk_nodes(
    node: yaml.Node,
    path: Path_,
    lines: dict[Path_, int],
    budget: list[int],
    stack: set[int],
    depth: int,
) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise RecipeError(
            f"the recipe has more than {MAX_VALUES} values once its aliases are expanded; "
            "refusing it (a YAML bomb?)"
        )
    if depth > MAX_DEPTH:
        raise RecipeError(f"the recipe is nested more than {MAX_DEPTH} levels deep")
    if id(node) in stack:
        raise RecipeError(
            f"line {node.start_mark.line + 1}: recursive YAML alias; a recipe cannot refer to itself"
        )
    if isinstance(node, yaml.MappingNode):
        stack.add(id(node))
        first_line_of: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            line = key_node.start_mark.line + 1
            # YAML keeps the last of two equal keys; a recipe that says two things is a
            # mistake. Merge keys (<<) are YAML's own way to give defaults, so exempt.
            if key in first_line_of and key != "<<":
                where = format_path((*path, key))
                raise RecipeError(
                    f"line {line}: {where} is given twice (first on line {first_line_of[key]}); "
                    "keep one"
                )
            first_line_of.setdefault(key, line)
            child = (*path, key)
            lines.setdefault(child, line)
            _walk_nodes(key_node, child, lines, budget, stack, depth + 1)
            _walk_nodes(value_node, child, lines, budget, stack, depth + 1)
        stack.discard(id(node))
    elif isinstance(node, yaml.SequenceNode):
        stack.add(id(node))
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines.setdefault(child, item.start_mark.line + 1)
            _walk_nodes(item, child, lines, budget, stack, depth + 1)
        stack.discard(id(node))


# A hex colour where a YAML value starts: YAML reads it as a comment.
_BARE_COLOUR = re.compile(r"(?:^|[\[{,:]|-)\s*(#[0-9A-Fa-f]{3,8})\b", re.M)


def _colour_comment_hint(text: str | None) -> str:
    """A hint when ``text`` has an unquoted hex colour, which YAML takes for a comment."""
    found = _BARE_COLOUR.search(text or "")
    if not found:
        return ""
    return (
        f"; an unquoted {found.group(1)} starts a YAML comment: write colours in quotes, "
        f'like "{found.group(1)}"'
    )


@contextlib.contextmanager
def _yaml_errors(origin: str) -> Iterator[None]:
    """PyYAML's exceptions (and runaway nesting) as one RecipeError with the line."""
    try:
        yield
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        buffer = getattr(mark, "buffer", None) if mark else None
        hint = _colour_comment_hint(buffer if isinstance(buffer, str) else None)
        raise RecipeError(f"{origin}: {where}not valid YAML ({problem}){hint}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{origin}: not valid YAML ({exc})") from None
    except RecursionError:
        raise RecipeError(f"{origin}: nested too deeply to be a recipe") from None


def parse_yaml(text: str, origin: str = "<string>") -> SourceText:
    """Parse YAML safely, keeping lines; raise :class:`RecipeError` on anything odd."""
    if len(text.encode("utf-8", "ignore")) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{origin}: larger than {MAX_RECIPE_BYTES} bytes; not a recipe")
    loader = yaml.SafeLoader(text)
    try:
        with _yaml_errors(origin):
            node = loader.get_single_node()
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}
    if node is None:
        return SourceText(None, lines, origin)
    try:
        _walk_nodes(node, (), lines, [MAX_VALUES], set(), 0)
    except RecipeError as exc:
        raise RecipeError(f"{origin}: {exc.message}") from None
    constructor = yaml.SafeLoader("")
    try:
        with _yaml_errors(origin):
            data = constructor.construct_document(node)
    finally:
        constructor.dispose()
    return SourceText(data, lines, origin)
