"""The weights manager: one catalogue of every model pixgen can load, whatever its kind.

Each kind of model (CLIP, VQGAN …) contributes a :class:`WeightsProvider`; ``pixgen
models list|fetch|import|path|remove`` and the loaders go through :func:`catalog`.

Providers are named by import path in :data:`PROVIDERS` and imported only when the
catalogue is first used, so listing a VQGAN model never imports open_clip and a
provider whose module is absent is simply skipped. A provider module exposes a
zero-argument callable (a class or a factory function) returning the provider.
"""

from __future__ import annotations

import difflib
import importlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from pixgen.errors import WeightsError

PROVIDERS: tuple[str, ...] = (
    "pixgen.models.vqgan.weights:weights_provider",
    "pixgen.models.clip.weights:weights_provider",
)
"""``module:callable`` of every built-in provider, in listing order."""


def pixgen_home() -> Path:
    """The cache folder: ``$PIXGEN_HOME`` or ``~/.cache/pixgen``."""
    return Path(os.environ.get("PIXGEN_HOME") or Path.home() / ".cache" / "pixgen")


def offline_mode(flag: bool = False) -> bool:
    """True when fetching is forbidden (``--offline`` or ``PIXGEN_OFFLINE=1``)."""
    return flag or os.environ.get("PIXGEN_OFFLINE", "").strip().lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class WeightsInfo:
    """What the catalogue knows about one model's weights."""

    name: str
    kind: str  # "clip" | "vqgan" | ...
    present: bool
    path: Path | None = None  # where the files are (or will be) in the cache
    size_bytes: int | None = None  # on disk when present, else the expected download size
    sha256: str | None = None
    source: str | None = None  # download URL or where it comes from
    description: str = ""


@runtime_checkable
class WeightsProvider(Protocol):
    """One kind of model weights: what exists, what is cached, how to get it."""

    kind: str

    def owns(self, name: str) -> bool: ...
    def entries(self) -> list[WeightsInfo]: ...
    def info(self, name: str) -> WeightsInfo: ...
    def fetch(self, name: str, *, progress: bool = True) -> Path: ...
    def import_files(self, name: str, files: list[Path]) -> Path: ...
    def remove(self, name: str) -> None: ...

    # Optional: ``import_usage(name) -> str``, the ``pixgen models import`` arguments
    # that suit this kind (e.g. "NAME model.yaml last.ckpt"); used in error messages.
    # Optional: ``accepts_new(name, files) -> bool``, whether ``import`` may create a
    # model under a name the provider does not know yet.


