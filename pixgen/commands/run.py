"""``pixgen run RECIPE``: run a recipe."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pixgen.errors import PixgenError, RunInterrupted


def run_command(
    recipe: Annotated[Path, typer.Argument(help="the recipe YAML file")],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", help="override a field: PATH=VALUE (value is YAML); repeatable"
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="run folder (must not exist or be empty)")
    ] = None,
    outputs_root: Annotated[
        Path, typer.Option("--outputs-root", help="where new run folders go")
    ] = Path("outputs"),
    offline: Annotated[
        bool, typer.Option("--offline", help="never download weights (also PIXGEN_OFFLINE=1)")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="no progress bar and no notices (run.json keeps them)"),
    ] = False,
) -> None:
    """Run a recipe: write final.png, run.json and the outputs into a new run folder."""
    from pixgen.engine import Engine
    from pixgen.models.weights import offline_mode
    from pixgen.recipe import load_recipe

    loaded, plugins = load_recipe(recipe, set_ or [])
    engine = Engine(
        loaded,
        plugins,
        output=output,
        outputs_root=outputs_root,
        quiet=quiet,
        offline=offline_mode(offline),
    )
    result = engine.run()
    where = result.run_dir
    if result.status == "interrupted":
        raise RunInterrupted(
            f"interrupted after {result.steps_done} of {loaded.steps} steps; "
            f"the image so far is in {where}/final.png and run.json records the interruption"
        )
    if result.status == "failed":  # pragma: no cover - errors propagate as exceptions
        raise PixgenError(f"run failed: {result.error}", exit_code=1)
    note = " (stopped early: no improvement)" if result.status == "early_stopped" else ""
    sys.stdout.write(f"{where}/final.png{note}\n")


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
