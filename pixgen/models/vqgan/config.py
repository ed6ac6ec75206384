"""VQGAN architectures: taming's ``model.yaml`` parsed safely into a :class:`VQGANConfig`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pixgen.errors import WeightsError

_VQ_TARGETS = {"VQModel", "VQNoDiscModel", "EMAVQ"}
_GUMBEL_TARGETS = {"GumbelVQ"}
_TRANSFORMER_TARGETS = {"Net2NetTransformer"}  # a VQGAN inside, as ``first_stage_model``
_DDCONFIG_INTS = ("ch", "out_ch", "num_res_blocks", "in_channels", "resolution", "z_channels")


@dataclass(frozen=True)
class VQGANConfig:
    """A VQGAN's architecture, as taming's model.yaml gives it."""

    target: str
    embed_dim: int
    n_embed: int
    ddconfig: Mapping[str, Any]
    gumbel: bool = False
    key_prefix: str = ""  # "first_stage_model." for a checkpoint of a transformer
    source: str = "<config>"

    @property
    def factor(self) -> int:
        """How many pixels one latent position covers, each way (16 for f16)."""
        return 2 ** (len(self.ddconfig["ch_mult"]) - 1)


def read_config(path: str | os.PathLike[str]) -> VQGANConfig:
    """Parse a taming ``model.yaml`` (with ``yaml.safe_load``; no code is imported)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WeightsError(f"VQGAN config not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WeightsError(f"cannot read VQGAN config {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WeightsError(
            f"VQGAN config {path} is not valid YAML ({exc}); is it really taming's model.yaml?"
        ) from None
    return parse_config(data, source=str(path))


def parse_config(data: Any, *, source: str = "<config>") -> VQGANConfig:
    """A :class:`VQGANConfig` from taming's model.yaml structure (``model: {target, params}``)."""

    def bad(what: str) -> WeightsError:
        return WeightsError(
            f"VQGAN config {source}: {what}. Expected taming-transformers' model.yaml format "
            "(model: {target: taming.models.vqgan.VQModel, params: {embed_dim, n_embed, "
            "ddconfig: {...}}})."
        )

    if not isinstance(data, Mapping) or not isinstance(data.get("model"), Mapping):
        raise bad("no 'model' section")
    model = data["model"]
    target = str(model.get("target", ""))
    params = model.get("params")
    if not isinstance(params, Mapping):
        raise bad("'model.params' is missing")
    prefix = ""
    cls = target.rsplit(".", 1)[-1]
    if cls in _TRANSFORMER_TARGETS:
        first = params.get("first_stage_config")
        if not isinstance(first, Mapping) or not isinstance(first.get("params"), Mapping):
            raise bad("a transformer config without 'first_stage_config'")
        target = str(first.get("target", ""))
        params = first["params"]
        cls = target.rsplit(".", 1)[-1]
        prefix = "first_stage_model."
    if cls not in _VQ_TARGETS | _GUMBEL_TARGETS:
        raise bad(f"model.target {target!r} is not a VQGAN (VQModel or GumbelVQ)")
    return architecture_config(
        {**params, "target": target}, source=source, key_prefix=prefix, bad=bad
    )


def architecture_config(
    params: Mapping[str, Any], *, source: str, key_prefix: str = "", bad: Any = None
) -> VQGANConfig:
    """A :class:`VQGANConfig` from a VQModel's ``params`` (the registry's ``architecture``
    entries have this form); ``bad(what)`` makes the error for a wrong field."""

    def default_bad(what: str) -> WeightsError:
        return WeightsError(f"VQGAN architecture {source}: {what}")

    bad = bad or default_bad
    target = str(params.get("target", "taming.models.vqgan.VQModel"))
    if params.get("remap"):
        raise bad("'remap' (a remapped codebook) is not supported")
    ints = {}
    for key in ("embed_dim", "n_embed"):
        value = params.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(f"params.{key} must be a positive integer, got {value!r}")
        ints[key] = value
    dd = params.get("ddconfig")
    if not isinstance(dd, Mapping):
        raise bad("'params.ddconfig' is missing")
    for key in _DDCONFIG_INTS:
        value = dd.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(f"ddconfig.{key} must be a positive integer, got {value!r}")
    for key in ("ch_mult", "attn_resolutions"):
        value = dd.get(key)
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise bad(f"ddconfig.{key} must be a list of integers, got {value!r}")
    if not dd["ch_mult"]:
        raise bad("ddconfig.ch_mult must not be empty")
    gumbel = target.rsplit(".", 1)[-1] in _GUMBEL_TARGETS
    if gumbel and ints["embed_dim"] != dd["z_channels"]:
        raise bad("a Gumbel VQGAN needs embed_dim == ddconfig.z_channels")
    ddconfig = {
        k: (list(v) if isinstance(v, list | tuple) else v)
        for k, v in dd.items()
        if k
        in (
            *_DDCONFIG_INTS,
            "ch_mult",
            "attn_resolutions",
            "dropout",
            "double_z",
            "resamp_with_conv",
            "give_pre_end",
        )
    }
    ddconfig["dropout"] = 0.0  # inference only
    return VQGANConfig(
        target=target,
        embed_dim=ints["embed_dim"],
        n_embed=ints["n_embed"],
        ddconfig=ddconfig,
        gumbel=gumbel,
        key_prefix=key_prefix,
        source=source,
    )
