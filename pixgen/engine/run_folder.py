"""The run folder: making it, and the files the engine itself writes there
(``recipe.yaml``, ``final.png`` with the recipe in its text chunks, ``run.json``)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from pixgen.errors import PixgenError
from pixgen.fileio import atomic_write_text, save_png
from pixgen.version import __version__


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


def write_final_png(run_dir: Path, image: Image.Image, recipe_yaml: str, seed: int) -> None:
    """``final.png``, carrying the recipe and seed that painted it (``pixgen info`` reads
    them back)."""
    save_png(
        run_dir / "final.png",
        image,
        {
            "pixgen:recipe": recipe_yaml,
            "pixgen:seed": str(seed),
            "pixgen:version": __version__,
            "Software": f"pixgen {__version__}",
        },
    )


def write_run_json(run_dir: Path, info: dict[str, Any]) -> None:
    # default=str: a third-party output's summary() may hold non-JSON values
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2, default=str))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def error_text(error: BaseException | None) -> str | None:
    """How run.json records an error: a user-facing message as it is, others typed."""
    if error is None:
        return None
    if isinstance(error, PixgenError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def versions() -> dict[str, str]:
    return {
        "pixgen_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }


def iso_time(timestamp: float) -> str:
    return _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc).isoformat()
