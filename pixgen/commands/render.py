"""``pixgen render RUN_DIR``: re-encode a run's saved frames as a video (no re-run).

Frames come from the ``video`` output's ``frames/`` folder (its ``keep_frames`` option,
on by default) or, when a run has none, from the ``png`` output's ``steps/`` stills. The
video ends on the run's ``final.png``, held for ``--hold-last`` seconds. Defaults (fps,
format, scale, hold) are the run's own ``video`` output settings where it had one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pixgen.errors import PixgenError

_DEFAULTS: dict[str, Any] = {"fps": 30.0, "format": "mp4", "scale": 1.0, "hold_last": 1.0,
                             "crf": 18, "preset": "medium"}


def _run_outputs(run_dir: Path) -> list[dict[str, Any]]:
    """The ``outputs`` entries of the run's saved recipe (empty when unreadable)."""
    import yaml

    try:
        data = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    outputs = data.get("outputs") if isinstance(data, dict) else None
    return [o for o in outputs or [] if isinstance(o, dict)]


def find_frames(run_dir: Path, folder: str | None = None) -> tuple[str, list[tuple[int, Path]]]:
    """The frame folder's name and its frames: ``folder``, else the video's, else png's."""
    from pixgen.video import list_frames

    if not run_dir.is_dir():
        raise PixgenError(f"{run_dir} is not a folder (pixgen render takes a run folder)")
    if not ((run_dir / "run.json").is_file() or (run_dir / "recipe.yaml").is_file()):
        raise PixgenError(
            f"{run_dir} is not a pixgen run folder (it has no run.json or recipe.yaml)"
        )
    if folder is not None:
        candidates = [folder]
    else:
        candidates = []
        for out in _run_outputs(run_dir):
            if out.get("use") == "video" and out.get("keep_frames", True):
                candidates.append(str(out.get("frames_folder", "frames")))
        candidates.append("frames")
        candidates += [str(o.get("folder", "steps")) for o in _run_outputs(run_dir)
                       if o.get("use") == "png"]
        candidates.append("steps")
    for name in dict.fromkeys(candidates):
        path = run_dir / name
        if path.is_dir():
            frames = list_frames(path)
            if frames:
                return name, frames
    looked = ", ".join(f"{n}/" for n in dict.fromkeys(candidates))
    raise PixgenError(
        f"no saved frames in {run_dir} (looked in {looked})",
        hint="runs keep frames with the video output (keep_frames: true, the default) "
        "or the png output's stills",
    )


def render_run(
    run_dir: Path,
    *,
    output: Path | None = None,
    fmt: str | None = None,
    fps: float | None = None,
    scale: float | None = None,
    hold_last: float | None = None,
    frames_folder: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, int]:
    """Encode the run's frames into a video; returns its path and frame count."""
    import numpy as np
    from PIL import Image

    from pixgen.video import FORMATS, fit_frame, hold_frames, open_sink, output_size

    run_dir = Path(run_dir)
    folder, frames = find_frames(run_dir, frames_folder)
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

    def read(path: Path) -> np.ndarray:
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
        except OSError as exc:
            raise PixgenError(f"cannot read frame {path}: {exc}") from exc

    first = read(frames[0][1])
    h, w = first.shape[:2]
    size = output_size(w, h, scale, fmt)
    sink = open_sink(output, fmt, fps, size, crf=int(settings["crf"]),
                     preset=str(settings["preset"]))
    try:
        last = first
        for i, (_, path) in enumerate(frames):
            frame = first if i == 0 else read(path)
            if frame.shape != first.shape:
                raise PixgenError(f"frame {path} is {frame.shape[1]}×{frame.shape[0]}, "
                                  f"the first frame in {folder}/ is {w}×{h}")
            sink.add(fit_frame(frame, scale, fmt))
            last = frame
        final = run_dir / "final.png"
        if final.is_file():
            candidate = read(final)
            if candidate.shape == first.shape:
                last = candidate
        sink.add(fit_frame(last, scale, fmt), hold_frames(hold_last, fps))
    except BaseException:
        sink.abort()
        raise
    sink.close()
    return output, sink.frames


def render_command(
    run_dir: Annotated[Path, typer.Argument(help="a run folder (with frames/ or steps/)")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="the video file [default: RUN_DIR/render-<fps>fps.<format>]"),
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="mp4 | gif | webp [default: the run's]")
    ] = None,
    fps: Annotated[float | None, typer.Option("--fps", help="frames per second [default: the run's]")] = None,
    scale: Annotated[float | None, typer.Option("--scale", help="size factor [default: the run's]")] = None,
    hold_last: Annotated[
        float | None, typer.Option("--hold-last", help="seconds the final image is held [default: the run's]")
    ] = None,
    frames: Annotated[
        str | None, typer.Option("--frames", help="sub-folder of the frames [default: frames/, else steps/]")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing file")] = False,
) -> None:
    """Re-render a run's progress video from its saved frames (other fps, format, size)."""
    path, count = render_run(run_dir, output=output, fmt=fmt, fps=fps, scale=scale,
                             hold_last=hold_last, frames_folder=frames, overwrite=overwrite)
    sys.stdout.write(f"{path} ({count} frames)\n")


def register(app: typer.Typer) -> None:
    app.command("render")(render_command)
