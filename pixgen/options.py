"""The types plugin options are declared with: the base model and the shared field types.

A leaf of the contract: it imports pydantic and nothing of pixgen's, so the recipe's
data model, the plugin base classes and every plugin can use it without cycles.

Validation context (passed by the recipe loader to ``model_validate``):

- ``base_dir``: the recipe's folder; relative :data:`InputFile` paths resolve against it;
- ``check_files``: whether :data:`InputFile` paths must exist (default true).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, ValidationInfo
from pydantic.functional_validators import AfterValidator, WrapValidator


class PluginOptions(BaseModel):
    """Base of every plugin's ``Options``: unknown keys are errors, non-finite numbers
    are refused, defaults are validated like given values."""

    model_config = ConfigDict(
        extra="forbid", validate_default=True, arbitrary_types_allowed=True, allow_inf_nan=False
    )


def _resolve_input_file(value: Any, handler: Any, info: ValidationInfo) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        # Checked before the str | Path union, whose errors name pydantic's internals.
        raise ValueError(f"expected a file path, got {value!r}")
    path = Path(os.path.expanduser(str(handler(value))))
    context = info.context or {}
    base = context.get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    if context.get("check_files", True) and not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path


InputFile = Annotated[str | Path, WrapValidator(_resolve_input_file)]
"""A path to an existing file, relative to the recipe's folder; checked before the run."""


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


NonEmptyStr = Annotated[str, AfterValidator(_non_empty)]
"""Text that is not empty or only spaces."""


def _plain_name(value: str) -> str:
    if not value.strip() or value in (".", "..") or "/" in value or "\\" in value:
        raise ValueError(f"must be a plain name inside the run folder (no '/'), got {value!r}")
    return value


PlainName = Annotated[str, AfterValidator(_plain_name)]
"""A file or folder name inside the run folder: an output's files stay in it."""
