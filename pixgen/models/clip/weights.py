"""The CLIP weights provider: where a model's weights are, fetching and importing them.

Weights of ``ARCH/PRETRAINED`` are looked for, in order, in pixgen's cache
(``$PIXGEN_HOME/clip/ARCH/PRETRAINED/``, filled by ``pixgen models import``), in the
Hugging Face cache open_clip downloads into, and in open_clip's URL cache
(``~/.cache/clip``); ``pixgen models fetch`` downloads through open_clip's own downloader.
Bundled ``pixgen/NAME`` models are listed too, read-only.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pixgen import safeload
from pixgen.errors import WeightsError
from pixgen.models.clip.names import (
    bundled_models,
    clean_tag,
    import_open_clip,
    parse_model_spec,
    pretrained_names,
    unknown_model_error,
)
from pixgen.models.weights import WeightsInfo, pixgen_home

CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
CHECKPOINT_KIND = safeload.FileKind(
    what="CLIP checkpoint",
    # open_clip's largest pretrained checkpoints (ViT-bigG-14 in fp32) are about 10 GB.
    max_bytes=32 * safeload.GiB,
    damaged_fix=(
        "Check or replace the file (for a named model: `pixgen models remove NAME`, then "
        "fetch or import it again)."
    ),
)
"""What the CLIP loader accepts: tensors only, no extra classes, up to 32 GiB."""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@-]*$")


class ClipWeightsProvider:
    """CLIP weights for ``pixgen models``: open_clip's pretrained tags, imports, bundled models."""

    kind = "clip"

    # -- where things are ----------------------------------------------------------------
    @staticmethod
    def home() -> Path:
        return pixgen_home() / "clip"

    def _import_dir(self, arch: str, tag: str) -> Path:
        if not (_SAFE_NAME.match(arch) and _SAFE_NAME.match(tag)):
            raise WeightsError(f"{arch}/{tag}: names may use letters, digits and . _ + @ - only")
        return self.home() / arch / tag

    def imported_checkpoint(self, arch: str, tag: str) -> Path | None:
        """The file ``pixgen models import`` put in pixgen's cache, if any."""
        if not (_SAFE_NAME.match(arch) and _SAFE_NAME.match(tag)):
            return None
        folder = self.home() / arch / tag
        for suffix in CHECKPOINT_SUFFIXES:
            path = folder / f"open_clip_model{suffix}"
            if path.is_file():
                return path
        return None

    def imported_config(self, arch: str, tag: str) -> Path | None:
        path = self.home() / arch / tag / "config.json"
        return path if _SAFE_NAME.match(arch) and _SAFE_NAME.match(tag) and path.is_file() else None

    def imported_names(self) -> list[str]:
        home = self.home()
        if not home.is_dir():
            return []
        return sorted(
            f"{d.parent.name}/{d.name}"
            for d in home.glob("*/*")
            if self.imported_checkpoint(d.parent.name, d.name)
        )

    @staticmethod
    def _hf_candidates(cfg: dict[str, Any]) -> tuple[str, list[str]] | None:
        """The Hugging Face repo and file names open_clip would download for a tag."""
        hub = cfg.get("hf_hub", "")
        if not hub:
            return None
        repo, filename = os.path.split(hub)
        names = []
        if not filename:
            names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        else:
            if filename.endswith((".bin", ".pth")):
                names.append(filename[:-4] + ".safetensors")
            names.append(filename)
        return repo, names

    def _hf_cached(self, cfg: dict[str, Any]) -> Path | None:
        found = self._hf_candidates(cfg)
        if found is None:
            return None
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - open_clip depends on it
            return None
        repo, names = found
        for filename in names:
            hit = try_to_load_from_cache(repo, filename)
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit)
        return None

    @staticmethod
    def _url_cache(cfg: dict[str, Any]) -> Path | None:
        url = cfg.get("url", "")
        return Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url) if url else None

    def searched(self, arch: str, tag: str) -> list[str]:
        """Where the weights of ``arch/tag`` are looked for, in order (for messages)."""
        places = [str(self.home() / arch / tag)]
        cfg = import_open_clip().get_pretrained_cfg(arch, tag)
        hf = self._hf_candidates(cfg)
        if hf is not None:
            from huggingface_hub.constants import HF_HUB_CACHE

            places.append(f"{HF_HUB_CACHE}/models--{hf[0].replace('/', '--')} (Hugging Face cache)")
        url_path = self._url_cache(cfg)
        if url_path is not None:
            places.append(str(url_path))
        return places

    def locate(self, arch: str, tag: str) -> Path | None:
        """The checkpoint of ``arch/tag`` on this machine, or None."""
        imported = self.imported_checkpoint(arch, tag)
        if imported is not None:
            return imported
        cfg = import_open_clip().get_pretrained_cfg(arch, tag)
        if not cfg:
            return None
        hit = self._hf_cached(cfg)
        if hit is not None:
            return hit
        url_path = self._url_cache(cfg)
        return url_path if url_path is not None and url_path.is_file() else None

    # -- the protocol ----------------------------------------------------------------------
    def owns(self, name: str) -> bool:
        if name.startswith("pixgen/"):
            return name in bundled_models()
        arch, sep, tag = name.partition("/")
        if not sep or ":" in name:
            return False
        tag = clean_tag(tag)
        return bool(
            import_open_clip().is_pretrained_cfg(arch, tag) or self.imported_checkpoint(arch, tag)
        )

    def info(self, name: str) -> WeightsInfo:
        if name.startswith("pixgen/"):
            bundled = bundled_models()
            if name not in bundled:
                raise unknown_model_error(name)
            weights = bundled[name][1]
            return WeightsInfo(
                name,
                self.kind,
                True,
                weights,
                weights.stat().st_size,
                source="bundled with pixgen",
                description="bundled model",
            )
        arch, _, tag = name.partition("/")
        tag = clean_tag(tag)
        if not self.owns(f"{arch}/{tag}"):
            raise unknown_model_error(name)
        cfg = import_open_clip().get_pretrained_cfg(arch, tag)
        path = self.locate(arch, tag)
        hf = self._hf_candidates(cfg) if cfg else None
        source = (f"hf-hub:{hf[0]}" if hf else cfg.get("url")) if cfg else "imported"
        if self.imported_checkpoint(arch, tag):
            source = "imported"
        return WeightsInfo(
            name=f"{arch}/{tag}",
            kind=self.kind,
            present=path is not None,
            path=path if path is not None else self.home() / arch / tag,
            size_bytes=path.stat().st_size if path is not None else None,
            source=source,
            description=f"open_clip {arch}, {tag} weights",
        )

    def entries(self) -> list[WeightsInfo]:
        names = [*pretrained_names()]
        names += [n for n in self.imported_names() if n not in set(names)]
        names += list(bundled_models())
        return [self.info(n) for n in names]

    def fetch(self, name: str, *, progress: bool = True) -> Path:
        """Download through open_clip's own downloader (Hugging Face hub or URL)."""
        spec = parse_model_spec(name)
        if spec.source != "pretrained":
            raise WeightsError(f"{name!r} is not downloadable (it is a {spec.source} model)")
        cfg = import_open_clip().get_pretrained_cfg(spec.arch, spec.tag or "")
        if not cfg:
            raise WeightsError(f"{name!r} was imported by hand; open_clip has no download for it")
        _check_reachable(cfg, spec.name, self.missing_message(spec.name))
        try:
            # huggingface_hub logs every retry; the one message that matters is ours.
            with _quiet_logger("huggingface_hub"):
                target = import_open_clip().download_pretrained(cfg)
        except Exception as exc:
            raise WeightsError(
                f"could not download CLIP model {spec.name!r}: {type(exc).__name__}: "
                f"{str(exc)[:300]}\n{self.missing_message(spec.name)}"
            ) from exc
        if not target or not Path(target).is_file():
            raise WeightsError(f"open_clip returned no file for {spec.name!r}")
        return Path(target)

    def import_files(self, name: str, files: list[Path]) -> Path:
        """Copy a checkpoint (and optionally its ``.json`` config) into pixgen's cache."""
        # The factory builds on this provider: imported here, when a model is imported.
        from pixgen.models.clip.factory import clear_model_cache, load_clip, read_config
        from pixgen.models.download import copy_into_cache

        arch, sep, tag = name.partition("/")
        if not sep or not arch or not tag or ":" in name:
            raise WeightsError(
                f"import a CLIP model as ARCH/NAME (e.g. ViT-B-32/openai), got {name!r}"
            )
        tag = clean_tag(tag)
        checkpoints = [Path(f) for f in files if Path(f).suffix in CHECKPOINT_SUFFIXES]
        configs = [Path(f) for f in files if Path(f).suffix == ".json"]
        if (
            len(checkpoints) != 1
            or len(configs) > 1
            or len(files) != len(checkpoints) + len(configs)
        ):
            raise WeightsError(
                f"import {name} takes one checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) "
                "and optionally one .json open_clip config"
            )
        if not configs and arch not in import_open_clip().list_models():
            raise WeightsError(
                f"{arch!r} is not an open_clip architecture; add its config: "
                f"`pixgen models import {name} weights.safetensors {arch}.json`"
            )
        safeload.check_file(checkpoints[0], CHECKPOINT_KIND)
        if configs:
            read_config(configs[0])  # refuse a bad config now, not at the first run
        folder = self._import_dir(arch, tag)
        if folder.exists():
            shutil.rmtree(folder)
        dest = folder / f"open_clip_model{checkpoints[0].suffix}"
        copy_into_cache(checkpoints[0], dest)
        if configs:
            copy_into_cache(configs[0], folder / "config.json")
        try:  # a checkpoint that does not fit is refused now, not at the first run
            load_clip(f"{arch}/{tag}", "cpu", offline=True)
        except WeightsError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise WeightsError(f"not imported: {exc.message}") from exc
        finally:
            clear_model_cache()
        return dest

    def remove(self, name: str) -> None:
        if name.startswith("pixgen/"):
            raise WeightsError(f"{name!r} is bundled with pixgen and cannot be removed")
        arch, _, tag = name.partition("/")
        tag = clean_tag(tag)
        if self.imported_checkpoint(arch, tag):
            shutil.rmtree(self._import_dir(arch, tag))
            return
        path = self.locate(arch, tag)
        if path is None:
            raise WeightsError(f"CLIP model {name!r} is not in the cache; nothing to remove")
        raise WeightsError(
            f"CLIP model {name!r} is in open_clip's download cache ({path}), which pixgen "
            "shares and does not delete; remove it with `huggingface-cli delete-cache` "
            "(or delete the file)"
        )

    def import_usage(self, name: str) -> str:
        return f"{name} open_clip_model.safetensors"

    def accepts_new(self, name: str, files: list[Path]) -> bool:
        arch, sep, tag = name.partition("/")
        if not sep or not tag or ":" in name or name.startswith("pixgen/"):
            return False
        has_ckpt = any(Path(f).suffix in CHECKPOINT_SUFFIXES for f in files)
        has_cfg = any(Path(f).suffix == ".json" for f in files)
        return has_ckpt and (has_cfg or arch in import_open_clip().list_models())

    def missing_message(self, name: str, *, offline: bool = False) -> str:
        """Which model, where pixgen looked, and the commands that fix it."""
        arch, _, tag = name.partition("/")
        places = "; ".join(self.searched(arch, tag))
        why = "pixgen is offline, so it will not download them. " if offline else ""
        return (
            f"the weights of CLIP model {name!r} are not on this machine (looked in: {places}). "
            f"{why}Run `pixgen models fetch {name}` on a machine with internet access, or copy "
            f"the checkpoint here and run `pixgen models import {self.import_usage(name)}`."
        )


def _download_host(cfg: dict[str, Any]) -> str | None:
    from urllib.parse import urlparse

    if cfg.get("hf_hub"):
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        return urlparse(endpoint).hostname
    if cfg.get("url"):
        return urlparse(cfg["url"]).hostname
    return None


def _check_reachable(cfg: dict[str, Any], name: str, hint: str) -> None:
    """Fail at once, with one message, when the download host cannot be reached at all
    (no network), instead of after a minute of retries."""
    import socket

    host = _download_host(cfg)
    if not host:
        return
    try:
        with socket.create_connection((host, 443), timeout=10):
            pass
    except OSError as exc:
        raise WeightsError(
            f"could not download CLIP model {name!r}: cannot reach {host} "
            f"({exc.strerror or exc}).\n{hint}"
        ) from None


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@functools.cache
def weights_provider() -> ClipWeightsProvider:
    """The CLIP provider (``pixgen.models.clip.weights:weights_provider`` in the catalogue)."""
    return ClipWeightsProvider()
