"""The engine: builds a run's plugins and runs the loop.

:meth:`Engine.run` reads top to bottom: open the run folder, start the outputs, then
for each step render, score, update, let the outputs record (last), and check whether to
stop; then finish (final image, outputs' ``on_finish``, ``run.json``). The step itself is
:mod:`pixgen.engine.step`, the loss history and its checks :mod:`pixgen.engine.history`,
the run folder's files :mod:`pixgen.engine.run_folder`, resume state
:mod:`pixgen.engine.resume_state`.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from pixgen.checkpoint import CHECKPOINT, Checkpoint, set_rng_state
from pixgen.context import RunContext
from pixgen.engine import resume_state
from pixgen.engine.blame import blame
from pixgen.engine.build import (
    build_animator,
    build_generator,
    build_losses,
    build_optimizer,
    build_outputs,
)
from pixgen.engine.devices import resolve_device, resolve_precision
from pixgen.engine.guards import StopRequest, cudnn_benchmark
from pixgen.engine.history import (
    FINITE_CHECK_INTERVAL_S,
    LossHistory,
    early_stop_due,
    stop_if_not_finite,
)
from pixgen.engine.result import RunResult
from pixgen.engine.run_folder import (
    device_name,
    error_text,
    iso_time,
    make_run_dir,
    versions,
    write_final_png,
    write_run_json,
)
from pixgen.engine.step import StepRunner
from pixgen.errors import LossNotFinite, PixgenError, PluginRunError
from pixgen.fileio import atomic_write_text, tensor_to_pil
from pixgen.plugins import PluginSet, plugins_for
from pixgen.progress import ProgressDisplay
from pixgen.schema import Recipe
from pixgen.steps import resolve_interval

# torch's warning for a schedule stepped in a step that did not step the optimiser.
_SCHEDULER_ORDER_WARNING = r"Detected call of `lr_scheduler\.step\(\)` before"


class Engine:
    """Builds the plugins of a validated recipe and runs the loop."""

    def __init__(
        self,
        recipe: Recipe,
        plugins: PluginSet | None = None,
        *,
        extra_plugins: Sequence[object] = (),
        output: str | os.PathLike[str] | None = None,
        outputs_root: str | os.PathLike[str] = "outputs",
        quiet: bool = True,
        offline: bool = False,
        write_files: bool = True,
        resume: Checkpoint | None = None,
    ):
        """``plugins``: the plugin set to build from (default: the recipe's own, with
        ``extra_plugins``). ``resume``: go on from this checkpoint of the run in the
        folder ``output`` (see :func:`pixgen.resume`)."""
        self.plugins = plugins if plugins is not None else plugins_for(recipe, extra_plugins)
        self.quiet = quiet
        self.device = resolve_device(recipe.device)
        self.precision = resolve_precision(recipe.precision, self.device)
        seed = recipe.seed if recipe.seed is not None else secrets.randbits(31)
        self.recipe = recipe.model_copy(update={"seed": seed})
        self.ctx = RunContext(
            recipe=self.recipe,
            device=self.device,
            precision=self.precision,
            seed=seed,
            run_dir=None,
            recipe_dir=recipe.base_dir,
            offline=offline,
            notice_sink=None if quiet else _print_notice,
        )
        self._output_arg = output
        self._outputs_root = outputs_root
        self._write_files = write_files
        self._stop = StopRequest(quiet)
        self._resume = resume
        self._checkpoint_step: int | None = None
        _seed_everything(seed)
        self.generator, self._generator_info = build_generator(self.recipe, self.plugins, self.ctx)
        self.ctx.generator = self.generator
        self.losses = build_losses(self.recipe, self.plugins, self.ctx)
        self.outputs = build_outputs(self.recipe, self.plugins, self.ctx)
        self.optimizer, self.scheduler = build_optimizer(
            self.recipe, self.generator, self._generator_info, self.device
        )
        self.animator = build_animator(self.recipe, self.generator)
        self.history = LossHistory()
        self.stepper = StepRunner(
            self.ctx,
            self.generator,
            self._generator_info,
            self.losses,
            self.optimizer,
            self.history,
        )
        if resume is not None:
            resume_state.restore(
                resume,
                self.recipe,
                seed,
                self.generator,
                self.optimizer,
                self.scheduler,
                self.animator,
            )
            self.history.restore(resume.history)
            self.ctx.start_step = resume.step
            self._checkpoint_step = resume.step  # on disk until a newer one replaces it
        for slot in self.losses:
            self.history.column(slot.label)

    # -- the loop --------------------------------------------------------------------
    def run(self) -> RunResult:
        """Paint the picture; a :class:`RunResult` however the run ends, or the error that
        ended it (after final.png and run.json are written)."""
        recipe, ctx = self.recipe, self.ctx
        run_dir = self._open_run_dir()
        start = steps_done = ctx.start_step
        checkpoint_every = self._checkpoint_interval(run_dir)
        started, t0 = time.time(), time.perf_counter()
        progress = ProgressDisplay(recipe.steps, enabled=not self.quiet, start=start)
        warming = ctx.compile_enabled
        if warming:
            progress.set_phase("warming up (compiling)")
        observe = self.plugins.has_observers("run_step")
        cudagraphs = ctx.compile_enabled and recipe.speed.mode == "reduce-overhead"
        next_finite_check = t0 + FINITE_CHECK_INTERVAL_S
        stopped_between_steps = False
        error: BaseException | None = None
        ctx.status = "running"
        with self._stop.installed(), cudnn_benchmark(self.device, recipe.speed.cudnn_benchmark):
            try:
                self._start()
                for step in range(start, recipe.steps):
                    if self._stop.requested:
                        ctx.status = "interrupted"
                        break
                    if checkpoint_every and step > start and step % checkpoint_every == 0:
                        self._save_checkpoint(step)
                    ctx.begin_step(step)
                    if cudagraphs:
                        torch.compiler.cudagraph_mark_step_begin()
                    if self.animator is not None and self.animator.due(step):
                        self._animate(step)
                    image, total, row = self.stepper.gradients(step)
                    self.history.record(row)
                    self._update(total, step)
                    steps_done = step + 1
                    self._record(step, image.detach(), row, observe)
                    if warming and step >= 3:
                        warming = False
                        progress.set_phase("painting")
                    if progress.due(step, recipe.steps):
                        progress.update(step, self.history.latest())
                    if time.perf_counter() >= next_finite_check or steps_done == recipe.steps:
                        stop_if_not_finite(self.history, self._active_labels)
                        next_finite_check = time.perf_counter() + FINITE_CHECK_INTERVAL_S
                    if early_stop_due(self.history, recipe.early_stop, step, recipe.steps):
                        ctx.status = "early_stopped"
                        break
                else:
                    ctx.status = "completed"
                # Not after an exception: a step cut short leaves no state to go on from.
                stopped_between_steps = True
            except KeyboardInterrupt:
                ctx.status = "interrupted"
            except BaseException as exc:
                ctx.status = "failed"
                error = exc
            finally:
                progress.close()
            if ctx.status == "running":
                ctx.status = "interrupted"
            if stopped_between_steps and run_dir is not None and steps_done > start:
                try:
                    self._save_checkpoint(steps_done)
                except Exception as exc:  # the image and run.json are still written
                    error = exc
            result, error = self._finish(
                run_dir, steps_done, started, time.perf_counter() - t0, error
            )
        if error is not None:
            self._hint_resume(error, run_dir)
            raise error
        return result

    # -- the loop's parts, in the order it uses them ---------------------------------------
    def _open_run_dir(self) -> Path | None:
        """The run folder with the resolved recipe.yaml in it (None: no files)."""
        if not self._write_files:
            return None
        if self._resume is not None:  # the run's own folder, checked by resume()
            run_dir = Path(self._output_arg)  # type: ignore[arg-type]
        else:
            run_dir = make_run_dir(self.recipe.name, self._output_arg, self._outputs_root)
        self.ctx.run_dir = run_dir
        atomic_write_text(run_dir / "recipe.yaml", self.recipe.to_yaml())
        return run_dir

    def _checkpoint_interval(self, run_dir: Path | None) -> int | None:
        recipe = self.recipe
        if recipe.checkpoint_every is None or run_dir is None:
            return None
        every = resolve_interval(recipe.checkpoint_every, recipe.steps)
        if every >= recipe.steps:
            self.ctx.notice(
                f"checkpoint_every ({every}) is not shorter than the run "
                f"({recipe.steps} steps): only the checkpoint at the end is written"
            )
        return every

    def _start(self) -> None:
        """Outputs' on_start, observers' run_started, then (resuming) the random states:
        last, so that the steps draw what they would have drawn unstopped."""
        for output, info in self.outputs:
            with blame(info, "on_start"):
                output.on_start(self.ctx)
        self.plugins.notify("run_started", ctx=self.ctx)
        if self._resume is not None:
            set_rng_state(self._resume.rng, self.device)

    def _animate(self, step: int) -> None:
        """Transform the current image and restart the generator from it."""
        assert self.animator is not None
        with torch.no_grad(), blame(self._generator_info, f"animation at step {step}"):
            current = self.generator().float()
            moved = self.animator.apply(current, step)
            self.generator.init_from_image(moved)
        if self.animator.config.reset_optimizer:
            self.optimizer.state.clear()

    def _update(self, total: torch.Tensor, step: int) -> None:
        """The optimiser's and the lr schedule's step, then the generator's post_step."""
        if total.requires_grad:
            self.optimizer.step()
            self.scheduler.step()
        else:  # nothing to learn (weights scheduled to 0): the lr still moves on
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_SCHEDULER_ORDER_WARNING)
                self.scheduler.step()
        with blame(self._generator_info, f"post_step {step}"):
            self.generator.post_step()

    def _record(self, step: int, image: torch.Tensor, row: torch.Tensor, observe: bool) -> None:
        """Outputs last, then observers: each sees this step's image and loss values."""
        wanting = [(output, info) for output, info in self.outputs if output.wants(step)]
        if wanting or observe:
            self.ctx.losses = self.history.row_dict(row)
        for output, info in wanting:
            with blame(info, f"step {step}"):
                output.on_step(self.ctx, step, image)
        if observe:
            self.plugins.notify("run_step", ctx=self.ctx, step=step, losses=self.ctx.losses)

    def _active_labels(self, step: int) -> list[str]:
        return [slot.label for slot in self.losses if slot.weight(step) != 0.0]

    def _save_checkpoint(self, steps_done: int) -> None:
        assert self.ctx.run_dir is not None
        resume_state.save(
            self.ctx.run_dir,
            steps_done,
            recipe=self.recipe,
            seed=self.ctx.seed,
            device=self.device,
            generator=self.generator,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            history=self.history,
            animator=self.animator,
        )
        self._checkpoint_step = steps_done

    def _hint_resume(self, error: BaseException, run_dir: Path | None) -> None:
        if (
            isinstance(error, PixgenError)
            and error.hint is None
            and run_dir is not None
            and self._checkpoint_step is not None
        ):
            error.hint = f"'pixgen resume {run_dir}' goes on from step {self._checkpoint_step}"

    # -- finishing -------------------------------------------------------------------------
    def _finish(
        self,
        run_dir: Path | None,
        steps_done: int,
        started: float,
        wall: float,
        error: BaseException | None,
    ) -> tuple[RunResult, BaseException | None]:
        """Final image, outputs' on_finish, run.json; the result and the run's first
        error (the loop's, else one raised while finishing)."""
        ctx = self.ctx
        ctx.begin_step(steps_done if ctx.status != "completed" else self.recipe.steps)
        final_tensor, error = self._final_image(error)
        last = self.history.latest()  # on_finish sees the last step's values
        if last:
            ctx.losses = {name: torch.tensor(value) for name, value in last.items()}
        summaries: dict[str, Any] = {}
        for output, output_info in self.outputs:
            label = output_info.name
            count = 2
            while label in summaries:
                label, count = f"{output_info.name}#{count}", count + 1
            try:
                with blame(output_info, "on_finish"):
                    # None when the final image could not be rendered: outputs still
                    # finish and close what they have.
                    output.on_finish(ctx, final_tensor)
                summaries[label] = output.summary()
            except BaseException as exc:
                error = error or exc
                summaries[label] = {"error": str(exc)}
        if error is not None and ctx.status in ("completed", "early_stopped"):
            ctx.status = "failed"  # an output that failed to finish lost its file
        image = (
            tensor_to_pil(final_tensor)
            if final_tensor is not None
            else Image.new("RGB", self.recipe.size)
        )
        history = self.history.as_dict()
        info = self._run_info(steps_done, started, wall, error, summaries, history)
        if run_dir is not None:
            if final_tensor is not None:
                write_final_png(run_dir, image, self.recipe.to_yaml(), ctx.seed)
            write_run_json(run_dir, info)
        result = RunResult(
            image=image,
            run_dir=run_dir,
            history=history,
            status=ctx.status,
            steps_done=steps_done,
            seed=ctx.seed,
            recipe=self.recipe,
            error=info.get("error"),
            info=info,
        )
        try:  # after run.json: an observer may read the finished run folder
            self.plugins.notify("run_finished", ctx=ctx, result=result)
        except PluginRunError as exc:
            error = error or PluginRunError(
                f"{exc.message} (the run itself ended: {ctx.status}; see run.json)"
            )
        return result, error

    def _final_image(
        self, error: BaseException | None
    ) -> tuple[torch.Tensor | None, BaseException | None]:
        """The generator's image after the last step, if it renders and is finite."""
        try:
            with torch.no_grad():
                rendered = self.generator().detach().float()
            self.stepper.check_shape(rendered)
            if not bool(torch.isfinite(rendered).all()):
                raise LossNotFinite("the final image is NaN or infinite; final.png not written")
            return rendered, error
        except Exception as exc:  # keep what we can; the first error wins
            return None, error or exc

    def _run_info(
        self,
        steps_done: int,
        started: float,
        wall: float,
        error: BaseException | None,
        summaries: dict[str, Any],
        history: dict[str, Any],
    ) -> dict[str, Any]:
        """run.json's content."""
        ctx = self.ctx
        return {
            **versions(),
            "recipe": self.recipe.name,
            "status": ctx.status,
            "interrupted": ctx.status == "interrupted",
            "error": error_text(error),
            "device": str(self.device),
            "device_name": device_name(self.device),
            "precision": self.precision,
            "seed": ctx.seed,
            "steps_planned": self.recipe.steps,
            "steps_done": steps_done,
            # This session's: a resumed run's start, time and speed count from its resume.
            "resumed_from_step": ctx.start_step if self._resume is not None else None,
            "started": iso_time(started),
            "wall_time_s": round(wall, 3),
            "steps_per_second": round((steps_done - ctx.start_step) / wall, 3)
            if wall > 0
            else None,
            "checkpoint": None
            if self._checkpoint_step is None
            else {"file": CHECKPOINT, "step": self._checkpoint_step},
            "outputs": summaries,
            "notices": list(ctx.notices),
            "history": history,
        }


def _print_notice(message: str) -> None:
    sys.stderr.write(f"note: {message}\n")


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
