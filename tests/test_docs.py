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


def test_the_plugin_guides_first_example_runs_as_written(tmp_path: Path) -> None:
    """brightness.py and its recipe, copied from docs/writing-a-plugin.md, paint."""
    import re

    from pixgen.cli import main

    guide = (REPO / "docs" / "writing-a-plugin.md").read_text()
    python = re.search(r"```python\n(# brightness\.py\n.*?)```", guide, re.S)
    recipe = re.search(r"```yaml\n(plugins: \[\./brightness\.py\].*?)```", guide, re.S)
    assert python and recipe, "the guide's brightness example moved"
    (tmp_path / "brightness.py").write_text(python.group(1))
    (tmp_path / "r.yaml").write_text(recipe.group(1))
    run = tmp_path / "run"
    argv = ["run", str(tmp_path / "r.yaml"), "-q", "-o", str(run), "--set", "steps=5"]
    assert main([*argv, "--set", "device=cpu"]) == 0
    assert (run / "final.png").exists()
    assert main(["plugins", "show", "brightness", "--plugin", str(tmp_path / "brightness.py")]) == 0
