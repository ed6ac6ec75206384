"""The shape of the contract: no import cycles, one table of plugin kinds, recipes that
carry their plugin files, and plugin-author mistakes named with their file."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path
from typing import get_args

import pytest
import yaml

import pixgen
from pixgen.cli import main
from pixgen.errors import PixgenError, UnknownPlugin
from pixgen.kinds import PLUGIN_KINDS
from pixgen.plugins import load_plugins
from pixgen.recipe import load_recipe
from pixgen.schema import Recipe

PACKAGE = Path(pixgen.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(tree: ast.Module) -> list[ast.ImportFrom | ast.Import]:
    """Imports a module runs when imported, or names for its types: the module body and
    its ``if`` / ``try`` blocks (``if TYPE_CHECKING:`` included), not function bodies."""
    found: list[ast.ImportFrom | ast.Import] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If | ast.Try):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []):
                    pending.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
    return found


def import_graph() -> dict[str, set[str]]:
    """pixgen's modules and the pixgen modules each imports."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in _module_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                    for alias in node.names
                ]
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def test_pixgen_has_no_import_cycles() -> None:
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_contract_modules_are_leaves() -> None:
    """Option types and the recipe's data model import no plugin machinery; the run
    context imports neither the loader nor the plugin classes."""
    graph = import_graph()
    assert graph["pixgen.options"] == set()
    assert graph["pixgen.schema"] <= {"pixgen.options", "pixgen.steps"}
    assert not graph["pixgen.context"] & {"pixgen.plugins", "pixgen.plugin", "pixgen.recipe"}


def test_every_plugin_kind_has_its_recipe_section_hook_and_template() -> None:
    from pixgen import hookspecs
    from pixgen.commands.plugins import TEMPLATES, TemplateKind

    for kind in PLUGIN_KINDS.values():
        assert kind.section in Recipe.model_fields, kind
        assert kind.entry.kind == kind.name
        assert kind.base.kind == kind.name
        assert hasattr(hookspecs, kind.hook)
        assert (TEMPLATES / f"{kind.name}.py.tmpl").is_file()
    assert set(get_args(TemplateKind)) == set(PLUGIN_KINDS)


def test_an_unknown_plugin_is_a_pixgen_error() -> None:
    registry = load_plugins().registry
    with pytest.raises(UnknownPlugin, match="did you mean 'pixel'") as raised:
        registry.get("pixle", "generator")
    assert isinstance(raised.value, PixgenError)
    with pytest.raises(UnknownPlugin, match="'smoothness' is a loss, not a generator"):
        registry.get("smoothness", "generator")


LOCAL_LOSS = """
import pixgen


class Dim(pixgen.Loss):
    \"\"\"Pulls the picture towards black.\"\"\"

    name = "dim"

    def __call__(self, image, ctx):
        return image.mean()


@pixgen.hookimpl
def register_losses(register):
    register(Dim)
"""


def _recipe_with(plugin_file: str, tmp_path: Path) -> Path:
    recipe = {
        "plugins": [plugin_file],
        "size": [16, 16],
        "steps": 3,
        "device": "cpu",
        "seed": 1,
        "generator": "pixel",
        "losses": ["dim"],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_loaded_recipe_carries_its_plugin_files_and_runs(tmp_path: Path) -> None:
    (tmp_path / "dim.py").write_text(LOCAL_LOSS)
    recipe = load_recipe(_recipe_with("./dim.py", tmp_path))
    assert isinstance(recipe, Recipe)
    assert recipe.plugins == [(tmp_path / "dim.py").resolve()]
    assert "dim" not in pixgen.plugins.default_plugins().registry.plugins  # no side effect
    result = pixgen.run(recipe, output=tmp_path / "run")
    assert result.status == "completed" and "dim" in result.history["losses"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            LOCAL_LOSS.replace("@pixgen.hookimpl\n", ""),
            "register_losses() is not marked @pixgen.hookimpl",
        ),
        (
            LOCAL_LOSS.replace("def register_losses", "def register_loss"),
            "'register_loss' is marked @pixgen.hookimpl but pixgen has no such hook; "
            "did you mean 'register_losses'?",
        ),
        ("import pixgen\n", "implements no pixgen hook"),
    ],
    ids=["hookimpl forgotten", "hook misspelt", "no hook"],
)
def test_a_plugin_file_that_registers_nothing_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, message: str
) -> None:
    (tmp_path / "dim.py").write_text(textwrap.dedent(source))
    assert main(["run", str(_recipe_with("./dim.py", tmp_path))]) == 2
    err = capsys.readouterr().err
    assert message in err and str(tmp_path / "dim.py") in err
    assert "internal" not in err and "Traceback" not in err
