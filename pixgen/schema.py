"""The recipe's data model: one pydantic model, :class:`Recipe`, and its sections.

A field added here is the whole change: validation, the run's written ``recipe.yaml``
(:meth:`Recipe.to_dict`), ``pixgen schema`` and the generated reference all follow from
it. Plugin entries (``generator:``, ``losses[i]``, ``outputs[i]``) are validated against
the plugin's own ``Options``, looked up in the registry that the recipe loader passes in
the validation context (``context={"plugins": registry, ...}``); this module knows no
plugin and imports nothing that does.

Validation context keys: ``plugins`` (a :class:`PluginLookup`, required for entries),
``base_dir`` and ``check_files`` (see :mod:`pixgen.options`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from pixgen.options import PluginOptions
from pixgen.steps import Schedule, StepInterval, StepValue

QUALITY_STEPS = {"draft": 100, "normal": 300, "better": 600, "best": 1000}
"""Steps per quality preset (used when the recipe gives no ``steps``)."""
DEFAULT_STEPS = 300


class PluginLookup(Protocol):
    """What entry validation needs of the plugin registry."""

    def options_of(self, kind: str, name: str) -> type[PluginOptions]:
        """The ``Options`` class of plugin ``name`` of ``kind``; raises ``ValueError``
        with a user-facing message (did-you-mean included) when there is none."""
        ...


class StrictModel(BaseModel):
    """A recipe section: unknown keys and non-finite numbers are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


# -- sections ----------------------------------------------------------------------------


class OptimizerConfig(StrictModel):
    """The optimiser and its learning-rate schedule."""

    name: Literal["adam", "adamw", "sgd"] = Field("adam", description="adam | adamw | sgd")
    lr: float = Field(0.1, gt=0, le=1000, description="learning rate")
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.999), description="adam/adamw betas, each in [0, 1)"
    )
    momentum: float = Field(0.0, ge=0, lt=1, description="sgd momentum")
    weight_decay: float = Field(0.0, ge=0, description="weight decay")
    schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant", description="lr over the run after warm-up: constant | cosine | linear decay"
    )
    warmup: StepValue = Field(0, description="linear warm-up length (steps or share of the run)")
    drops: list[StepValue] = Field(
        default_factory=list, description="steps at which the lr is multiplied by drop_factor"
    )
    drop_factor: float = Field(0.1, gt=0, le=1, description="factor applied at each drop")
    min_lr_factor: float = Field(0.0, ge=0, le=1, description="floor of cosine/linear decay")


