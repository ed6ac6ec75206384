"""Colours in recipes: hex strings such as ``"#1a1c2c"``, and palettes of them.

One type, :data:`Colour` (and :data:`Palette`, a list of them), for every plugin option
that takes colours (the ``pixel`` generator's fixed palette, the ``palette`` loss, the
``strokes`` background), so the YAML pitfall it guards against is explained the same way
everywhere: an unquoted ``#`` starts a YAML comment.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import torch
from pydantic import AfterValidator, BeforeValidator

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def parse_hex(colour: str) -> tuple[float, float, float]:
    """``"#1a2b3c"`` (the ``#`` optional) as RGB in [0, 1]."""
    match = _HEX.match(colour.strip())
    if not match:
        raise ValueError(f"{colour!r} is not a hex colour such as '#1a2b3c'")
    value = match.group(1)
    return tuple(int(value[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]


def _colour_in_quotes(value: Any) -> Any:
    if value is None:
        # YAML read an unquoted "#ff0000" as an empty value and a comment.
        raise ValueError(
            'a colour is empty: "#" starts a YAML comment, so write colours in '
            'quotes, like "#ff0000"'
        )
    return value


def _check_colour(value: str) -> str:
    parse_hex(value)
    return value


Colour = Annotated[str, BeforeValidator(_colour_in_quotes), AfterValidator(_check_colour)]
"""A hex colour such as ``"#1a1c2c"``, checked."""


def _not_empty(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("a palette needs at least 1 colour")
    return value


Palette = Annotated[list[Colour], AfterValidator(_not_empty)]
"""A list of hex colours (``["#1a1c2c", "#f4f4f4"]``), each checked."""


def palette_tensor(colours: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """The colours as a ``[K, 3]`` float tensor in [0, 1]."""
    return torch.tensor([parse_hex(c) for c in colours], dtype=torch.float32, device=device)
