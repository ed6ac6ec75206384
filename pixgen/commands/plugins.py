"""``pixgen plugins list|show|new``: what is installed, what options each plugin takes,
and a working plugin file to start your own from."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

if TYPE_CHECKING:
    from pixgen.plugins import PluginSet

plugins_app = typer.Typer(
    help="List plugins, show their options, start a new one.", no_args_is_help=True
)

PluginFiles = Annotated[
    list[Path] | None,
    typer.Option(
        "--plugin",
        "-p",
        help="also load this local plugin file, as a recipe's plugins: does (repeatable)",
    ),
]


def _plugins(files: list[Path] | None) -> PluginSet:
    """The installed plugins, plus ``files`` loaded as a recipe would load them."""
    from pixgen.plugins import default_plugins, load_plugins

    return load_plugins(files) if files else default_plugins()


def describe_options(cls: type) -> list[dict[str, Any]]:
    """Each option of a plugin class: name, type, bounds, default, description."""
    from dataclasses import asdict

    from pixgen.docgen import describe_fields

    return [asdict(row) for row in describe_fields(cls.Options)]  # type: ignore[attr-defined]


@plugins_app.command("list")
def list_plugins(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    files: PluginFiles = None,
) -> None:
    """Every plugin: name, kind, where it comes from, what it does."""
    plugins = _plugins(files)
    infos = sorted(plugins.registry.plugins.values(), key=lambda i: (i.kind, i.name))
    if as_json:
        data = [
            {
                "name": i.name,
                "kind": i.kind,
                "source": i.source,
                "file": i.file,
                "summary": i.summary,
            }
            for i in infos
        ]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    for column in ("name", "kind", "from", "what it does"):
        table.add_column(column)
    for i in infos:
        table.add_row(i.name, i.kind, i.source, i.summary)
    Console(width=160).print(table)


@plugins_app.command("show")
def show_plugin(
    name: Annotated[str, typer.Argument(help="plugin name, e.g. pixel or clip")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    files: PluginFiles = None,
) -> None:
    """A plugin's options with types, defaults and docs."""
    from dataclasses import asdict

    from pixgen.docgen import describe_fields
    from pixgen.errors import UnknownPlugin
    from pixgen.kinds import PLUGIN_KINDS

    plugins = _plugins(files)
    try:
        info = plugins.registry.get(name)
    except UnknownPlugin as exc:
        if not files:
            exc.hint = "a plugin in a local file: add --plugin FILE"
        raise
    rows = describe_options(info.cls)
    entry = PLUGIN_KINDS[info.kind].entry
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "name": info.name,
                    "kind": info.kind,
                    "source": info.source,
                    "doc": info.cls.plain_doc(),
                    "entry_keys": [
                        asdict(row) for row in describe_fields(entry, skip={"use", "options"})
                    ],
                    "options": rows,
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
        return
    out = [f"{info.name} ({info.kind}, from {info.source})", ""]
    doc = info.cls.plain_doc()
    if doc:
        out += [doc, ""]
    entry_rows = describe_fields(entry, skip={"use", "options"})
    if entry_rows:
        out.append(f"entry keys (every {info.kind} has them):")
        out += [_option_line(row) for row in entry_rows]
    out.append("options:")
    out += [_option_line(row) for row in describe_fields(info.cls.Options)]
    sys.stdout.write("\n".join(out) + "\n")


def _option_line(row: Any) -> str:
    from pixgen.docgen import REQUIRED

    default = "" if row.default == REQUIRED else f" = {row.default!r}"
    return f"  {row.name}: {row.type_and_bounds}{default}  -- {row.description}"


TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
# The kinds `plugins new` has a template for (pixgen/templates/KIND.py.tmpl); a test keeps
# this in step with pixgen.kinds.PLUGIN_KINDS (imported lazily: it loads torch).
TemplateKind = Literal["generator", "loss", "output"]


def new_plugin_source(kind: str, name: str, file_name: str) -> str:
    """The source of a working ``kind`` plugin called ``name`` (to be saved as ``file_name``)."""
    from string import Template

    cls = "".join(part.capitalize() for part in name.split("_")) + kind.capitalize()
    template = Template((TEMPLATES / f"{kind}.py.tmpl").read_text(encoding="utf-8"))
    return template.substitute(name=name, cls=cls, file=file_name)


def _a(kind: str) -> str:
    return f"an {kind}" if kind == "output" else f"a {kind}"


@plugins_app.command("new")
def new_plugin(
    kind: Annotated[TemplateKind, typer.Argument(help="generator, loss or output")],
    name: Annotated[str, typer.Argument(help="the plugin's name in recipes, e.g. glow")],
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="where to write it [default: NAME.py]")
    ] = None,
) -> None:
    """Write a small, working plugin of that kind to start your own from."""
    import re

    from pixgen.errors import PixgenError
    from pixgen.fileio import atomic_write_text
    from pixgen.plugins import default_plugins

    if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
        raise PixgenError(
            f"plugin name {name!r}: use lower-case letters, digits and _ (a letter first), "
            "as recipes write it: glow, soft_edges"
        )
    taken = default_plugins().registry.plugins.get(name)
    if taken is not None:
        raise PixgenError(
            f"{_a(taken.kind)} called {name!r} is installed already (from {taken.source}); "
            "choose another name"
        )
    path = file if file is not None else Path(f"{name}.py")
    if path.suffix != ".py":
        raise PixgenError(f"--file {path}: a plugin file ends in .py")
    if path.exists():
        raise PixgenError(f"{path} exists already; pixgen does not overwrite it")
    atomic_write_text(path, new_plugin_source(kind, name, path.name))
    sys.stdout.write(
        f"wrote {path}: {_a(kind)} plugin called {name!r}\n"
        f"  use it:       add 'plugins: [./{path.name}]' to a recipe beside it, then "
        f"'use: {name}'\n"
        f"  its options:  pixgen plugins show {name} -p {path}\n"
        "  the contract: docs/writing-a-plugin.md\n"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(plugins_app, name="plugins")
