"""Step values and schedules.

Any recipe setting that names a step accepts a count (``150``) or a share of the run
(``"75%"``). A *schedule* maps steps to values: ``{0: 1.0, "50%": 0.2}`` interpolates
linearly between keyframes and holds the ends.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def _check_step_value(value: Any) -> int | str:
    if isinstance(value, bool):
        raise ValueError("expected a step count or a share such as '75%'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a step must be 0 or more")
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        match = _PERCENT.match(text)
        if match:
            if float(match.group(1)) > 100:
                raise ValueError("a share of the run must be at most 100%")
            return f"{match.group(1)}%"
    raise ValueError(f"expected a step count or a share such as '75%', got {value!r}")


StepValue = Annotated[
    int | str,
    BeforeValidator(_check_step_value),
    PlainSerializer(lambda v: v, return_type=int | str),
]
"""A step count or a share of the run (``"75%"``); resolve with :func:`resolve_step`."""


def _check_interval(value: Any) -> int | str:
    checked = _check_step_value(value)
    if checked == 0 or (isinstance(checked, str) and float(checked[:-1]) == 0):
        raise ValueError("an interval must be at least 1 step")
    return checked


StepInterval = Annotated[
    int | str,
    BeforeValidator(_check_interval),
    PlainSerializer(lambda v: v, return_type=int | str),
]
"""Steps between two events, a count of at least 1 or a share of the run (``"10%"``);
resolve with :func:`resolve_interval`."""


def resolve_interval(value: int | str, total_steps: int) -> int:
    """A :data:`StepInterval` in steps: at least 1, as a share of a short run may round to 0."""
    return max(1, resolve_step(value, total_steps))


def resolve_step(value: int | str, total_steps: int) -> int:
    """A step value as a step number within a run of ``total_steps`` steps."""
    if isinstance(value, int):
        return value
    match = _PERCENT.match(value)
    if not match:  # validated earlier; defensive
        return int(value)
    return round(float(match.group(1)) / 100.0 * total_steps)


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value}")
    return value


def _check_schedule(value: Any) -> float | dict[int | str, float]:
    if isinstance(value, bool):
        raise ValueError("expected a number or a schedule such as {0: 1.0, '50%': 0.0}")
    if isinstance(value, int | float):
        return _finite(float(value), "a value")
    if isinstance(value, Mapping):
        if not value:
            raise ValueError("a schedule needs at least one keyframe")
        out: dict[int | str, float] = {}
        for key, val in value.items():
            step = _check_step_value(key)
            if isinstance(val, bool) or not isinstance(val, int | float):
                raise ValueError(f"schedule value at {key!r} must be a number, got {val!r}")
            out[step] = _finite(float(val), f"the value at {key!r}")
        return out
    raise ValueError(
        f"expected a number or a schedule such as {{0: 1.0, '50%': 0.0}}, got {value!r}"
    )


Schedule = Annotated[
    float | dict[int | str, float],
    BeforeValidator(_check_schedule),
    PlainSerializer(lambda v: v, return_type=Any),
]
"""A constant or keyframes ``{step: value}`` interpolated linearly (steps may be shares)."""


class ScheduleFn:
    """A validated :data:`Schedule` resolved against a run length: ``fn(step) -> float``."""

    def __init__(self, schedule: float | Mapping[int | str, float], total_steps: int):
        if isinstance(schedule, int | float):
            self.keyframes = [(0, float(schedule))]
        else:
            frames = sorted((resolve_step(k, total_steps), float(v)) for k, v in schedule.items())
            self.keyframes = frames

    @property
    def constant(self) -> bool:
        return len({v for _, v in self.keyframes}) == 1

    def __call__(self, step: int) -> float:
        frames = self.keyframes
        if step <= frames[0][0]:
            return frames[0][1]
        for (s0, v0), (s1, v1) in itertools.pairwise(frames):
            if step <= s1:
                if s1 == s0:
                    return v1
                return v0 + (v1 - v0) * (step - s0) / (s1 - s0)
        return frames[-1][1]
