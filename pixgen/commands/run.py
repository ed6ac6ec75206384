"""``pixgen run RECIPE`` and ``pixgen resume RUN_DIR``: run a recipe, go on with a run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pixgen.commands import OfflineOption, QuietOption
from pixgen.errors import PixgenError, RunInterrupted

if TYPE_CHECKING:
    from pixgen.engine import RunResult


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
    offline: OfflineOption = False,
    quiet: QuietOption = False,
) -> None:
    """Run a recipe: write final.png, run.json and the outputs into a new run folder."""
    from pixgen.engine import run
    from pixgen.models.weights import offline_mode

    result = run(
        recipe,
        set=set_ or [],
        output=output,
        outputs_root=outputs_root,
        quiet=quiet,
        offline=offline_mode(offline),
    )
    report(result)


def resume_command(
    run_dir: Annotated[Path, typer.Argument(help="the run folder to go on with")],
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps",
            "-n",
            min=1,
            max=1_000_000,
            help="the run's new length in steps (default: the recipe's); "
            "more than a finished run's to paint it further",
        ),
    ] = None,
    offline: OfflineOption = False,
    quiet: QuietOption = False,
) -> None:
    """Go on with a stopped run from its checkpoint.pt, in the same folder."""
    from pixgen.engine import resume
    from pixgen.models.weights import offline_mode

    report(resume(run_dir, steps=steps, quiet=quiet, offline=offline_mode(offline)))


def report(result: RunResult) -> None:
    """The run's final image on stdout, or the error its status calls for."""
    where = result.run_dir
    if result.status == "interrupted":
        raise RunInterrupted(
            f"interrupted after {result.steps_done} of {result.recipe.steps} steps; "
            f"the image so far is in {where}/final.png and run.json records the interruption"
            + (
                f"; 'pixgen resume {where}' goes on from step {result.info['checkpoint']['step']}"
                if result.info.get("checkpoint")
                else ""
            )
        )
    if result.status == "failed":  # pragma: no cover - errors propagate as exceptions
        raise PixgenError(f"run failed: {result.error}", exit_code=1)
    note = " (stopped early: no improvement)" if result.status == "early_stopped" else ""
    sys.stdout.write(f"{where}/final.png{note}\n")


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("resume")(resume_command)
