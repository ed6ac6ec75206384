"""``pixgen render RUN_DIR``: re-encode a run's saved frames as a video (no re-run).

Frames come from the ``video`` output's lossless archive ``frames.mkv`` (its
``keep_frames`` option, on by default), which ends on the final image; a run without one
falls back to the ``png`` output's ``steps/`` stills followed by ``final.png``. The last
frame is held for ``--hold-last`` seconds. Defaults (fps, format, scale, hold, quality)
are the run's own ``video`` output settings where it had one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from pixgen.errors import PixgenError

ARCHIVE = "frames.mkv"
_DEFAULTS: dict[str, Any] = {
    "fps": 30.0,
    "format": "mp4",
    "scale": 1.0,
    "hold_last": 1.0,
    "crf": 18,
    "preset": "medium",
}


def _run_outputs(run_dir: Path) -> list[dict[str, Any]]:
    """The ``outputs`` entries of the run's saved recipe (empty when unreadable)."""
    import yaml

    try:
        data = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    outputs = data.get("outputs") if isinstance(data, dict) else None
    return [o for o in outputs or [] if isinstance(o, dict)]


def _read_png(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise PixgenError(f"cannot read frame {path}: {exc}") from exc


def find_frames(run_dir: Path, frames: str | None = None) -> tuple[str, Iterator[Any], int | None]:
    """Where the frames are (for messages), an iterator over them (HWC uint8) and how many
    there should be (an archive's index says; None when not known)."""
    from pixgen.fileio import numbered_stills
    from pixgen.video import read_archive, read_archive_index

    if not run_dir.is_dir():
        raise PixgenError(f"{run_dir} is not a folder (pixgen render takes a run folder)")
    if not ((run_dir / "run.json").is_file() or (run_dir / "recipe.yaml").is_file()):
        raise PixgenError(
            f"{run_dir} is not a pixgen run folder (it has no run.json or recipe.yaml)"
        )
    if frames is not None:
        candidates = [frames]
    else:
        pngs = [
            str(o.get("folder", "steps")) for o in _run_outputs(run_dir) if o.get("use") == "png"
        ]
        others = sorted(p.name for p in run_dir.glob(f"*-{ARCHIVE}"))  # file: NAME outputs
        candidates = [ARCHIVE, *others, *pngs, "steps"]
    for name in dict.fromkeys(candidates):
        path = run_dir / name
        if path.is_file():
            index = read_archive_index(path)
            expected = None if index is None else len(index[0]) + index[1]
            return name, read_archive(path), expected
        if path.is_dir() and (stills := [p for _, p in numbered_stills(path)]):
            final = run_dir / "final.png"
            ending = [final] if final.is_file() else []
            return f"{name}/", (_read_png(p) for p in [*stills, *ending]), None
    looked = ", ".join(dict.fromkeys(candidates))
    raise PixgenError(
        f"no saved frames in {run_dir} (looked for {looked})",
        hint="a run keeps its frames with the video output (keep_frames: true, the default: "
        "frames.mkv) or the png output's stills (steps/)",
    )


def render_run(
    run_dir: Path,
    *,
    output: Path | None = None,
    fmt: str | None = None,
    fps: float | None = None,
    scale: float | None = None,
    hold_last: float | None = None,
    frames: str | None = None,
    overwrite: bool = False,
    note: Callable[[str], object] = lambda message: sys.stderr.write(f"note: {message}\n"),
) -> tuple[Path, int]:
    """Encode the run's frames into a video; returns its path and frame count.

    ``note`` is told when the frames are fewer than the run recorded (a truncated archive).
    """
    from pixgen.video import FORMATS, AnimationWriter, hold_frames

    run_dir = Path(run_dir)
    source, frame_iter, expected = find_frames(run_dir, frames)
    settings = dict(_DEFAULTS)
    for out in _run_outputs(run_dir):
        if out.get("use") == "video":
            settings.update({k: out[k] for k in _DEFAULTS if k in out})
            break
    if fmt is None and output is not None and output.suffix.lower().lstrip(".") in FORMATS:
        fmt = output.suffix.lower().lstrip(".")
    fmt = (fmt or str(settings["format"])).lower()
    if fmt not in FORMATS:
        raise PixgenError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    fps = float(settings["fps"]) if fps is None else fps
    scale = float(settings["scale"]) if scale is None else scale
    hold_last = float(settings["hold_last"]) if hold_last is None else hold_last
    if not 0 < fps <= 240:
        raise PixgenError(f"--fps must be above 0 and at most 240, got {fps:g}")
    if not 0 < scale <= 8:
        raise PixgenError(f"--scale must be above 0 and at most 8, got {scale:g}")
    if not 0 <= hold_last <= 600:
        raise PixgenError(f"--hold-last must be between 0 and 600 seconds, got {hold_last:g}")
    if output is None:
        output = run_dir / f"render-{fps:g}fps.{fmt}"
    elif output.suffix.lower() != f".{fmt}":
        raise PixgenError(f"--output {output} does not end in .{fmt} (the format)")
    if output.exists() and not overwrite:
        raise PixgenError(f"{output} exists; pass --overwrite to replace it")

    first = next(frame_iter, None)
    if first is None:
        raise PixgenError(f"no frames in {run_dir / source}")
    h, w = first.shape[:2]
    writer = AnimationWriter(
        output,
        fmt,
        fps,
        (w, h),
        scale=scale,
        hold=hold_frames(hold_last, fps),
        crf=int(settings["crf"]),
        preset=str(settings["preset"]),
    )
    try:
        writer.add(first)
        read = 1
        for frame in frame_iter:
            read += 1
            if frame.shape != first.shape:
                raise PixgenError(
                    f"a frame in {source} is {frame.shape[1]}×{frame.shape[0]}, "
                    f"the first is {w}×{h}"
                )
            writer.add(frame)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    if expected is not None and read < expected:
        note(
            f"{source} holds {read} of the {expected} frames the run recorded (the archive "
            "was cut short, e.g. by a crash or a full disk); the video ends early"
        )
    return output, writer.frames


def render_command(
    run_dir: Annotated[Path, typer.Argument(help="a run folder (with frames.mkv or steps/)")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="the video file [default: RUN_DIR/render-<fps>fps.<format>]"
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", "-f", help="mp4 | gif | webp [default: the run's, else from --output]"
        ),
    ] = None,
    fps: Annotated[
        float | None, typer.Option("--fps", help="frames per second [default: the run's]")
    ] = None,
    scale: Annotated[
        float | None, typer.Option("--scale", help="size factor [default: the run's]")
    ] = None,
    hold_last: Annotated[
        float | None,
        typer.Option("--hold-last", help="seconds the last frame is held [default: the run's]"),
    ] = None,
    frames: Annotated[
        str | None,
        typer.Option(
            "--frames",
            help="the frames: an archive file or a folder of NNNNNN.png in the run folder "
            "[default: frames.mkv, else steps/]",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace an existing file")
    ] = False,
) -> None:
    """Re-render a run's progress video from its saved frames (other fps, format, size)."""
    path, count = render_run(
        run_dir,
        output=output,
        fmt=fmt,
        fps=fps,
        scale=scale,
        hold_last=hold_last,
        frames=frames,
        overwrite=overwrite,
    )
    sys.stdout.write(f"{path} ({count} frames)\n")


def register(app: typer.Typer) -> None:
    app.command("render")(render_command)
