"""VQGAN from taming-transformers' own modules, loaded safely, without pytorch-lightning.

The network is assembled from taming's ``Encoder``/``Decoder`` and its quantizers
(``VectorQuantizer2``, ``GumbelQuantize``) under the attribute names of taming's
Lightning ``VQModel``, so the ``state_dict`` of a real ``last.ckpt`` loads strictly.

- :mod:`~pixgen.models.vqgan.config`: taming's ``model.yaml`` -> :class:`VQGANConfig`;
- :mod:`~pixgen.models.vqgan.network`: :class:`VQGAN`, :func:`build_vqgan`,
  :func:`vector_quantize`, :func:`clamp_with_grad`, the valid output sizes;
- :mod:`~pixgen.models.vqgan.loading`: :func:`read_checkpoint` (through
  :mod:`pixgen.safeload`, with the Lightning placeholders), :func:`load_weights`,
  :func:`load_vqgan`;
- :mod:`~pixgen.models.vqgan.registry`: the named models, as data
  (``vqgan_registry.yaml``), :func:`load_registry`, :func:`registry_config`;
- :mod:`~pixgen.models.vqgan.weights`: :class:`VQGANWeights`, the ``pixgen models``
  provider (``$PIXGEN_HOME/vqgan/NAME/``).
"""

from __future__ import annotations

from pixgen.models.vqgan.config import VQGANConfig, parse_config, read_config
from pixgen.models.vqgan.loading import (
    CHECKPOINT_KIND,
    LightningPlaceholder,
    LightningPlaceholderDict,
    allowed_globals,
    check_checkpoint,
    load_vqgan,
    load_weights,
    read_checkpoint,
)
from pixgen.models.vqgan.network import (
    VQGAN,
    build_vqgan,
    check_size,
    clamp_with_grad,
    nearest_valid_sizes,
    vector_quantize,
)
from pixgen.models.vqgan.registry import (
    DEFAULT_MODEL,
    FileSpec,
    RegistryEntry,
    load_registry,
    registry_config,
)
from pixgen.models.vqgan.weights import (
    CHECKPOINT_FILES,
    CHECKPOINT_SUFFIXES,
    CONFIG_FILE,
    ModelFiles,
    VQGANWeights,
    vqgan_weights,
    weights_provider,
)

__all__ = [
    "CHECKPOINT_FILES",
    "CHECKPOINT_KIND",
    "CHECKPOINT_SUFFIXES",
    "CONFIG_FILE",
    "DEFAULT_MODEL",
    "VQGAN",
    "FileSpec",
    "LightningPlaceholder",
    "LightningPlaceholderDict",
    "ModelFiles",
    "RegistryEntry",
    "VQGANConfig",
    "VQGANWeights",
    "allowed_globals",
    "build_vqgan",
    "check_checkpoint",
    "check_size",
    "clamp_with_grad",
    "load_registry",
    "load_vqgan",
    "load_weights",
    "nearest_valid_sizes",
    "parse_config",
    "read_checkpoint",
    "read_config",
    "registry_config",
    "vector_quantize",
    "vqgan_weights",
    "weights_provider",
]
