"""``pixgen info IMAGE...``: the recipe and seed embedded in pixgen PNGs."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

# Control characters other than newline and tab: a PNG's text could move the cursor,
# recolour or retitle the terminal (escape sequences), so they are shown escaped.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    return _CONTROL.sub(lambda m: ascii(m.group())[1:-1], text)


def info_command(
    images: Annotated[
        list[Path], typer.Argument(help="PNGs written by pixgen (e.g. outputs/*/final.png)")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Print the recipe and seed each pixgen PNG was made with."""
    from pixgen.errors import PixgenError
    from pixgen.fileio import png_text

    found: dict[str, dict[str, str]] = {}
    foreign: list[str] = []
    for image in images:
        text = png_text(image)
        if "pixgen:recipe" in text:
            found[str(image)] = text
        else:
            foreign.append(str(image))
    if as_json:
        # one image: its text chunks; several: the same, keyed by file
        data = next(iter(found.values())) if len(images) == 1 and found else found
        if found:
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        several = len(images) > 1
        for file, text in found.items():
            if several:
                sys.stdout.write(f"# {_printable(file)}\n")
            version, seed = text.get("pixgen:version", "?"), text.get("pixgen:seed")
            sys.stdout.write(_printable(f"# pixgen {version}, seed {seed}\n"))
            sys.stdout.write(_printable(text["pixgen:recipe"]) + ("\n" if several else ""))
    if foreign:
        raise PixgenError(
            f"{', '.join(foreign)} {'carries' if len(foreign) == 1 else 'carry'} no pixgen "
            "recipe (not written by pixgen?)"
        )


def register(app: typer.Typer) -> None:
    app.command("info")(info_command)
