"""Atomic file writes and image conversion shared by the core and plugins.

Every file pixgen writes goes to a temporary name in the same folder first and is then
renamed into place, so a crash, Ctrl-C or a full disk never leaves a half-written file
under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from pixgen.errors import PixgenError


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success rename it over ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); give it the usual umask-based mode.
        os.chmod(tmp_name, 0o666 & ~_umask())
        os.replace(tmp_name, target)
    except OSError as exc:
        _remove_quietly(tmp_name)
        if exc.errno == errno.ENOSPC:
            raise PixgenError(f"disk full while writing {target}") from exc
        raise
    except BaseException:
        _remove_quietly(tmp_name)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_quietly(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_writer(path, "wb") as handle:
        handle.write(data)


CHECKPOINT = "checkpoint.pt"  # written and read by pixgen.checkpoint

# The engine's own files in every run folder, which no output may take.
RUN_FOLDER_FILES = frozenset({"final.png", "run.json", "recipe.yaml", CHECKPOINT})


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """``[1, 3, H, W]`` or ``[3, H, W]`` float in [0, 1] (any device/dtype) -> RGB PIL image."""
    if image.dim() == 4:
        image = image[0]
    array = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy(), mode="RGB")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> ``[1, 3, H, W]`` float32 in [0, 1] on the CPU."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0)


def load_image(path: str | os.PathLike[str], size: tuple[int, int] | None = None) -> torch.Tensor:
    """Read an image file as ``[1, 3, H, W]`` in [0, 1]; ``size`` is (width, height)."""
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except FileNotFoundError as exc:
        raise PixgenError(f"image file not found: {path}") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise PixgenError(f"cannot read image {path}: {exc}") from exc
    if size is not None and rgb.size != tuple(size):
        rgb = rgb.resize(tuple(size), Image.Resampling.LANCZOS)
    return pil_to_tensor(rgb)


def save_png(
    path: str | os.PathLike[str],
    image: torch.Tensor | Image.Image,
    text: Mapping[str, str] | None = None,
) -> None:
    """Write a PNG atomically, with ``text`` as tEXt/iTXt chunks (read back by ``png_text``)."""
    pil = image if isinstance(image, Image.Image) else tensor_to_pil(image)
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, value)
    with atomic_writer(path, "wb") as handle:
        pil.save(handle, format="PNG", pnginfo=info)


def still_name(step: int) -> str:
    """The file name of the still of ``step`` (the png output's ``steps/000050.png``)."""
    return f"{step:06d}.png"


def numbered_stills(folder: Path) -> list[tuple[int, Path]]:
    """The stills in ``folder`` (files named as :func:`still_name` names them), by step."""
    return sorted(
        (int(path.stem), path)
        for path in folder.iterdir()
        if path.suffix == ".png" and path.stem.isdigit() and path.is_file()
    )


def png_text(path: str | os.PathLike[str]) -> dict[str, str]:
    """The text chunks of a PNG file."""
    try:
        with Image.open(path) as img:
            img.load()
            return {str(k): str(v) for k, v in getattr(img, "text", {}).items()}
    except FileNotFoundError as exc:
        raise PixgenError(f"file not found: {path}") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise PixgenError(f"not a readable PNG: {path} ({exc})") from exc
