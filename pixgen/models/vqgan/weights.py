"""The VQGAN weights provider: ``$PIXGEN_HOME/vqgan/NAME/`` (``model.yaml`` + ``last.ckpt``)."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixgen.errors import WeightsError
from pixgen.models.download import (
    DownloadInterrupted,
    DownloadResult,
    copy_into_cache,
    download,
)
from pixgen.models.vqgan.config import VQGANConfig, architecture_config, read_config
from pixgen.models.vqgan.loading import check_checkpoint
from pixgen.models.vqgan.registry import MODEL_NAME, FileSpec, load_registry, registry_config
from pixgen.models.weights import WeightsInfo, missing_message, offline_mode, pixgen_home

CONFIG_FILE = "model.yaml"
CHECKPOINT_FILES = ("last.ckpt", "model.safetensors")
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
CHECKPOINT_SUFFIXES = (*TORCH_SUFFIXES, ".safetensors")


@dataclass(frozen=True)
class ModelFiles:
    """The cached files of one model: taming's model.yaml and its checkpoint."""

    config: Path
    checkpoint: Path


class VQGANWeights:
    """VQGAN weights in ``$PIXGEN_HOME/vqgan/NAME/`` (``model.yaml`` + ``last.ckpt``)."""

    kind = "vqgan"

    def root(self) -> Path:
        return pixgen_home() / "vqgan"

    def folder(self, name: str) -> Path:
        if not MODEL_NAME.match(name):
            raise WeightsError(
                f"{name!r} is not a valid model name (letters, digits, '.', '_', '-', '+')"
            )
        return self.root() / name

    def files(self, name: str) -> ModelFiles | None:
        """The cached files of ``name``, or None when not (completely) present."""
        folder = self.folder(name)
        config = folder / CONFIG_FILE
        if not config.is_file():
            return None
        for candidate in CHECKPOINT_FILES:
            if (folder / candidate).is_file():
                return ModelFiles(config, folder / candidate)
        return None

    def owns(self, name: str) -> bool:
        if name in load_registry():
            return True
        return bool(MODEL_NAME.match(name)) and (self.root() / name / CONFIG_FILE).is_file()

    def entries(self) -> list[WeightsInfo]:
        names = list(load_registry())
        if self.root().is_dir():
            names += sorted(
                p.name
                for p in self.root().iterdir()
                if p.name not in names and MODEL_NAME.match(p.name) and (p / CONFIG_FILE).is_file()
            )
        return [self.info(name) for name in names]

    def info(self, name: str) -> WeightsInfo:
        entry = load_registry().get(name)
        folder = self.folder(name)
        present = self.files(name)
        meta = _read_meta(folder)
        if present:
            size = sum(p.stat().st_size for p in (present.config, present.checkpoint))
            sha = meta.get("checkpoint", {}).get("sha256")
        else:
            size = entry.checkpoint.approx_size if entry else None
            sha = entry.checkpoint.sha256 if entry else None
        return WeightsInfo(
            name=name,
            kind=self.kind,
            present=present is not None,
            path=folder,
            size_bytes=size,
            sha256=sha,
            source=entry.checkpoint.urls[0] if entry else meta.get("source", "imported"),
            description=entry.description if entry else "imported VQGAN",
        )

    def config_for(self, name: str) -> VQGANConfig:
        """The architecture of ``name``: its cached model.yaml, else the registry's copy."""
        present = self.files(name)
        if present is not None:
            return read_config(present.config)
        return registry_config(name)

    def import_usage(self, name: str) -> str:
        return f"{name} model.yaml last.ckpt"

    def accepts_new(self, name: str, files: list[Path]) -> bool:
        suffixes = {Path(f).suffix.lower() for f in files}
        return bool(suffixes & {".yaml", ".yml"}) and bool(suffixes & set(CHECKPOINT_SUFFIXES))

    # -- fetch ---------------------------------------------------------------------
    def fetch(self, name: str, *, progress: bool = True) -> Path:
        entry = load_registry().get(name)
        if entry is None:
            if self.files(name):
                return self.folder(name)
            raise WeightsError(
                f"VQGAN {name!r} was imported, not downloaded, and its files are incomplete; "
                f"import them again: `pixgen models import {self.import_usage(name)}`."
            )
        folder = self.folder(name)
        if self.files(name):
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        meta = _read_meta(folder)
        meta["source"] = entry.origin
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            result = self._fetch_file(name, entry.config, config_path, progress=False)
            try:
                read_config(config_path)
            except WeightsError as exc:  # e.g. an HTML error page served as model.yaml
                config_path.unlink(missing_ok=True)
                raise WeightsError(
                    f"the downloaded config of {name!r} is unusable: {exc}"
                ) from None
            meta["config"] = {"sha256": result.sha256, "url": result.url}
        checkpoint_path = folder / CHECKPOINT_FILES[0]
        result = self._fetch_file(name, entry.checkpoint, checkpoint_path, progress=progress)
        try:
            check_checkpoint(checkpoint_path)  # truncated upstream, or unsafe: do not keep it
        except WeightsError as exc:
            checkpoint_path.unlink(missing_ok=True)
            raise WeightsError(
                f"the downloaded checkpoint of {name!r} is unusable and was deleted: {exc}"
            ) from None
        meta["checkpoint"] = {"sha256": result.sha256, "url": result.url}
        _write_meta(folder, meta)
        return folder

    def _fetch_file(self, name: str, spec: FileSpec, dest: Path, *, progress: bool) -> _Fetched:
        errors = []
        for url in spec.urls:
            try:
                result = download(
                    url, dest, sha256=spec.sha256, progress=progress, label=f"{name}/{dest.name}"
                )
            except DownloadInterrupted:
                raise  # keep the .part for this source: rerunning resumes it
            except WeightsError as exc:
                errors.append(str(exc))
                continue
            if spec.sha256 is None:
                _report_checksum(name, dest, result)
            return _Fetched(result.sha256, url)
        raise WeightsError(
            f"could not fetch {name}/{dest.name} from any of its {len(spec.urls)} source(s):\n"
            + "\n".join(f"  - {e}" for e in errors)
            + f"\nOn a machine with access, download the files and run "
            f"`pixgen models import {self.import_usage(name)}`."
        )

    # -- import / remove -----------------------------------------------------------
    def import_files(self, name: str, files: list[Path]) -> Path:
        configs = [f for f in files if f.suffix.lower() in (".yaml", ".yml")]
        checkpoints = [f for f in files if f.suffix.lower() in CHECKPOINT_SUFFIXES]
        others = [str(f) for f in files if f not in configs and f not in checkpoints]
        if len(configs) != 1 or len(checkpoints) != 1 or others:
            raise WeightsError(
                f"importing VQGAN {name!r} takes two files: the model.yaml (.yaml) and the "
                f"checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}); got {', '.join(map(str, files))}. "
                f"Usage: `pixgen models import {self.import_usage(name)}`."
            )
        config = read_config(configs[0])  # refuse a bad config before copying anything
        entry = load_registry().get(name)
        if entry is not None:
            expected = architecture_config(entry.architecture, source=f"registry:{name}")
            if (config.n_embed, config.embed_dim, config.factor, config.gumbel) != (
                expected.n_embed,
                expected.embed_dim,
                expected.factor,
                expected.gumbel,
            ):
                raise WeightsError(
                    f"{configs[0]} is not {name}: it describes {config.n_embed} codes of "
                    f"{config.embed_dim} at f={config.factor}, the registry says "
                    f"{expected.n_embed} of {expected.embed_dim} at f={expected.factor}."
                )
        check_checkpoint(checkpoints[0])
        folder = self.folder(name)
        ckpt_name = (
            CHECKPOINT_FILES[1]
            if checkpoints[0].suffix.lower() == ".safetensors"
            else CHECKPOINT_FILES[0]
        )
        for stale in CHECKPOINT_FILES:
            if stale != ckpt_name:
                (folder / stale).unlink(missing_ok=True)
        config_sha = copy_into_cache(configs[0], folder / CONFIG_FILE)
        ckpt_sha = copy_into_cache(checkpoints[0], folder / ckpt_name)
        if entry is not None and entry.checkpoint.sha256 and ckpt_sha != entry.checkpoint.sha256:
            (folder / ckpt_name).unlink(missing_ok=True)
            raise WeightsError(
                f"{checkpoints[0]} is not the published {name} checkpoint: sha256 {ckpt_sha}, "
                f"expected {entry.checkpoint.sha256}."
            )
        _write_meta(
            folder,
            {
                "source": f"imported from {checkpoints[0]}",
                "config": {"sha256": config_sha, "file": str(configs[0])},
                "checkpoint": {"sha256": ckpt_sha, "file": str(checkpoints[0])},
            },
        )
        return folder

    def remove(self, name: str) -> None:
        folder = self.folder(name)
        if not folder.exists():
            raise WeightsError(f"VQGAN {name!r} is not in the cache ({folder}); nothing to remove")
        shutil.rmtree(folder)

    # -- for the generator ---------------------------------------------------------
    def ensure(self, name: str, *, offline: bool = False, progress: bool = True) -> ModelFiles:
        """The files of ``name``, fetched on first use unless offline."""
        if not self.owns(name):
            known = ", ".join(info.name for info in self.entries())
            raise WeightsError(
                f"{name!r} is not a VQGAN model pixgen knows (known: {known}). Use one of "
                "those, give `config:` and `checkpoint:` files instead, or register yours "
                f"with `pixgen models import {self.import_usage(name)}`."
            )
        present = self.files(name)
        if present is not None:
            return present
        if offline_mode(offline):
            raise WeightsError(missing_message(self.info(name), self, offline=True))
        self.fetch(name, progress=progress)
        present = self.files(name)
        assert present is not None
        return present


@dataclass(frozen=True)
class _Fetched:
    sha256: str
    url: str


def _report_checksum(name: str, dest: Path, result: DownloadResult) -> None:
    sys.stderr.write(
        f"sha256 {result.sha256}  {name}/{dest.name} ({result.size} bytes; the registry has "
        "no checksum for this file, so it could not be verified)\n"
    )


def _read_meta(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "pixgen.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_meta(folder: Path, meta: Mapping[str, Any]) -> None:
    from pixgen.fileio import atomic_write_text

    atomic_write_text(folder / "pixgen.json", json.dumps(meta, indent=2) + "\n")


def weights_provider() -> VQGANWeights:
    """The VQGAN provider (named in :data:`pixgen.models.weights.PROVIDERS`)."""
    return VQGANWeights()


def vqgan_weights() -> VQGANWeights:
    """The VQGAN provider, without loading the other providers (CLIP pulls in open_clip)."""
    return VQGANWeights()