class Catalog:
    """Every provider together: find a model by name and act on its weights."""

    def __init__(self, provider_paths: tuple[str, ...] = PROVIDERS):
        self._paths = provider_paths
        self._providers: list[WeightsProvider] | None = None
        self._extra: list[WeightsProvider] = []
        self._lock = threading.Lock()

    # -- providers -----------------------------------------------------------------
    def providers(self) -> list[WeightsProvider]:
        """The providers, importing the built-in ones on first use."""
        with self._lock:
            if self._providers is None:
                self._providers = [p for p in map(_load_provider, self._paths) if p is not None]
            return [*self._providers, *self._extra]

    def add_provider(self, provider: WeightsProvider) -> None:
        """Add a provider (a plugin's own kind of weights; tests)."""
        self._extra.append(provider)

    def remove_provider(self, provider: WeightsProvider) -> None:
        self._extra.remove(provider)

    def provider(self, kind: str) -> WeightsProvider:
        """The provider of one kind (``"vqgan"``, ``"clip"``)."""
        for provider in self.providers():
            if provider.kind == kind:
                return provider
        kinds = ", ".join(p.kind for p in self.providers()) or "none"
        raise WeightsError(f"no weights provider of kind {kind!r} (available: {kinds})")

    def provider_for(self, name: str) -> WeightsProvider:
        """The provider that knows ``name``; an unknown name gets a did-you-mean."""
        for provider in self.providers():
            if provider.owns(name):
                return provider
        known = self.names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        kinds = "|".join(p.kind for p in self.providers())
        raise WeightsError(
            f"unknown model {name!r}.{hint} Run `pixgen models list` to see the models "
            "pixgen knows, or register your own files with "
            f"`pixgen models import {name} --kind {kinds} FILE...`."
        )

    # -- queries -------------------------------------------------------------------
    def entries(self) -> list[WeightsInfo]:
        return [info for provider in self.providers() for info in provider.entries()]

    def names(self) -> list[str]:
        return [info.name for info in self.entries()]

    def info(self, name: str) -> WeightsInfo:
        return self.provider_for(name).info(name)

    def path(self, name: str) -> Path:
        """Where the weights of ``name`` are; an error with the fix when absent."""
        info = self.info(name)
        if not info.present or info.path is None:
            raise WeightsError(missing_message(info, self.provider_for(name)))
        return info.path

    # -- actions -------------------------------------------------------------------
    def fetch(self, name: str, *, progress: bool = True) -> Path:
        return self.provider_for(name).fetch(name, progress=progress)

    def import_files(self, name: str, files: list[Path], *, kind: str | None = None) -> Path:
        """Register local files under ``name`` (for machines without internet)."""
        missing = [str(f) for f in files if not Path(f).is_file()]
        if missing:
            raise WeightsError(f"cannot import {name!r}: no such file: {', '.join(missing)}")
        if kind is not None:
            provider = self.provider(kind)
        else:
            owners = [p for p in self.providers() if p.owns(name)]
            if owners:
                provider = owners[0]
            else:
                takers = [p for p in self.providers() if _accepts_new(p, name, files)]
                if len(takers) != 1:
                    kinds = "|".join(p.kind for p in self.providers())
                    raise WeightsError(
                        f"{name!r} is not a model pixgen knows; say which kind it is: "
                        f"`pixgen models import {name} --kind {kinds} FILE...`"
                    )
                provider = takers[0]
        return provider.import_files(name, [Path(f) for f in files])

    def remove(self, name: str) -> None:
        self.provider_for(name).remove(name)

    def ensure(self, name: str, *, offline: bool = False, progress: bool = True) -> Path:
        """The weights of ``name``, fetched (with progress) on first use unless offline."""
        provider = self.provider_for(name)
        info = provider.info(name)
        if info.present and info.path is not None:
            return info.path
        if offline_mode(offline):
            raise WeightsError(missing_message(info, provider, offline=True))
        return provider.fetch(name, progress=progress)


def missing_message(info: WeightsInfo, provider: object, *, offline: bool = False) -> str:
    """The one-paragraph message for weights that are not in the cache."""
    usage_fn: Callable[[str], str] | None = getattr(provider, "import_usage", None)
    usage = usage_fn(info.name) if usage_fn else f"{info.name} FILE..."
    where = f" (looked in {info.path})" if info.path else ""
    why = "pixgen is offline, so it will not download it. " if offline else ""
    return (
        f"{info.kind} model {info.name!r} is not in the weights cache{where}. {why}"
        f"Run `pixgen models fetch {info.name}` on a machine with internet access, or copy "
        f"the files here and run `pixgen models import {usage}`."
    )


def _accepts_new(provider: WeightsProvider, name: str, files: list[Path]) -> bool:
    accepts: Callable[[str, list[Path]], bool] | None = getattr(provider, "accepts_new", None)
    return bool(accepts and accepts(name, [Path(f) for f in files]))


def _load_provider(path: str) -> WeightsProvider | None:
    """Import ``module:callable`` and build the provider; None when the module is absent."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:  # that provider is not written/installed: skip it
            return None
        raise
    factory = getattr(module, attr, None)
    if factory is None:  # the module exists but offers no provider (yet)
        return None
    return factory()


_CATALOG: Catalog | None = None


def catalog() -> Catalog:
    """The process-wide catalogue (providers are imported on first use)."""
    global _CATALOG
    if _CATALOG is None:
        _CATALOG = Catalog()
    return _CATALOG


def reset_catalog() -> None:
    """Forget the loaded providers (tests that change the provider list)."""
    global _CATALOG
    _CATALOG = None
