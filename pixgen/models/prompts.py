"""Prompts and prompt schedules for CLIP losses.

A prompt is a text or an image with a weight (negative pushes the picture away) and an
optional ``stop``: once the distance falls below it, that prompt stops pulling. Recipes
write prompts as

- strings in the VQGAN+CLIP/Pixray style: ``"a lighthouse:2 | storm | blurry:-1"``, each
  part ``text[:weight[:stop]]`` (only trailing numbers count as fields, so
  ``"time: 5pm"`` stays one text);
- mappings: ``{text: ..., weight: ..., stop: ...}`` or ``{image: path.png, weight: ...}``;
- a story: ``"a forest ^ a city ^ the sea"`` spreads the parts evenly over the run, and
  ``story: [{at: 0, prompts: [...]}, {at: "50%", prompts: [...]}]`` says when each set
  starts. ``transition: N`` cross-fades: from a set's start, its prompts' weights rise
  linearly from 0 to full over N steps while the previous set's fall to 0.

:class:`PromptSchedule` turns all of that into a fixed list of *terms* (one per distinct
prompt) and gives each term's weight at a step as plain Python floats, so a step never
waits for the GPU to know its weights.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Discriminator, Field, Tag, field_validator

from pixgen.options import InputFile, PluginOptions
from pixgen.steps import StepValue, resolve_step

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf"
_FIELDS = re.compile(
    rf"^(?P<text>.*?)(?::\s*(?P<weight>{_NUMBER})\s*)(?::\s*(?P<stop>{_NUMBER})\s*)?$"
)


# -- the recipe's shapes -----------------------------------------------------------------


class TextPrompt(PluginOptions):
    """``{text: ..., weight: 1, stop: null}``: a text prompt (the text is taken literally)."""

    text: str = Field(min_length=1, description="what the picture should show (or not)")
    weight: float = Field(1.0, ge=-100, le=100, description="negative pushes away")
    stop: float | None = Field(None, description="stop pulling once the distance is below this")

    @field_validator("text")
    @classmethod
    def _strip(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a prompt's text must not be empty")
        return value.strip()


class ImagePrompt(PluginOptions):
    """``{image: path.png, weight: 1}``: the picture should look like this image to CLIP."""

    image: InputFile = Field(description="image file whose CLIP embedding is the target")
    weight: float = Field(1.0, ge=-100, le=100, description="negative pushes away")
    stop: float | None = Field(None, description="stop pulling once the distance is below this")


def _prompt_kind(value: Any) -> str | None:
    """Which shape a prompt entry is, so errors speak of that shape only."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, TextPrompt | ImagePrompt):
        return "mapping" if isinstance(value, TextPrompt) else "image mapping"
    if isinstance(value, dict):
        if "text" in value and "image" in value:
            return None
        return "image mapping" if "image" in value else "mapping"
    return None


PromptItem = Annotated[
    Annotated[str, Tag("text")]
    | Annotated[TextPrompt, Tag("mapping")]
    | Annotated[ImagePrompt, Tag("image mapping")],
    Discriminator(
        _prompt_kind,
        custom_error_type="prompt",
        custom_error_message="a prompt is a string, {text: ..., weight: ...} or "
        "{image: file, weight: ...} (not both text and image)",
    ),
]
"""One entry of ``prompts:``: a string (may hold ``|`` and ``^``) or a mapping."""


class StoryEntry(PluginOptions):
    """``{at: STEP, prompts: [...]}``: from step ``at`` (a count or ``"50%"``) use these prompts."""

    at: StepValue = Field(description="step (or share of the run) where these prompts start")
    prompts: list[PromptItem] = Field(min_length=1, description="prompts of this part")

    @field_validator("prompts", mode="before")
    @classmethod
    def _one_string(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | dict) else value

    @field_validator("prompts")
    @classmethod
    def _parse(cls, value: list[PromptItem]) -> list[PromptItem]:
        for item in value:
            if isinstance(item, str):
                if "^" in item:
                    raise ValueError(
                        f"{item!r}: a story part is timed by its at:, so '^' (which spreads "
                        "prompts over the run) cannot be used in it"
                    )
                parse_prompt_string(item)
        return value


