"""CLIP model names: the three forms a user writes, parsed into a :class:`ModelSpec`.

- ``ARCH/PRETRAINED`` (``ViT-B-32/openai``): open_clip's pretrained registry, or weights
  imported under that name with ``pixgen models import``.
- ``ARCH:/path/to/checkpoint``: a local file; its architecture from ``ARCH.json`` or
  ``open_clip_config.json`` beside it, or open_clip's registry.
- ``pixgen/NAME``: a bundled model, ``NAME.json`` + ``NAME.safetensors`` in one of
  :func:`bundled_dirs`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixgen.errors import WeightsError

DEFAULT_MODEL = "ViT-B-32/openai"
"""The model commands use when ``--model`` is not given."""

BUNDLED_DIRS: list[Path] = [Path(__file__).parent.parent / "bundled"]
"""Folders holding bundled models (``NAME.json`` + ``NAME.safetensors`` -> ``pixgen/NAME``)."""


def import_open_clip() -> Any:
    """open_clip, imported on first use (it takes seconds, and listing VQGANs needs none)."""
    import open_clip

    return open_clip


def bundled_dirs() -> list[Path]:
    """Where bundled models are looked for: ``$PIXGEN_BUNDLED_MODELS`` first, then the package."""
    extra = [Path(p) for p in os.environ.get("PIXGEN_BUNDLED_MODELS", "").split(os.pathsep) if p]
    return [*extra, *BUNDLED_DIRS]


def bundled_models() -> dict[str, tuple[Path, Path]]:
    """``{"pixgen/NAME": (config.json, weights.safetensors)}`` of every bundled model."""
    found: dict[str, tuple[Path, Path]] = {}
    for folder in bundled_dirs():
        if not folder.is_dir():
            continue
        for config in sorted(folder.glob("*.json")):
            weights = config.with_suffix(".safetensors")
            if weights.is_file():
                found.setdefault(f"pixgen/{config.stem}", (config, weights))
    return found


def pretrained_names() -> list[str]:
    """Every ``ARCH/PRETRAINED`` open_clip knows."""
    return [f"{arch}/{tag}" for arch, tag in import_open_clip().list_pretrained()]


def clean_tag(tag: str) -> str:
    """A pretrained tag as open_clip normalises it (``LAION2B-s34b`` -> ``laion2b_s34b``)."""
    return tag.lower().replace("-", "_")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model name: where its architecture and weights come from."""

    name: str  # canonical name (file paths made absolute)
    source: str  # "pretrained" | "file" | "bundled"
    arch: str
    tag: str | None = None
    checkpoint: Path | None = None
    config_file: Path | None = None


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """`` Did you mean 'a', 'b'?`` for the names closest to ``name``, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _known_names() -> list[str]:
    # The provider knows the imported names (and imports this module itself).
    from pixgen.models.clip.weights import weights_provider

    return [*pretrained_names(), *bundled_models(), *weights_provider().imported_names()]


def unknown_model_error(name: str) -> WeightsError:
    """The did-you-mean error for a model name nobody knows."""
    known = _known_names()
    examples = ", ".join(
        n
        for n in ("ViT-B-32/openai", "ViT-B-16/openai", "RN50/openai", "ViT-B-32/laion2b_s34b_b79k")
        if n in known
    )
    return WeightsError(
        f"unknown CLIP model {name!r}.{did_you_mean(name, known)} Name a model as "
        f"ARCH/PRETRAINED (e.g. {examples}), ARCH:/path/to/checkpoint.safetensors, or a bundled "
        f"pixgen/NAME ({', '.join(bundled_models()) or 'none installed'}). "
        "`pixgen models list` shows them all."
    )


def parse_model_spec(name: str, base_dir: Path | None = None) -> ModelSpec:
    """Parse and check a model name (paths relative to ``base_dir``); unknown names raise."""
    name = name.strip()
    if name.startswith("pixgen/"):
        bundled = bundled_models()
        if name not in bundled:
            raise unknown_model_error(name)
        config, weights = bundled[name]
        return ModelSpec(name, "bundled", name, checkpoint=weights, config_file=config)
    if ":" in name:
        arch, _, raw_path = name.partition(":")
        path = Path(os.path.expanduser(raw_path))
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():
            raise WeightsError(f"CLIP model {name!r}: checkpoint file not found: {path}")
        config = config_beside(arch, path)
        if config is None and arch not in import_open_clip().list_models():
            archs = import_open_clip().list_models()
            raise WeightsError(
                f"CLIP model {name!r}: unknown architecture {arch!r}.{did_you_mean(arch, archs)} "
                f"Put its open_clip config as {path.parent / (arch + '.json')} or name a "
                "built-in architecture (`python -c 'import open_clip; print(open_clip.list_models())'`)."
            )
        return ModelSpec(
            f"{arch}:{path.resolve()}", "file", arch, checkpoint=path.resolve(), config_file=config
        )
    if "/" in name:
        from pixgen.models.clip.weights import weights_provider

        arch, _, tag = name.partition("/")
        tag = clean_tag(tag)
        canonical = f"{arch}/{tag}"
        oc = import_open_clip()
        if oc.is_pretrained_cfg(arch, tag) or weights_provider().imported_checkpoint(arch, tag):
            return ModelSpec(canonical, "pretrained", arch, tag=tag)
        raise unknown_model_error(name)
    if name in import_open_clip().list_models():
        tags = import_open_clip().list_pretrained_tags_by_model(name)
        some = ", ".join(f"{name}/{t}" for t in tags[:4]) or f"{name}:/path/to/weights.safetensors"
        raise WeightsError(f"CLIP model {name!r}: say which weights, e.g. {some}")
    raise unknown_model_error(name)


def config_beside(arch: str, checkpoint: Path) -> Path | None:
    """The open_clip config of a checkpoint file: ``ARCH.json`` or ``open_clip_config.json``
    (the Hugging Face layout) in its folder, or None."""
    for candidate in (
        checkpoint.parent / f"{arch}.json",
        checkpoint.parent / "open_clip_config.json",
    ):
        if candidate.is_file():
            return candidate
    return None
