"""Tiny VQGANs of taming's real classes, saved in the real formats, and a loopback server.

Helpers for tests (no pytest fixtures are defined here, so importing this module has no
side effects):

- :func:`write_tiny_vqgan` writes ``model.yaml`` (taming's format) and a Lightning-style
  ``last.ckpt`` (``state_dict`` with ``loss.*`` keys, ``callbacks`` keyed by a Lightning
  class this environment cannot import) for a VQGAN small enough for CPU tests;
- :func:`serve` runs an HTTP server on 127.0.0.1 (``Range`` support, failures on
  demand, a connection dropped half-way) over a folder;
- :func:`write_registry` writes a registry file naming models served by that server, for
  ``PIXGEN_VQGAN_REGISTRY``;
- :func:`place_tiny_vqgan_in_cache` puts one in the weights cache under a real model's
  name (e.g. for running ``recipes/vqgan-*.yaml`` offline);
- :func:`tiny_context` builds a :class:`pixgen.context.RunContext` without a recipe file.

An end-to-end recipe test can use ``generator: {use: vqgan, config: model.yaml,
checkpoint: last.ckpt}`` with the files from :func:`write_tiny_vqgan`, at a size that is a
multiple of :data:`TINY_FACTOR`.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

TINY_FACTOR = 4  # len(ch_mult) == 3
LIGHTNING_CHECKPOINT = "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"


def tiny_config(*, gumbel: bool = False, n_embed: int = 64, embed_dim: int = 8) -> dict[str, Any]:
    """A taming model.yaml (as a dict) for a VQGAN of ~0.3M parameters, f=4."""
    ddconfig = {
        "double_z": False,
        "z_channels": embed_dim,
        "resolution": 32,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,  # taming's GroupNorm uses 32 groups
        "ch_mult": [1, 1, 2],
        "num_res_blocks": 1,
        "attn_resolutions": [8],
        "dropout": 0.0,
    }
    params: dict[str, Any] = {
        "embed_dim": embed_dim,
        "n_embed": n_embed,
        "monitor": "val/rec_loss",
        "ddconfig": ddconfig,
        "lossconfig": {
            "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
            "params": {
                "disc_conditional": False,
                "disc_in_channels": 3,
                "disc_start": 0,
                "disc_weight": 0.75,
                "codebook_weight": 1.0,
            },
        },
    }
    target = "taming.models.vqgan.VQModel"
    if gumbel:
        target = "taming.models.vqgan.GumbelVQ"
        params["kl_weight"] = 1e-8
        params["temperature_scheduler_config"] = {
            "target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler",
            "params": {
                "warm_up_steps": 0,
                "max_decay_steps": 1000001,
                "lr_start": 0.9,
                "lr_max": 0.9,
                "lr_min": 1.0e-06,
            },
        }
        params["lossconfig"] = {"target": "taming.modules.losses.vqperceptual.DummyLoss"}
    return {"model": {"base_learning_rate": 4.5e-06, "target": target, "params": params}}


def tiny_state_dict(config: dict[str, Any], *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of the real classes for ``config``, plus training-loss keys."""
    from pixgen.models.vqgan import build_vqgan, parse_config

    torch.manual_seed(seed)
    model = build_vqgan(parse_config(config))
    with torch.no_grad():  # spread the codebook so codes are distinguishable
        model.codebook.normal_(0.0, 1.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 4, 4)
    state["loss.logvar"] = torch.zeros(())
    return state


@contextlib.contextmanager
def unimportable_class(qualified: str = LIGHTNING_CHECKPOINT) -> Iterator[type]:
    """A class that pickles as ``qualified``; its modules vanish from sys.modules afterwards."""
    module_name, _, class_name = qualified.rpartition(".")
    parts = module_name.split(".")
    added = []
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    cls = type(class_name, (), {"__module__": module_name, "__qualname__": class_name})
    setattr(sys.modules[module_name], class_name, cls)
    try:
        yield cls
    finally:
        for name in added:
            sys.modules.pop(name, None)


def lightning_checkpoint(state_dict: dict[str, torch.Tensor], path: Path, **save: Any) -> Path:
    """Save ``state_dict`` as PyTorch-Lightning 1.x did (callbacks keyed by their class)."""
    with unimportable_class() as checkpoint_cls:
        instance = checkpoint_cls()
        instance.monitor = "val/rec_loss"
        payload = {
            "epoch": 3,
            "global_step": 1234,
            "pytorch-lightning_version": "1.0.8",
            "callbacks": {
                checkpoint_cls: {"best_model_score": torch.tensor(0.5), "best_model_path": ""}
            },
            "callback_objects": [instance],  # an instance, too, as newer versions store
            "optimizer_states": [],
            "lr_schedulers": [],
            "state_dict": state_dict,
        }
        torch.save(payload, path, **save)
    return path


