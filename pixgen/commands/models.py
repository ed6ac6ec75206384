"""``pixgen models``: list, fetch, import, locate and remove model weights (CLIP, VQGAN …)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pixgen.models.weights import WeightsInfo, catalog, pixgen_home


def _size(info: WeightsInfo) -> str:
    if info.size_bytes is None:
        return "?"
    text = f"{info.size_bytes / 1e6:,.0f} MB" if info.size_bytes >= 1e6 else f"{info.size_bytes} B"
    return text if info.present else f"~{text}"


def _as_json(info: WeightsInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "kind": info.kind,
        "present": info.present,
        "path": str(info.path) if info.path else None,
        "size_bytes": info.size_bytes,
        "sha256": info.sha256,
        "source": info.source,
        "description": info.description,
    }


def register(app: typer.Typer) -> None:
    """Attach the ``models`` sub-command group to the root app."""
    models = typer.Typer(
        help="Model weights: what pixgen knows, what is cached, and how to get it.",
        no_args_is_help=True,
    )

    @models.command("list")
    def list_models(
        as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    ) -> None:
        """List every known model: name, kind, size, whether it is cached, and where."""
        entries = catalog().entries()
        if as_json:
            typer.echo(json.dumps([_as_json(e) for e in entries], indent=2))
            return
        # Plain aligned columns, never truncated: readable in any terminal and greppable.
        rows = [("NAME", "KIND", "SIZE", "PRESENT", "PATH")]
        rows += [
            (e.name, e.kind, _size(e), "yes" if e.present else "no", str(e.path or ""))
            for e in entries
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        typer.echo(f"weights cache: {pixgen_home()}")
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            typer.echo("  ".join([*cells, row[4]]).rstrip())

    @models.command("fetch")
    def fetch(
        name: str = typer.Argument(..., help="model name (see `pixgen models list`)"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar"),
    ) -> None:
        """Download a model's weights into the cache (resumes an interrupted download)."""
        path = catalog().fetch(name, progress=progress)
        typer.echo(str(path))

    @models.command("import")
    def import_(
        name: str = typer.Argument(..., help="the name to register the files under"),
        files: list[Path] = typer.Argument(..., help="the files (VQGAN: model.yaml and last.ckpt)"),
        kind: str | None = typer.Option(None, "--kind", help="kind of a new name (vqgan, clip)"),
    ) -> None:
        """Register local files (copied from another machine) as a model's weights."""
        path = catalog().import_files(name, list(files), kind=kind)
        typer.echo(str(path))

    @models.command("path")
    def path(name: str = typer.Argument(..., help="model name")) -> None:
        """Print where a model's weights are (an error when they are not cached)."""
        typer.echo(str(catalog().path(name)))

    @models.command("remove")
    def remove(name: str = typer.Argument(..., help="model name")) -> None:
        """Delete a model's weights from the cache."""
        cat = catalog()
        where = cat.info(name).path
        cat.remove(name)
        typer.echo(f"removed {name} ({where})", err=True)

    app.add_typer(models, name="models")