# -- parsed prompts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """A parsed prompt: a text or an image, its weight and its stop distance."""

    text: str | None = None
    image: Path | None = None
    weight: float = 1.0
    stop: float | None = None

    @property
    def label(self) -> str:
        """Its name in the loss history."""
        return self.text if self.text is not None else f"image:{Path(self.image or '').name}"

    @property
    def key(self) -> tuple[Any, ...]:
        """Prompts with equal keys are one term (their weights add up)."""
        sign = -1 if self.weight < 0 else 1
        return (self.text, str(self.image) if self.image else None, self.stop, sign)


def parse_prompt_part(part: str) -> Prompt:
    """``"text[:weight[:stop]]"`` -> :class:`Prompt`; a non-numeric tail stays in the text."""
    part = part.strip()
    match = _FIELDS.match(part)
    if match and match.group("text").strip():
        text = match.group("text").strip()
        weight = float(match.group("weight"))
        stop = match.group("stop")
        if not math.isfinite(weight):
            raise ValueError(f"prompt {part!r}: the weight must be a finite number")
        stop_value = float(stop) if stop is not None else None
        if stop_value is not None and math.isinf(stop_value) and stop_value < 0:
            stop_value = None  # VQGAN+CLIP's default "-inf" means no stop
        return Prompt(text=text, weight=weight, stop=stop_value)
    if not part:
        raise ValueError("empty prompt (two '|' in a row, or a '|' at an end?)")
    return Prompt(text=part)


def parse_prompt_string(text: str) -> list[Prompt]:
    """``"a lighthouse:2 | storm | blurry:-1"`` -> prompts (no ``^`` allowed here)."""
    if "^" in text:
        raise ValueError(f"{text!r}: '^' (story) is only allowed directly in prompts:")
    return [parse_prompt_part(part) for part in text.split("|")]


def to_prompts(item: PromptItem) -> list[Prompt]:
    """One recipe entry (string or mapping) -> prompts."""
    if isinstance(item, str):
        return parse_prompt_string(item)
    if isinstance(item, TextPrompt):
        return [Prompt(text=item.text, weight=item.weight, stop=item.stop)]
    return [Prompt(image=Path(item.image), weight=item.weight, stop=item.stop)]


# -- the schedule ------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One distinct prompt: what the loss reports under ``label``."""

    label: str
    text: str | None
    image: Path | None
    stop: float | None
    sign: int


class PromptSchedule:
    """Prompts that are always on plus timed parts, as terms with per-step weights."""

    def __init__(
        self, constant: list[Prompt], parts: list[tuple[int, list[Prompt]]], transition: int = 0
    ):
        self.transition = max(0, int(transition))
        self.parts = sorted(parts, key=lambda p: p[0])
        self.terms: list[Term] = []
        index: dict[tuple[Any, ...], int] = {}
        labels: dict[str, int] = {}

        def term_of(prompt: Prompt) -> int:
            if prompt.key not in index:
                label = prompt.label
                labels[label] = labels.get(label, 0) + 1
                if labels[label] > 1:
                    label = f"{label}#{labels[label]}"
                index[prompt.key] = len(self.terms)
                self.terms.append(
                    Term(
                        label,
                        prompt.text,
                        prompt.image,
                        prompt.stop,
                        -1 if prompt.weight < 0 else 1,
                    )
                )
            return index[prompt.key]

        self._constant = [(term_of(p), p.weight) for p in constant]
        self._parts = [
            (start, [(term_of(p), p.weight) for p in prompts]) for start, prompts in self.parts
        ]
        self._cache: tuple[int, list[float]] | None = None
        self.notices: list[str] = []

    @property
    def labels(self) -> list[str]:
        return [t.label for t in self.terms]

    def _ramp(self, step: int, start: int) -> float:
        """0 before ``start``, rising to 1 over ``transition`` steps from ``start``."""
        if step < start:
            return 0.0
        if self.transition == 0:
            return 1.0
        return min(1.0, (step - start) / self.transition)

    def part_factors(self, step: int) -> list[float]:
        """How much of each timed part is on at ``step`` (cross-fades included)."""
        factors = []
        for i, (start, _) in enumerate(self._parts):
            fade_in = 1.0 if start == 0 and i == 0 else self._ramp(step, start)
            fade_out = 1.0
            if i + 1 < len(self._parts):
                fade_out = 1.0 - self._ramp(step, self._parts[i + 1][0])
            factors.append(max(0.0, min(fade_in, fade_out)))
        return factors

    def weights_at(self, step: int) -> list[float]:
        """Each term's weight at ``step`` (plain floats, in :attr:`terms` order)."""
        if self._cache is not None and self._cache[0] == step:
            return self._cache[1]
        weights = [0.0] * len(self.terms)
        for term, weight in self._constant:
            weights[term] += weight
        for factor, (_, prompts) in zip(self.part_factors(step), self._parts, strict=True):
            if factor:
                for term, weight in prompts:
                    weights[term] += factor * weight
        self._cache = (step, weights)
        return weights

    def prompt_weights_at(self, step: int) -> dict[str, float]:
        """``{label: weight}`` at ``step``, terms that are off included (as 0.0)."""
        return dict(zip(self.labels, self.weights_at(step), strict=True))


