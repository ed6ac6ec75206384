"""The named VQGAN models, as data: ``vqgan_registry.yaml`` (plus ``$PIXGEN_VQGAN_REGISTRY``)."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pixgen.errors import WeightsError
from pixgen.models.vqgan.config import VQGANConfig, architecture_config

DEFAULT_MODEL = "vqgan_imagenet_f16_16384"
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
"""What a model's name may be (it names a folder of the weights cache)."""


@dataclass(frozen=True)
class FileSpec:
    """Where one file of a named model is published (mirrors in order) and its checksum."""

    urls: tuple[str, ...]
    sha256: str | None = None
    approx_size: int | None = None


@dataclass(frozen=True)
class RegistryEntry:
    """One named model: its architecture (checked early) and its two files."""

    name: str
    description: str
    architecture: Mapping[str, Any]
    config: FileSpec
    checkpoint: FileSpec
    origin: str = "built-in"


def load_registry() -> dict[str, RegistryEntry]:
    """The named VQGAN models: the packaged registry plus ``$PIXGEN_VQGAN_REGISTRY`` files."""
    return dict(_load_registry(os.environ.get("PIXGEN_VQGAN_REGISTRY", "")))


@functools.lru_cache(maxsize=8)
def _load_registry(extra: str) -> tuple[tuple[str, RegistryEntry], ...]:
    texts = [("built-in", resources.files("pixgen.models.vqgan").joinpath("vqgan_registry.yaml"))]
    texts += [(p, Path(p)) for p in extra.split(os.pathsep) if p.strip()]
    entries: dict[str, RegistryEntry] = {}
    for origin, where in texts:
        try:
            data = yaml.safe_load(where.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise WeightsError(f"cannot read VQGAN registry {origin}: {exc}") from None
        models = data.get("models") if isinstance(data, Mapping) else None
        if not isinstance(models, Mapping):
            raise WeightsError(f"VQGAN registry {origin} has no 'models' mapping")
        for name, spec in models.items():
            entries[str(name)] = _registry_entry(str(name), spec, origin)
    return tuple(entries.items())


def _registry_entry(name: str, spec: Any, origin: str) -> RegistryEntry:
    def file_spec(key: str) -> FileSpec:
        raw = (spec.get("files") or {}).get(key) if isinstance(spec, Mapping) else None
        if not isinstance(raw, Mapping) or not raw.get("urls"):
            raise WeightsError(f"VQGAN registry {origin}: {name}.files.{key}.urls is missing")
        mb = raw.get("approx_size_mb")
        return FileSpec(
            urls=tuple(str(u) for u in raw["urls"]),
            sha256=raw.get("sha256") or None,
            approx_size=int(mb * 1_000_000) if mb else None,
        )

    if not MODEL_NAME.match(name):
        raise WeightsError(f"VQGAN registry {origin}: bad model name {name!r}")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("architecture"), Mapping):
        raise WeightsError(f"VQGAN registry {origin}: {name}.architecture is missing")
    arch = spec["architecture"]
    architecture_config(arch, source=f"registry {origin}: {name}")  # validate early
    return RegistryEntry(
        name=name,
        description=str(spec.get("description", "")),
        architecture=arch,
        config=file_spec("config"),
        checkpoint=file_spec("checkpoint"),
        origin=origin,
    )


def registry_config(name: str = DEFAULT_MODEL) -> VQGANConfig:
    """The architecture of a named model, from the registry (no download)."""
    registry = load_registry()
    if name not in registry:
        raise WeightsError(f"{name!r} is not in the VQGAN registry ({', '.join(registry)})")
    return architecture_config(registry[name].architecture, source=f"registry:{name}")
