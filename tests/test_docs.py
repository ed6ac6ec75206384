"""Docs that cannot drift: the generated reference, the hook table, the README's promises."""

from __future__ import annotations

from pathlib import Path

from pixgen import hookspecs
from pixgen.docgen import render

REPO = Path(__file__).resolve().parent.parent


def test_recipe_reference_is_up_to_date() -> None:
    current = (REPO / "docs" / "recipe-reference.md").read_text()
    assert current == render(), "docs/recipe-reference.md is stale: run `make docs`"


def test_every_hook_is_documented() -> None:
    guide = (REPO / "docs" / "writing-a-plugin.md").read_text()
    hooks = [n for n in dir(hookspecs) if n.startswith(("register_", "run_"))]
    assert hooks
    for name in hooks:
        assert f"`{name}(" in guide, f"hook {name} is missing from docs/writing-a-plugin.md"