def build_schedule(
    prompts: list[PromptItem],
    story: list[StoryEntry] | None,
    transition: int | str,
    total_steps: int,
) -> PromptSchedule:
    """The schedule of a clip loss's ``prompts``, ``story`` and ``transition`` options.

    Parts that the run's length hides (a start after the last step, two parts starting on
    the same step) are described in the schedule's ``notices``.
    """
    constant: list[Prompt] = []
    parts: list[tuple[int, list[Prompt]]] = []
    names: list[str] = []
    for item in prompts:
        if isinstance(item, str) and "^" in item:
            if parts or story:
                raise ValueError("use one story: either one '^' string or story:, not both")
            chapters = [c for c in item.split("^")]
            for i, chapter in enumerate(chapters):
                start = round(i * total_steps / len(chapters))
                parts.append((start, parse_prompt_string(chapter)))
                names.append(f"'^' part {i + 1}")
        else:
            constant.extend(to_prompts(item))
    for i, entry in enumerate(story or []):
        start = resolve_step(entry.at, total_steps)
        parts.append((start, [p for item in entry.prompts for p in to_prompts(item)]))
        names.append(f"story part {i + 1} (at: {entry.at})")
    schedule = PromptSchedule(constant, parts, resolve_step(transition, total_steps))
    schedule.notices = _hidden_parts(parts, names, total_steps)
    return schedule


def _hidden_parts(
    parts: list[tuple[int, list[Prompt]]], names: list[str], total_steps: int
) -> list[str]:
    notices = []
    first_at: dict[int, str] = {}
    for (start, _), name in zip(parts, names, strict=True):
        if start >= total_steps:
            notices.append(
                f"{name} starts at step {start}, after the run's last step "
                f"({total_steps - 1}); it is never shown"
            )
        elif start in first_at:
            notices.append(
                f"{first_at[start]} and {name} both start at step {start} in a "
                f"{total_steps}-step run; the first is hidden by the second"
            )
        first_at[start] = name
    return notices


def check_prompts(prompts: list[PromptItem], story: list[StoryEntry] | None) -> None:
    """Parse once at validation time so bad strings are recipe errors with a line."""
    stories = sum(1 for p in prompts if isinstance(p, str) and "^" in p)
    if stories > 1 or (stories and story):
        raise ValueError("use one story: either one '^' string or story:, not both")
    for item in prompts:
        if isinstance(item, str):
            for chapter in item.split("^"):
                parse_prompt_string(chapter)
    first_part_at: dict[int | str, int] = {}
    for number, entry in enumerate(story or [], start=1):
        if entry.at in first_part_at:
            raise ValueError(
                f"story parts {first_part_at[entry.at]} and {number} both start at "
                f"{entry.at!r}; give each part its own at:"
            )
        first_part_at[entry.at] = number
    if not prompts and not story:
        raise ValueError("the clip loss needs prompts (or a story)")
