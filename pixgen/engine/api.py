"""The public entry points: :func:`run` and :func:`resume` (``pixgen.run``,
``pixgen.resume``), which the CLI's ``pixgen run`` and ``pixgen resume`` call."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pixgen.checkpoint import CHECKPOINT, read_checkpoint
from pixgen.engine.loop import Engine
from pixgen.engine.result import RunResult
from pixgen.errors import PixgenError
from pixgen.recipe import load_recipe, parse_override
from pixgen.schema import Recipe


def run(
    recipe: str | os.PathLike[str] | Mapping[str, Any] | Recipe,
    *,
    output: str | os.PathLike[str] | None = None,
    outputs_root: str | os.PathLike[str] = "outputs",
    set: Sequence[str] = (),
    plugins: Sequence[object] = (),
    quiet: bool = True,
    offline: bool = False,
    write_files: bool = True,
    **overrides: Any,
) -> RunResult:
    """Run a recipe and return its :class:`RunResult`.

    :param recipe: a path, a YAML string, a dict, or a loaded :class:`Recipe` (its
        ``plugins:`` files are loaded again from their paths).
    :param output: the run folder (must not exist or be empty); default
        ``outputs/<name>-<timestamp>/``.
    :param set: CLI-style overrides, ``["steps=50", "losses.0.weight=2"]``.
    :param plugins: extra plugin modules/objects to register for this run.
    :param overrides: field overrides by dotted path: ``run(r, steps=50)``; use
        ``**{"losses.0.weight": 2}`` for nested fields.
    """
    if isinstance(recipe, Recipe):
        if set or overrides:
            raise PixgenError(
                "overrides apply to a recipe being loaded; change a loaded Recipe with "
                "recipe.model_copy(update={...}) or load it again with the overrides"
            )
        loaded = recipe
    else:
        merged: dict[str, Any] = {}
        for text in set:
            path, value = parse_override(text)
            merged[".".join(path)] = value
        merged.update(overrides)
        loaded = load_recipe(recipe, merged, extra_plugins=plugins)
    engine = Engine(
        loaded,
        extra_plugins=plugins,
        output=output,
        outputs_root=outputs_root,
        quiet=quiet,
        offline=offline,
        write_files=write_files,
    )
    return engine.run()


def resume(
    run_dir: str | os.PathLike[str],
    *,
    steps: int | None = None,
    plugins: Sequence[object] = (),
    quiet: bool = True,
    offline: bool = False,
) -> RunResult:
    """Go on with the run in ``run_dir`` from its ``checkpoint.pt`` and return its
    :class:`RunResult`.

    The run's own ``recipe.yaml`` is used (its seed included), so the steps after the
    checkpoint are those an unstopped run would have made. ``steps`` sets a new length
    (more than the checkpoint's step), e.g. to paint a finished run further; schedules
    and intervals given as shares of the run stretch with it. Outputs go on in the same
    folder: stills are added and the progress video is made again with the frames kept
    so far (see the ``video`` output).
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        what = "a file" if folder.exists() else "no such folder"
        raise PixgenError(f"{folder} is not a run folder ({what})")
    if steps is not None and not 1 <= steps <= 1_000_000:
        raise PixgenError(f"steps is {steps}: give a run length from 1 to 1000000")
    recipe_file = folder / "recipe.yaml"
    if not recipe_file.is_file():
        raise PixgenError(f"{folder} is not a run folder (it has no recipe.yaml)")
    checkpoint = read_checkpoint(folder / CHECKPOINT)
    loaded = load_recipe(
        recipe_file, {"steps": steps} if steps is not None else {}, extra_plugins=plugins
    )
    if checkpoint.step >= loaded.steps:
        asked = (
            f"--steps {steps} is not more than the {checkpoint.step} steps it has done"
            if steps is not None
            else f"it has done all {loaded.steps} of its steps"
        )
        raise PixgenError(
            f"nothing to resume in {folder}: {asked}; give a longer run to go on "
            f"(pixgen resume {folder} --steps N, N > {checkpoint.step})"
        )
    engine = Engine(
        loaded,
        extra_plugins=plugins,
        output=folder,
        quiet=quiet,
        offline=offline,
        resume=checkpoint,
    )
    return engine.run()
