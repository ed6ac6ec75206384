"""CLIP models: names, building and loading once per process, the model, the weights provider.

Split as open_clip splits itself:

- :mod:`~pixgen.models.clip.names`: the names users write (``ARCH/PRETRAINED``,
  ``ARCH:/path/to/checkpoint``, ``pixgen/NAME``) and the bundled models;
- :mod:`~pixgen.models.clip.factory`: configs, the open_clip class, tokenizer, weights
  (read by :mod:`pixgen.safeload`), the per-process cache, :func:`load_clip` and
  :func:`model_service`;
- :mod:`~pixgen.models.clip.model`: :class:`ClipModel`, what losses and commands use;
- :mod:`~pixgen.models.clip.weights`: :class:`ClipWeightsProvider`, where weights are and
  how ``pixgen models`` fetches, imports and removes them.
"""

from __future__ import annotations

from pixgen.models.clip.factory import (
    OPENAI_MEAN,
    OPENAI_STD,
    ROWS_SUFFIX,
    ClipConfig,
    clear_model_cache,
    expand_row_subsets,
    load_clip,
    model_service,
    random_clip_model,
)
from pixgen.models.clip.model import DEFAULT_PROMPT_TEMPLATE, ClipModel, vision_input_size
from pixgen.models.clip.names import (
    BUNDLED_DIRS,
    DEFAULT_MODEL,
    ModelSpec,
    bundled_dirs,
    bundled_models,
    parse_model_spec,
    pretrained_names,
    unknown_model_error,
)
from pixgen.models.clip.weights import (
    CHECKPOINT_SUFFIXES,
    ClipWeightsProvider,
    weights_provider,
)

__all__ = [
    "BUNDLED_DIRS",
    "CHECKPOINT_SUFFIXES",
    "DEFAULT_MODEL",
    "DEFAULT_PROMPT_TEMPLATE",
    "OPENAI_MEAN",
    "OPENAI_STD",
    "ROWS_SUFFIX",
    "ClipConfig",
    "ClipModel",
    "ClipWeightsProvider",
    "ModelSpec",
    "bundled_dirs",
    "bundled_models",
    "clear_model_cache",
    "expand_row_subsets",
    "load_clip",
    "model_service",
    "parse_model_spec",
    "pretrained_names",
    "random_clip_model",
    "unknown_model_error",
    "vision_input_size",
    "weights_provider",
]
