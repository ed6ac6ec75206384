"""The optimisation loop.

Read it top to bottom: :func:`run` loads the recipe, :class:`Engine` builds the plugins,
makes the run folder, and :meth:`Engine.run` steps: render, score, record, update,
outputs last. Speed tricks (autocast, fused optimisers) live behind this loop and are
invisible to plugins. Losses are recorded on the device and read back only when the
progress display, an early-stop check or the end of the run needs them, so a step does
no host synchronisation of its own.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import secrets
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

import pixgen
from pixgen.animation import Animator
from pixgen.checkpoint import (
    CHECKPOINT,
    Checkpoint,
    read_checkpoint,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from pixgen.context import RunContext
from pixgen.errors import (
    DeviceError,
    LossNotFinite,
    PixgenError,
    PluginRunError,
    RecipeError,
)
from pixgen.fileio import RUN_FOLDER_FILES, atomic_write_text, save_png, tensor_to_pil
from pixgen.plugin import Generator, Loss, Output
from pixgen.plugins import PluginInfo, PluginSet
from pixgen.progress import ProgressDisplay
from pixgen.recipe import OptimizerConfig, Recipe, load_recipe
from pixgen.steps import ScheduleFn, resolve_interval, resolve_step

# -- devices, precision, optimisers ------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable explicit device is an error."""
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} was asked for, but PyTorch sees no CUDA GPU "
                f"(torch {torch.__version__}); use auto or cpu instead"
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} was asked for, but only {torch.cuda.device_count()} "
                "CUDA GPU(s) are visible"
            )
        return torch.device("cuda", index)
    if not re.fullmatch(r"cpu|mps", name):
        raise DeviceError(f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N or mps")
    if name == "mps" and not mps_ok:
        raise DeviceError("device 'mps' was asked for, but Apple's MPS is not available")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def _make_adam(params: Any, cfg: OptimizerConfig, device: torch.device) -> torch.optim.Optimizer:
    fused = device.type == "cuda"
    return torch.optim.Adam(
        params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused or None
    )


def _make_adamw(params: Any, cfg: OptimizerConfig, device: torch.device) -> torch.optim.Optimizer:
    fused = device.type == "cuda"
    return torch.optim.AdamW(
        params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused or None
    )


def _make_sgd(params: Any, cfg: OptimizerConfig, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


OPTIMIZERS: dict[str, Callable[[Any, OptimizerConfig, torch.device], torch.optim.Optimizer]] = {
    "adam": _make_adam,
    "adamw": _make_adamw,
    "sgd": _make_sgd,
}


def lr_factor(cfg: OptimizerConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base lr at each step: warm-up, then the schedule, times drops."""
    warmup = resolve_step(cfg.warmup, total_steps)
    drops = sorted(resolve_step(d, total_steps) for d in cfg.drops)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            value = (step + 1) / warmup
        else:
            span = max(1, total_steps - warmup)
            t = min(1.0, (step - warmup) / span)
            floor = cfg.min_lr_factor
            if cfg.schedule == "cosine":
                value = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
            elif cfg.schedule == "linear":
                value = 1 - (1 - floor) * t
            else:
                value = 1.0
        for drop in drops:
            if step >= drop:
                value *= cfg.drop_factor
        return value

    return factor


# -- results -----------------------------------------------------------------------------


@dataclass
class RunResult:
    """What a run produced."""

    image: Image.Image
    run_dir: Path | None
    history: dict[str, Any]
    status: str  # completed | early_stopped | interrupted | failed
    steps_done: int
    seed: int
    recipe: Recipe
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def final_path(self) -> Path | None:
        return self.run_dir / "final.png" if self.run_dir else None


# -- the run folder ----------------------------------------------------------------------


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return slug[:60] or "run"


def make_run_dir(
    name: str, output: str | os.PathLike[str] | None, root: str | os.PathLike[str] = "outputs"
) -> Path:
    """A new, empty folder for the run; never reuses a folder that has files in it."""
    if output is not None:
        path = Path(output)
        if path.exists():
            if not path.is_dir():
                raise PixgenError(f"--output {path} exists and is not a folder")
            if any(path.iterdir()):
                raise PixgenError(
                    f"--output {path} already exists and is not empty; pixgen never "
                    "overwrites a run (choose another folder)"
                )
            return path
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise PixgenError(
                f"cannot create the run folder {path}: {exc.strerror or exc}"
            ) from exc
        return path
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{_slug(name)}-{stamp}"
    for attempt in range(1, 1000):
        path = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise PixgenError(
                f"cannot create the run folder {path}: {exc.strerror or exc}"
            ) from exc
    raise PixgenError(f"cannot find a free run folder name under {root}")


# -- plugin calls that name the culprit --------------------------------------------------


def _telling_line(exc: BaseException) -> str:
    """The line of an error's message that says most (load_state_dict's first line only
    names the class; the size mismatch is further down)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    for line in lines:
        if "size mismatch" in line or "Missing key" in line or "Unexpected key" in line:
            return line.rstrip(".")
    return lines[0] if lines else type(exc).__name__


def _out_of_memory(what: str) -> PixgenError:
    return PixgenError(
        f"out of GPU memory in {what}; lower the size, the cutouts or use fewer models"
    )


@contextlib.contextmanager
def _blame(info: PluginInfo, what: str) -> Iterator[None]:
    """Turn an exception from plugin code into one message naming the plugin and file."""
    try:
        yield
    except (PixgenError, KeyboardInterrupt):
        raise
    except torch.cuda.OutOfMemoryError as exc:
        raise _out_of_memory(what) from exc
    except Exception as exc:
        source = f" ({info.file})" if info.file else ""
        raise PluginRunError(
            f"{info.kind} plugin {info.name!r}{source} failed in {what}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


@dataclass
class _LossSlot:
    label: str
    loss: Loss
    info: PluginInfo
    weight: ScheduleFn


# torch's warning for a schedule stepped in a step that did not step the optimiser.
_SCHEDULER_ORDER_WARNING = r"Detected call of `lr_scheduler\.step\(\)` before"

# How often the loop reads the loss back to stop a run whose loss is NaN or infinite.
FINITE_CHECK_INTERVAL_S = 1.0


class _History:
    """Per-step loss values kept on the device; read back in batches."""

    def __init__(self) -> None:
        self.columns: list[str] = ["total"]
        self._pending: list[torch.Tensor] = []
        self.rows: list[list[float]] = []
        self._finite_rows = 0  # rows already found to have a finite total

    def column(self, name: str) -> int:
        if name not in self.columns:
            self.columns.append(name)
        return self.columns.index(name)

    def record(self, values: torch.Tensor) -> None:
        self._pending.append(values.detach())

    def sync(self) -> None:
        if not self._pending:
            return
        width = max(v.numel() for v in self._pending)
        padded = [
            torch.nn.functional.pad(v.float(), (0, width - v.numel()), value=math.nan)
            for v in self._pending
        ]
        host = torch.stack(padded).cpu().tolist()
        self.rows.extend(host)
        self._pending.clear()

    def first_non_finite_total(self) -> int | None:
        """The first step read back whose weighted total is NaN or infinite, if any."""
        self.sync()
        for step in range(self._finite_rows, len(self.rows)):
            if not math.isfinite(self.rows[step][0]):
                return step
        self._finite_rows = len(self.rows)
        return None

    def latest(self) -> dict[str, float]:
        self.sync()
        if not self.rows:
            return {}
        row = self.rows[-1]
        return {c: row[i] for i, c in enumerate(self.columns) if i < len(row)}

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue the history of a checkpoint (a loss added since gets a new column)."""
        self.columns = list(saved["columns"])
        self.rows = [list(map(float, row)) for row in saved["rows"]]

    def state(self) -> dict[str, Any]:
        self.sync()
        return {"columns": list(self.columns), "rows": [list(row) for row in self.rows]}

    def as_dict(self) -> dict[str, Any]:
        self.sync()

        def col(i: int) -> list[float | None]:
            return [None if i >= len(r) or math.isnan(r[i]) else r[i] for r in self.rows]

        return {
            "step": list(range(len(self.rows))),
            "total": col(0),
            "losses": {c: col(i) for i, c in enumerate(self.columns) if i > 0},
        }


# -- the engine --------------------------------------------------------------------------


class Engine:
    """Builds the plugins of a validated recipe and runs the loop."""

    def __init__(
        self,
        recipe: Recipe,
        plugins: PluginSet,
        *,
        output: str | os.PathLike[str] | None = None,
        outputs_root: str | os.PathLike[str] = "outputs",
        quiet: bool = True,
        offline: bool = False,
        write_files: bool = True,
        resume: Checkpoint | None = None,
    ):
        """``resume``: go on from this checkpoint of the run in the folder ``output``
        (see :func:`resume`)."""
        self.recipe = recipe
        self.plugins = plugins
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
            notice_sink=None if quiet else self._print_notice,
        )
        self._output_arg = output
        self._outputs_root = outputs_root
        self._write_files = write_files
        self._stop_requested = False
        self._resume = resume
        self._checkpoint_step: int | None = None
        self._column_indices: dict[tuple[int, ...], torch.Tensor] = {}
        self._seed_everything(seed)
        self.generator = self._build_generator()
        self.ctx.generator = self.generator
        self.losses = self._build_losses()
        self.outputs = self._build_outputs()
        self.optimizer = self._build_optimizer()
        self.animator = self._build_animator()
        if resume is not None:
            self._restore(resume)

    # -- set-up ----------------------------------------------------------------------
    @staticmethod
    def _print_notice(message: str) -> None:
        sys.stderr.write(f"note: {message}\n")

    @staticmethod
    def _seed_everything(seed: int) -> None:
        import random

        import numpy as np

        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _build_generator(self) -> Generator:
        entry = self.recipe.generator
        info = self.plugins.registry.get(entry.use, "generator")
        with _blame(info, "set-up"):
            generator = info.cls(entry.options, self.ctx)  # type: ignore[call-arg]
            generator.to(self.device)
        self._generator_info = info
        return generator  # type: ignore[return-value]

    def _build_losses(self) -> list[_LossSlot]:
        slots: list[_LossSlot] = []
        seen: dict[str, int] = {}
        for entry in self.recipe.losses:
            info = self.plugins.registry.get(entry.use, "loss")
            with _blame(info, "set-up"):
                loss = info.cls(entry.options, self.ctx)  # type: ignore[call-arg]
            label = entry.label or entry.use
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                label = f"{label}#{seen[label]}"
            slots.append(_LossSlot(label, loss, info, ScheduleFn(entry.weight, self.recipe.steps)))  # type: ignore[arg-type]
        return slots

    def _build_outputs(self) -> list[tuple[Output, PluginInfo]]:
        built = []
        for entry in self.recipe.outputs:
            info = self.plugins.registry.get(entry.use, "output")
            with _blame(info, "set-up"):
                built.append((info.cls(entry.options, self.ctx), info))  # type: ignore[call-arg]
        self._check_output_names(built)
        return built

    @staticmethod
    def _check_output_names(outputs: list[tuple[Output, PluginInfo]]) -> None:
        """No two outputs write the same name, and none writes one of the engine's files."""
        writer_of: dict[str, str] = {name: "the run itself" for name in RUN_FOLDER_FILES}
        for index, (output, info) in enumerate(outputs):
            who = f"outputs[{index}] ({info.name})"
            with _blame(info, "writes()"):
                names = output.writes()
            for name in dict.fromkeys(names):
                if name in writer_of:
                    raise RecipeError(
                        f"{who} would write {name}, which {writer_of[name]} writes too; "
                        "give it another file or folder name"
                    )
                writer_of[name] = who

    def _build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.recipe.optimizer
        groups = self.generator.parameter_groups()
        params = (
            groups
            if groups is not None
            else [p for p in self.generator.parameters() if p.requires_grad]
        )
        if not params:
            raise PluginRunError(
                f"generator {self.recipe.generator.use!r} ({self._generator_info.file}) has no "
                "trainable parameters (nn.Parameter attributes) for the optimiser to change"
            )
        optimizer = OPTIMIZERS[cfg.name](params, cfg, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_factor(cfg, self.recipe.steps)
        )
        return optimizer

    def _build_animator(self) -> Animator | None:
        config = self.recipe.animation
        if config is None:
            return None
        if not type(self.generator).supports_init_image():
            raise RecipeError(
                f"{self.recipe.origin}: animation needs a generator that can start from an "
                f"image; {self.recipe.generator.use!r} cannot (use pixel, image or vqgan)"
            )
        return Animator(config, self.recipe.steps)

    def _fixed_settings(self) -> dict[str, Any]:
        """What a resumed run must keep from the run it goes on with."""
        return {
            "seed": self.ctx.seed,
            "size": list(self.recipe.size),
            "generator": self.recipe.generator.use,
            "optimizer": self.recipe.optimizer.name,
        }

    def _restore(self, checkpoint: Checkpoint) -> None:
        """Put the generator, optimiser and lr schedule back as the checkpoint has them.

        The optimiser's per-parameter state (Adam's moments) comes from the checkpoint;
        its settings (lr, betas, weight decay, momentum) from the recipe, so that an
        edited recipe.yaml takes effect from the resumed step on.
        """
        where = f"{CHECKPOINT} (step {checkpoint.step})"
        now = self._fixed_settings()
        for key, then in checkpoint.settings.items():
            if key in now and now[key] != then:
                raise PixgenError(
                    f"recipe.yaml's {key} is {now[key]!r}, but the run was painted with "
                    f"{then!r}; a resumed run keeps its seed, size, generator and optimiser"
                )
        try:
            self.generator.load_state_dict(checkpoint.generator)
        except (RuntimeError, KeyError, TypeError) as exc:
            raise PixgenError(
                f"{where} does not fit the generator of this recipe ({_telling_line(exc)}); "
                "was recipe.yaml changed?"
            ) from None
        fresh = self.optimizer.state_dict()["param_groups"]
        saved = checkpoint.optimizer["param_groups"]
        try:
            if len(saved) != len(fresh) or any(
                len(a.get("params", ())) != len(b["params"])
                for a, b in zip(saved, fresh, strict=True)
            ):
                raise ValueError("its parameter groups differ")
            self.optimizer.load_state_dict(
                {"state": checkpoint.optimizer["state"], "param_groups": fresh}
            )
            self.scheduler.load_state_dict(checkpoint.scheduler)
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise PixgenError(
                f"{where} does not fit the optimiser of this recipe ({_telling_line(exc)}); "
                "was recipe.yaml changed?"
            ) from None
        # The schedule goes on from the checkpoint's step with the recipe's lr: the same
        # value LambdaLR would have set when the recipe is unchanged.
        factor = lr_factor(self.recipe.optimizer, self.recipe.steps)
        step = self.scheduler.last_epoch
        self.scheduler.base_lrs = [group["initial_lr"] for group in self.optimizer.param_groups]
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * factor(step)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        if self.animator is not None:
            self.animator.transforms = checkpoint.animation_transforms
        self.ctx.start_step = checkpoint.step
        self._checkpoint_step = checkpoint.step  # on disk until a newer one replaces it

    def _save_checkpoint(self, run_dir: Path, steps_done: int) -> None:
        """checkpoint.pt after ``steps_done`` steps; called between steps only, so the
        state and the random generators are those the next step starts from."""
        write_checkpoint(
            run_dir,
            Checkpoint(
                step=steps_done,
                generator=self.generator.state_dict(),
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                rng=rng_state(self.device),
                history=self.history.state(),
                animation_transforms=self.animator.transforms if self.animator else 0,
                settings=self._fixed_settings(),
            ),
        )
        self._checkpoint_step = steps_done

    def _animate(self, step: int) -> None:
        """Transform the current image and restart the generator from it."""
        assert self.animator is not None
        with (
            torch.no_grad(),
            _blame(self._generator_info, f"animation at step {step}"),
        ):
            current = self.generator().float()
            moved = self.animator.apply(current, step)
            self.generator.init_from_image(moved)
        if self.animator.config.reset_optimizer:
            self.optimizer.state.clear()

    # -- the step --------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _score(self, image: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted total and the row of values recorded for this step."""
        total = torch.zeros((), device=self.device, dtype=torch.float32)
        values: list[tuple[int, torch.Tensor]] = []
        for slot in self.losses:
            weight = slot.weight(step)
            if weight == 0.0:
                continue  # a scheduled-off loss costs nothing
            with _blame(slot.info, f"step {step}"):
                out = slot.loss(image, self.ctx)
            if isinstance(out, Mapping):
                terms = {k: self._loss_value(slot, v, f"term {k!r}") for k, v in out.items()}
                value = torch.stack(list(terms.values())).sum() if terms else total * 0
                for key, term in terms.items():
                    values.append((self.history.column(f"{slot.label}/{key}"), term))
            else:
                value = self._loss_value(slot, out, "value")
            if step == 0:
                self._check_loss_value(slot, value, image)
            values.append((self.history.column(slot.label), value))
            total = total + weight * value
        row = torch.full((len(self.history.columns),), math.nan, device=self.device)
        if values:
            index = self._column_index(tuple(i for i, _ in values))
            row = row.index_copy(0, index, torch.stack([v.detach() for _, v in values]))
        row[0] = total.detach()
        return total, row

    @staticmethod
    def _loss_value(slot: _LossSlot, value: object, what: str) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise PluginRunError(
                f"loss plugin {slot.info.name!r} ({slot.info.file}) returned a "
                f"{type(value).__name__} as its {what}; a loss returns a scalar tensor "
                "computed from the image (or a dict of them), so that it has a gradient"
            )
        return value.float()

    def _check_loss_value(self, slot: _LossSlot, value: torch.Tensor, image: torch.Tensor) -> None:
        """Step 0: a loss must be a scalar, and one without a gradient steers nothing."""
        if value.dim() != 0:
            raise PluginRunError(
                f"loss plugin {slot.info.name!r} ({slot.info.file}) returned a tensor of "
                f"shape {tuple(value.shape)}; a loss must be a scalar"
            )
        if image.requires_grad and not value.requires_grad:
            self.ctx.notice(
                f"loss {slot.label!r} ({slot.info.file}) has no gradient at step 0 (is it "
                "detached from the image?); it cannot steer the picture"
            )

    def _gradients(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Render, score and back-propagate: the image, the weighted total and the row.

        If the step fails while modules run compiled (a backward compiled at its first
        use, a CUDA graph that cannot be captured), it runs again with all of them
        uncompiled; an error that is not compiling's then happens again, eagerly.
        """
        try:
            return self._forward_backward(step)
        except PixgenError:
            raise
        except Exception as exc:
            if not self.ctx.stop_compiling(step, exc):
                raise
        self.ctx.begin_step(step)  # nothing the failed attempt cached is reused
        return self._forward_backward(step)

    def _forward_backward(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with self._autocast():
            image = self._render(step)
            total, row = self._score(image, step)
        self.optimizer.zero_grad(set_to_none=True)
        if total.requires_grad:
            try:
                total.backward()
            except torch.cuda.OutOfMemoryError as exc:  # the backward needs the most memory
                raise _out_of_memory(f"the backward pass of step {step}") from exc
        return image, total, row

    def _column_index(self, columns: tuple[int, ...]) -> torch.Tensor:
        """A device tensor of column numbers, made once per column set: building it each
        step would copy host-to-device, which waits for the GPU."""
        if columns not in self._column_indices:
            self._column_indices[columns] = torch.tensor(columns, device=self.device)
        return self._column_indices[columns]

    def _render(self, step: int) -> torch.Tensor:
        with _blame(self._generator_info, f"step {step}"):
            image = self.generator()
        if step == 0:
            self._check_shape(image)
        return image

    def _check_shape(self, image: torch.Tensor) -> None:
        expected = (1, 3, self.recipe.size[1], self.recipe.size[0])
        if tuple(image.shape) != expected:
            raise PluginRunError(
                f"generator {self._generator_info.name!r} ({self._generator_info.file}) "
                f"rendered shape {tuple(image.shape)}, expected {expected}"
            )

    def _stop_if_not_finite(self) -> None:
        """A NaN or infinite total poisons the gradients, then the image: stop there.

        Called about once a second (reading the history back waits for the GPU)."""
        step = self.history.first_non_finite_total()
        if step is None:
            return
        row = self.history.rows[step]
        active = [slot.label for slot in self.losses if slot.weight(step) != 0.0]
        terms = [
            column
            for i, column in enumerate(self.history.columns[1:], start=1)
            if i < len(row)
            and not math.isfinite(row[i])
            and any(column == label or column.startswith(f"{label}/") for label in active)
        ]
        what = "NaN" if math.isnan(row[0]) else "infinite"
        source = f" ({', '.join(map(repr, terms))} was {what})" if terms else ""
        raise LossNotFinite(
            f"the loss became {what} at step {step}{source}, and no later step can recover "
            "from it, so the run stopped; try a lower optimizer lr or loss weight, or "
            "precision: fp32"
        )

    def _early_stop_due(self, step: int) -> bool:
        cfg = self.recipe.early_stop
        if cfg is None or (step + 1) % cfg.check_every:
            return False
        self.history.sync()
        patience = resolve_interval(cfg.patience, self.recipe.steps)
        totals = [r[0] for r in self.history.rows]
        best, best_step = math.inf, 0
        for i, value in enumerate(totals):
            if value < best - cfg.min_delta:
                best, best_step = value, i
        return step - best_step >= patience

    # -- the loop --------------------------------------------------------------------
    def run(self) -> RunResult:
        recipe, ctx = self.recipe, self.ctx
        run_dir = None
        start = ctx.start_step
        if self._write_files:
            if self._resume is not None:  # the run's own folder, checked by resume()
                run_dir = Path(self._output_arg)  # type: ignore[arg-type]
            else:
                run_dir = make_run_dir(recipe.name, self._output_arg, self._outputs_root)
            ctx.run_dir = run_dir
            atomic_write_text(run_dir / "recipe.yaml", recipe.to_yaml())
        self.history = _History()
        if self._resume is not None:
            self.history.restore(self._resume.history)
        for slot in self.losses:
            self.history.column(slot.label)
        checkpoint_every = (
            resolve_interval(recipe.checkpoint_every, recipe.steps)
            if recipe.checkpoint_every is not None and run_dir is not None
            else None
        )
        if checkpoint_every is not None and checkpoint_every >= recipe.steps:
            ctx.notice(
                f"checkpoint_every ({checkpoint_every}) is not shorter than the run "
                f"({recipe.steps} steps): only the checkpoint at the end is written"
            )
        started = time.time()
        t0 = time.perf_counter()
        progress = ProgressDisplay(recipe.steps, enabled=not self.quiet, start=start)
        warming = ctx.compile_enabled
        if warming:
            progress.set_phase("warming up (compiling)")
        observe = self.plugins.has_observers("run_step")
        cudagraphs = ctx.compile_enabled and recipe.speed.mode == "reduce-overhead"
        steps_done = start
        stopped_between_steps = False
        next_finite_check = t0 + FINITE_CHECK_INTERVAL_S
        error: BaseException | None = None
        ctx.status = "running"
        with self._sigint_guard(), self._cudnn_benchmark():
            try:
                for output, info in self.outputs:
                    with _blame(info, "on_start"):
                        output.on_start(ctx)
                self.plugins.notify("run_started", ctx=ctx)
                if self._resume is not None:
                    # Last, so that the steps draw what they would have drawn unstopped.
                    set_rng_state(self._resume.rng, self.device)
                for step in range(start, recipe.steps):
                    if self._stop_requested:
                        ctx.status = "interrupted"
                        break
                    if checkpoint_every and step > start and step % checkpoint_every == 0:
                        assert run_dir is not None
                        self._save_checkpoint(run_dir, step)
                    ctx.begin_step(step)
                    if cudagraphs:
                        torch.compiler.cudagraph_mark_step_begin()
                    if self.animator is not None and self.animator.due(step):
                        self._animate(step)
                    image, total, row = self._gradients(step)
                    self.history.record(row)
                    if total.requires_grad:
                        self.optimizer.step()
                        self.scheduler.step()
                    else:  # nothing to learn (weights scheduled to 0): the lr still moves on
                        with warnings.catch_warnings():
                            warnings.filterwarnings("ignore", message=_SCHEDULER_ORDER_WARNING)
                            self.scheduler.step()
                    with _blame(self._generator_info, f"post_step {step}"):
                        self.generator.post_step()
                    steps_done = step + 1
                    detached = image.detach()
                    for output, info in self.outputs:
                        if output.wants(step):
                            with _blame(info, f"step {step}"):
                                output.on_step(ctx, step, detached)
                    if observe:
                        self.plugins.notify(
                            "run_step", ctx=ctx, step=step, losses=self._row_dict(row)
                        )
                    if warming and step >= 3:
                        warming = False
                        progress.set_phase("painting")
                    if progress.due(step, recipe.steps):
                        progress.update(step, self.history.latest())
                    if time.perf_counter() >= next_finite_check or step + 1 == recipe.steps:
                        self._stop_if_not_finite()
                        next_finite_check = time.perf_counter() + FINITE_CHECK_INTERVAL_S
                    if self._early_stop_due(step):
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
                    self._save_checkpoint(run_dir, steps_done)
                except Exception as exc:  # the image and run.json are still written
                    error = exc
            result, error = self._finish(
                run_dir, steps_done, started, time.perf_counter() - t0, error
            )
        if error is not None:
            if (
                isinstance(error, PixgenError)
                and error.hint is None
                and run_dir is not None
                and self._checkpoint_step is not None
            ):
                error.hint = f"'pixgen resume {run_dir}' goes on from step {self._checkpoint_step}"
            raise error
        return result

    def _row_dict(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        return {c: row[i] for i, c in enumerate(self.history.columns) if i < row.numel()}

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
        final_tensor: torch.Tensor | None = None
        try:
            with torch.no_grad():
                rendered = self.generator().detach().float()
            self._check_shape(rendered)
            if not bool(torch.isfinite(rendered).all()):
                raise LossNotFinite("the final image is NaN or infinite; final.png not written")
            final_tensor = rendered
        except Exception as exc:  # keep what we can; the first error wins
            error = error or exc
        summaries: dict[str, Any] = {}
        for output, info in self.outputs:
            label = info.name
            count = 2
            while label in summaries:
                label, count = f"{info.name}#{count}", count + 1
            try:
                with _blame(info, "on_finish"):
                    # None when the final image could not be rendered: outputs still
                    # finish and close what they have.
                    output.on_finish(ctx, final_tensor)  # type: ignore[arg-type]
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
                save_png(
                    run_dir / "final.png",
                    image,
                    {
                        "pixgen:recipe": self.recipe.to_yaml(),
                        "pixgen:seed": str(ctx.seed),
                        "pixgen:version": pixgen.__version__,
                        "Software": f"pixgen {pixgen.__version__}",
                    },
                )
            # default=str: a third-party output's summary() may hold non-JSON values
            atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2, default=str))
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

    def _run_info(
        self,
        steps_done: int,
        started: float,
        wall: float,
        error: BaseException | None,
        summaries: dict[str, Any],
        history: dict[str, Any],
    ) -> dict[str, Any]:
        device_name = (
            torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else platform.processor() or platform.machine()
        )
        return {
            "pixgen_version": pixgen.__version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "recipe": self.recipe.name,
            "status": self.ctx.status,
            "interrupted": self.ctx.status == "interrupted",
            "error": None
            if error is None
            else str(error)
            if isinstance(error, PixgenError)
            else f"{type(error).__name__}: {error}",
            "device": str(self.device),
            "device_name": device_name,
            "precision": self.precision,
            "seed": self.ctx.seed,
            "steps_planned": self.recipe.steps,
            "steps_done": steps_done,
            # This session's: a resumed run's start, time and speed count from its resume.
            "resumed_from_step": self.ctx.start_step if self._resume is not None else None,
            "started": _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(),
            "wall_time_s": round(wall, 3),
            "steps_per_second": round((steps_done - self.ctx.start_step) / wall, 3)
            if wall > 0
            else None,
            "checkpoint": None
            if self._checkpoint_step is None
            else {"file": CHECKPOINT, "step": self._checkpoint_step},
            "outputs": summaries,
            "notices": list(self.ctx.notices),
            "history": history,
        }

    @contextlib.contextmanager
    def _cudnn_benchmark(self) -> Iterator[None]:
        """cuDNN's algorithm timing for this run's convolutions, as ``speed:`` says.

        The flag is process-wide, so it is put back as it was when the run ends.
        """
        if self.device.type != "cuda":
            yield
            return
        before = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self.recipe.speed.cudnn_benchmark
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = before

    @contextlib.contextmanager
    def _sigint_guard(self) -> Iterator[None]:
        """First Ctrl-C: finish the step, save, stop. Second: stop at once.

        SIGTERM (``kill``, ``timeout``, ``docker stop``) counts as a Ctrl-C, so that a run
        stopped that way also keeps its image, run.json and checkpoint.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            if not self.quiet:
                sys.stderr.write("\nstopping after this step (Ctrl-C again to stop now)…\n")

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, before in previous.items():
                signal.signal(sig, before)


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

    :param recipe: a path, a YAML string, a dict, or a loaded :class:`Recipe`.
    :param output: the run folder (must not exist or be empty); default
        ``outputs/<name>-<timestamp>/``.
    :param set: CLI-style overrides, ``["steps=50", "losses.0.weight=2"]``.
    :param plugins: extra plugin modules/objects to register for this run.
    :param overrides: field overrides by dotted path: ``run(r, steps=50)``; use
        ``**{"losses.0.weight": 2}`` for nested fields.
    """
    if isinstance(recipe, Recipe):
        from pixgen.plugins import load_plugins

        loaded, plugin_set = recipe, load_plugins(extra=plugins)
    else:
        merged: dict[str, Any] = {}
        if set:
            from pixgen.recipe import parse_override

            for text in set:
                path, value = parse_override(text)
                merged[".".join(path)] = value
        merged.update(overrides)
        loaded, plugin_set = load_recipe(recipe, merged, extra_plugins=plugins)
    engine = Engine(
        loaded,
        plugin_set,
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
    loaded, plugin_set = load_recipe(
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
        plugin_set,
        output=folder,
        quiet=quiet,
        offline=offline,
        resume=checkpoint,
    )
    return engine.run()
