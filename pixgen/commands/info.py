"""``pixgen info IMAGE``: the recipe and seed embedded in a pixgen PNG."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer


def info_command(
    image: Annotated[Path, typer.Argument(help="a PNG written by pixgen (e.g. final.png)")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Print the recipe and seed a pixgen PNG was made with."""
    from pixgen.errors import PixgenError
    from pixgen.fileio import png_text

    text = png_text(image)
    if "pixgen:recipe" not in text:
        raise PixgenError(f"{image} carries no pixgen recipe (not written by pixgen?)")
    if as_json:
        sys.stdout.write(json.dumps(text, indent=2) + "\n")
        return
    sys.stdout.write(
        f"# pixgen {text.get('pixgen:version', '?')}, seed {text.get('pixgen:seed')}\n"
    )
    sys.stdout.write(text["pixgen:recipe"])


def register(app: typer.Typer) -> None:
    app.command("info")(info_command)