def write_tiny_vqgan(
    folder: Path,
    *,
    gumbel: bool = False,
    seed: int = 0,
    safetensors: bool = False,
    n_embed: int = 64,
) -> tuple[Path, Path]:
    """Write ``model.yaml`` and ``last.ckpt`` (or ``model.safetensors``) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_config(gumbel=gumbel, n_embed=n_embed)
    config_path = folder / "model.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    state = tiny_state_dict(config, seed=seed)
    if safetensors:
        from safetensors.torch import save_file

        ckpt = folder / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt))
    else:
        ckpt = lightning_checkpoint(state, folder / "last.ckpt")
    return config_path, ckpt


def place_tiny_vqgan_in_cache(name: str = "vqgan_imagenet_f16_16384", **kwargs: Any) -> Path:
    """Put a tiny VQGAN in ``$PIXGEN_HOME`` under a registry name, as if fetched.

    For recipe tests: ``vqgan-lighthouse.yaml`` then runs offline with the tiny model (its
    factor is :data:`TINY_FACTOR`, so override ``size`` with multiples of 4).
    """
    from pixgen.models.vqgan import vqgan_weights

    folder = vqgan_weights().folder(name)
    write_tiny_vqgan(folder, **kwargs)
    return folder


class Evil:
    """Unpickling this writes a file: what a malicious checkpoint does."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


def write_malicious_checkpoint(path: Path, target: Path, *, legacy: bool = False) -> Path:
    """A checkpoint whose unpickling would create ``target``."""
    payload = {"state_dict": {"w": torch.zeros(1)}, "callbacks": {"x": Evil(target)}}
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    return path


# -- a loopback HTTP server --------------------------------------------------------------


@dataclass
class LoopbackServer:
    """State shared with the handler; tests change it between requests."""

    root: Path
    port: int = 0
    fail: dict[str, int] = field(default_factory=dict)  # path -> HTTP status to answer
    drop_once: set[str] = field(default_factory=set)  # paths whose next body stops half-way
    ignore_range: bool = False
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


def _handler(state: LoopbackServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].lstrip("/")
            range_header = self.headers.get("Range")
            state.requests.append((path, range_header))
            if path in state.fail:
                self.send_error(state.fail[path])
                return
            file = state.root / path
            if not file.is_file():
                self.send_error(404)
                return
            data = file.read_bytes()
            start = 0
            if range_header and not state.ignore_range:
                start = int(range_header.split("=", 1)[1].split("-", 1)[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if path in state.drop_once:
                state.drop_once.discard(path)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)  # hang up mid-body
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@contextlib.contextmanager
def serve(root: Path) -> Iterator[LoopbackServer]:
    """Serve ``root`` on 127.0.0.1 (an ephemeral port) in a thread."""
    state = LoopbackServer(root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_registry(
    path: Path,
    server: LoopbackServer,
    name: str = "tiny_vqgan",
    *,
    sha256: str | None = None,
    folder: str = "tiny",
    mirror_first: str | None = None,
) -> Path:
    """A registry file (``PIXGEN_VQGAN_REGISTRY``) naming a tiny model on ``server``."""
    arch = tiny_config()["model"]["params"]
    checkpoint_urls = [server.url(f"{folder}/last.ckpt")]
    if mirror_first:
        checkpoint_urls.insert(0, server.url(mirror_first))
    entry = {
        "description": "tiny test VQGAN",
        "architecture": {
            "target": "taming.models.vqgan.VQModel",
            "embed_dim": arch["embed_dim"],
            "n_embed": arch["n_embed"],
            "ddconfig": arch["ddconfig"],
        },
        "files": {
            "config": {"urls": [server.url(f"{folder}/model.yaml")], "sha256": None},
            "checkpoint": {"urls": checkpoint_urls, "sha256": sha256, "approx_size_mb": 1},
        },
    }
    path.write_text(yaml.safe_dump({"models": {name: entry}}), encoding="utf-8")
    return path


def tiny_context(
    width: int = 32, height: int = 32, *, offline: bool = False, recipe_dir: Path | None = None
) -> Any:
    """A RunContext on the CPU for a ``width``×``height`` image, with no recipe file."""
    from pixgen.context import RunContext

    recipe = types.SimpleNamespace(size=(width, height), steps=10, quality=None)
    return RunContext(
        recipe=recipe,  # type: ignore[arg-type]
        device=torch.device("cpu"),
        precision="fp32",
        seed=0,
        run_dir=None,
        recipe_dir=recipe_dir or Path("."),
        offline=offline,
    )


def tiny_vqgan_clip_recipe(
    files: tuple[Path, Path], clip: str, *, speed: dict[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """A VQGAN+CLIP recipe on the tiny VQGAN ``files`` (config, checkpoint) and the tiny CLIP
    ``clip`` (a model spec); ``overrides`` replace top-level fields, ``speed`` is merged."""
    config, checkpoint = files
    recipe: dict[str, Any] = {
        "name": "tiny-vqgan-clip",
        "seed": 0,
        "size": [32, 32],
        "steps": 5,
        "device": "cpu",
        "generator": {"use": "vqgan", "config": str(config), "checkpoint": str(checkpoint)},
        "losses": [{"use": "clip", "models": [clip], "prompts": ["a red circle"], "cutouts": 4}],
        "speed": dict(speed or {}),
    }
    recipe.update(overrides)
    return recipe


__all__ = [
    "TINY_FACTOR",
    "Evil",
    "LoopbackServer",
    "lightning_checkpoint",
    "place_tiny_vqgan_in_cache",
    "serve",
    "tiny_config",
    "tiny_context",
    "tiny_state_dict",
    "tiny_vqgan_clip_recipe",
    "unimportable_class",
    "write_malicious_checkpoint",
    "write_registry",
    "write_tiny_vqgan",
]