class EarlyStopConfig(StrictModel):
    """Stop when the total loss has not improved for a while."""

    patience: StepInterval = Field(description="steps without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="smallest decrease that counts as improvement")
    check_every: int = Field(10, ge=1, description="steps between checks (each check syncs)")


class SpeedConfig(StrictModel):
    """How hard the engine works on speed; none of this changes what a run computes."""

    compile: Literal["auto", "off", "on"] = Field(
        "auto",
        description="torch.compile the heavy frozen models (auto: on CUDA, for runs of 1000 "
        "steps or more, where the minute or so of compilation pays back); the first steps "
        "then include compilation, shown as 'warming up'",
    )
    mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = Field(
        "reduce-overhead",
        description="torch.compile mode; reduce-overhead captures CUDA graphs",
    )
    conv_layout: Literal["auto", "channels_last"] = Field(
        "auto",
        description="memory layout of the convolutions in compiled models: auto lets "
        "inductor decide (it keeps the VQGAN decoder NCHW when gradients flow through it, "
        "because some of its convolutions narrow the channels); channels_last forces NHWC",
    )
    cudnn_benchmark: bool = Field(
        True,
        description="on CUDA, let cuDNN time its convolution algorithms on first use and keep "
        "the fastest (a run's shapes are fixed, so this is paid once); off picks them by "
        "heuristics",
    )

    @field_validator("compile", mode="before")
    @classmethod
    def _yaml_switch(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `on` / `off` (and yes/no, true/false) as booleans.
        if isinstance(value, bool):
            return "on" if value else "off"
        return value


class AnimationConfig(StrictModel):
    """Zoom, rotate or pan the image every N steps (the generator restarts from it)."""

    every: StepInterval = Field(10, description="steps between transforms")
    zoom: Schedule = Field(1.0, description="scale per transform (>1 zooms in); number or schedule")
    rotate: Schedule = Field(0.0, description="degrees per transform (counter-clockwise)")
    translate_x: Schedule = Field(0.0, description="pixels per transform, rightwards")
    translate_y: Schedule = Field(0.0, description="pixels per transform, downwards")
    reset_optimizer: bool = Field(
        True, description="forget the optimiser's momentum after each transform"
    )

    @field_validator("zoom")
    @classmethod
    def _positive_zoom(
        cls, value: float | dict[int | str, float]
    ) -> float | dict[int | str, float]:
        values = value.values() if isinstance(value, dict) else [value]
        if any(v <= 0 for v in values):
            raise ValueError("a zoom must be above 0 (1 keeps the size, 0.9 zooms out)")
        return value


# -- plugin entries ----------------------------------------------------------------------


class PluginEntry(BaseModel):
    """``{use: NAME, ...options}``, or just ``NAME`` for the plugin's defaults.

    The entry's own keys are its declared fields (``use``, and a loss's ``weight`` and
    ``label``); every other key is an option of the plugin, validated by its ``Options``.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    kind: ClassVar[str] = ""

    use: str = Field(description="the plugin's name")
    options: PluginOptions = Field(description="the plugin's options (the entry's other keys)")

    @classmethod
    def entry_keys(cls) -> list[str]:
        """The keys an entry has besides the plugin's options."""
        return [name for name in cls.model_fields if name != "options"]

    @model_validator(mode="before")
    @classmethod
    def _split_options(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"use": data, "options": {}}
        if isinstance(data, PluginEntry):
            return data
        if not isinstance(data, dict):
            raise ValueError(
                f"expected NAME or a mapping such as {{use: NAME, ...}} (got {_short(data)})"
            )
        if "options" in data and isinstance(data["options"], PluginOptions):
            return data  # built in code: PluginEntry(use=..., options=...)
        keys = cls.entry_keys()
        out: dict[str, Any] = {"use": ""}  # a missing name gets the message of an empty one
        out.update((k, v) for k, v in data.items() if k in keys)
        out["options"] = {k: v for k, v in data.items() if k not in keys}
        return out

    @field_validator("use")
    @classmethod
    def _known_plugin(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError(f"which {cls.kind} plugin to use is required (use: NAME)")
        _lookup(info).options_of(cls.kind, value)  # raises ValueError naming the choices
        return value

    @field_validator("options", mode="wrap")
    @classmethod
    def _plugin_options(cls, value: Any, handler: Any, info: ValidationInfo) -> Any:
        if isinstance(value, PluginOptions):
            return value
        use = info.data.get("use")
        if use is None:
            return value  # the name was wrong: that is the one error to report
        options_class = _lookup(info).options_of(cls.kind, use)
        return options_class.model_validate(value, context=info.context)

    @model_serializer(mode="plain")
    def _flat(self) -> dict[str, Any]:
        """As written in a recipe: the entry's keys (unset ones left out), then options."""
        out: dict[str, Any] = {}
        for key in self.entry_keys():
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out.update(self.options.model_dump(mode="json"))
        return out


def _lookup(info: ValidationInfo) -> PluginLookup:
    plugins = (info.context or {}).get("plugins")
    if plugins is None:
        raise ValueError(
            "plugin entries are validated against the installed plugins: load recipes with "
            "pixgen.load_recipe"
        )
    lookup: PluginLookup = plugins
    return lookup


class GeneratorEntry(PluginEntry):
    """The generator: the plugin that owns the parameters and renders the image."""

    kind: ClassVar[str] = "generator"


class LossEntry(PluginEntry):
    """A loss: its weight and label belong to the entry, the rest to the plugin."""

    kind: ClassVar[str] = "loss"

    weight: Schedule = Field(
        1.0,
        description="the loss's weight; a schedule such as {0: 1.0, '50%': 0.2} interpolates "
        "over the run",
    )
    label: str | None = Field(
        None, min_length=1, max_length=60, description="the loss's name in the loss history"
    )


class OutputEntry(PluginEntry):
    """An output: records what happens (stills, a video)."""

    kind: ClassVar[str] = "output"


# -- the recipe --------------------------------------------------------------------------


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plugin_paths(value: Any, info: ValidationInfo) -> Any:
    """Absolute, as asset paths are: a run's recipe.yaml re-runs from anywhere."""
    if not isinstance(value, list):
        return value
    base = (info.context or {}).get("base_dir")
    out: list[Any] = []
    for item in value:
        if not isinstance(item, str | os.PathLike) or not str(item).strip():
            raise ValueError(f"expected a list of plugin file paths, got {_short(item)}")
        path = Path(os.path.expanduser(os.fspath(item)))
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
        if not path.is_file():
            raise ValueError(f"plugin file not found: {path}")
        out.append(path.resolve())
    return out


PluginFiles = Annotated[list[Path], BeforeValidator(_plugin_paths)]
"""A recipe's ``plugins:``: local plugin files, resolved against the recipe's folder and
checked to exist. The loader reads this field first: the files' plugins are needed to
validate the entries."""


class Recipe(StrictModel):
    """A validated recipe. Load one with :func:`pixgen.load_recipe`."""

    model_config = ConfigDict(
        extra="forbid", validate_default=True, allow_inf_nan=False, arbitrary_types_allowed=True
    )

    name: str = Field("untitled", min_length=1, max_length=100, description="name of the run")
    seed: int | None = Field(None, ge=0, lt=2**63, description="random seed (random if unset)")
    size: tuple[int, int] = Field(
        (512, 512),
        description="image [width, height] in pixels; one number (512) or '640x360' also works",
    )
    steps: int = Field(
        DEFAULT_STEPS,
        ge=1,
        le=1_000_000,
        description=f"optimisation steps (default from quality, else {DEFAULT_STEPS})",
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 autocast on CUDA, fp32 elsewhere"
    )
    quality: Literal["draft", "normal", "better", "best"] | None = Field(
        None, description="preset for models, cutouts and steps; explicit settings win"
    )
    generator: GeneratorEntry = Field(
        description="{use: NAME, ...options}, or just NAME for the defaults"
    )
    losses: list[LossEntry] = Field(
        min_length=1, description="[{use: NAME, weight, ...}], or NAME for the defaults"
    )
    optimizer: OptimizerConfig = Field(
        default_factory=OptimizerConfig,
        description="the optimiser and its learning-rate schedule (see below)",
    )
    outputs: list[OutputEntry] = Field(
        default_factory=list, description="[{use: NAME, ...}], or NAME for the defaults"
    )
    early_stop: EarlyStopConfig | None = Field(
        None, description="stop when the total loss stops improving (see below)"
    )
    checkpoint_every: StepInterval | None = Field(
        None,
        description="steps between resume checkpoints (checkpoint.pt, for pixgen resume); "
        "one is also written when the run stops",
    )
    animation: AnimationConfig | None = Field(
        None, description="zoom/rotate/pan the image every N steps (see below)"
    )
    speed: SpeedConfig = Field(
        default_factory=SpeedConfig,
        description="how hard the engine works on speed (see below)",
    )
    plugins: PluginFiles = Field(
        default_factory=list,
        description="local plugin files to load (relative to the recipe's folder)",
    )

    # Where the recipe came from: relative paths resolve against base_dir; messages name
    # origin. Not recipe fields: never read from or written to YAML.
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _origin: str = PrivateAttr("<dict>")

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def origin(self) -> str:
        return self._origin

    @model_validator(mode="wrap")
    @classmethod
    def _keep_source(cls, data: Any, handler: Any, info: ValidationInfo) -> Recipe:
        recipe: Recipe = handler(data)
        context = info.context or {}
        if context.get("base_dir") is not None:
            recipe._base_dir = Path(context["base_dir"])
        if context.get("origin") is not None:
            recipe._origin = str(context["origin"])
        return recipe

    @model_validator(mode="before")
    @classmethod
    def _steps_from_quality(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("steps") is None:
            quality = data.get("quality")
            steps = QUALITY_STEPS.get(quality, DEFAULT_STEPS) if isinstance(quality, str) else None
            data = {**data, "steps": steps or DEFAULT_STEPS}
        return data

    @field_validator("size", mode="before")
    @classmethod
    def _read_size(cls, value: Any) -> Any:
        """``512`` is a square; ``"640x360"`` is width x height, as image tools write it."""
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, value)
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value)
            if match is None:
                raise ValueError("expected [width, height], one number or 'WIDTHxHEIGHT'")
            return (int(match[1]), int(match[2]))
        return value

    @field_validator("size")
    @classmethod
    def _check_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 8 or max(value) > 8192:
            raise ValueError("width and height must be between 8 and 8192 pixels")
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value.strip() in {".", ".."}:
            raise ValueError("a name cannot contain path separators")
        return value

    # -- as data -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data (written as a run's ``recipe.yaml``): every
        field, unset ones (null) left out."""
        data = self.model_dump(mode="json")
        return {key: value for key, value in data.items() if value is not None}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
