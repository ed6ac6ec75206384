"""YAML recipes -> validated, typed :class:`Recipe` objects, with clear errors.

Loading is in three phases so that nothing is allocated before everything is checked:

1. YAML is parsed with ``yaml.safe_load`` semantics through a composer that keeps each
   value's line and refuses bombs (too many values after alias expansion, recursive
   aliases, deep nesting, huge files).
2. ``--set PATH=VALUE`` overrides (values parsed as YAML) are applied to the raw data.
3. The core schema and each plugin's ``Options`` validate their parts. All problems are
   reported together, each with the recipe path (``losses[1].weight``), the line, what
   was expected and, for unknown names, the closest valid ones.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pixgen.animation import AnimationConfig
from pixgen.errors import RecipeError
from pixgen.plugin import PluginOptions
from pixgen.plugins import PluginSet, did_you_mean, load_plugins
from pixgen.steps import Schedule, StepInterval, StepValue

MAX_RECIPE_BYTES = 1 << 20
MAX_VALUES = 20_000  # after alias expansion
MAX_DEPTH = 64

QUALITY_STEPS = {"draft": 100, "normal": 300, "better": 600, "best": 1000}
"""Steps per quality preset (used when the recipe gives no ``steps``)."""

Path_ = tuple[str | int, ...]


# -- phase 1: YAML with lines, refusing bombs --------------------------------------------


@dataclass
class SourceText:
    """Parsed YAML and where each value came from."""

    data: Any
    lines: dict[Path_, int]
    origin: str  # file name or "<string>"


def _walk_nodes(
    node: yaml.Node,
    path: Path_,
    lines: dict[Path_, int],
    budget: list[int],
    stack: set[int],
    depth: int,
) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise RecipeError(
            f"the recipe has more than {MAX_VALUES} values once its aliases are expanded; "
            "refusing it (a YAML bomb?)"
        )
    if depth > MAX_DEPTH:
        raise RecipeError(f"the recipe is nested more than {MAX_DEPTH} levels deep")
    if id(node) in stack:
        raise RecipeError(
            f"line {node.start_mark.line + 1}: recursive YAML alias; a recipe cannot refer to itself"
        )
    if isinstance(node, yaml.MappingNode):
        stack.add(id(node))
        first_line_of: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            line = key_node.start_mark.line + 1
            # YAML keeps the last of two equal keys; a recipe that says two things is a
            # mistake. Merge keys (<<) are YAML's own way to give defaults, so exempt.
            if key in first_line_of and key != "<<":
                where = format_path((*path, key))
                raise RecipeError(
                    f"line {line}: {where} is given twice (first on line {first_line_of[key]}); "
                    "keep one"
                )
            first_line_of.setdefault(key, line)
            child = (*path, key)
            lines.setdefault(child, line)
            _walk_nodes(key_node, child, lines, budget, stack, depth + 1)
            _walk_nodes(value_node, child, lines, budget, stack, depth + 1)
        stack.discard(id(node))
    elif isinstance(node, yaml.SequenceNode):
        stack.add(id(node))
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines.setdefault(child, item.start_mark.line + 1)
            _walk_nodes(item, child, lines, budget, stack, depth + 1)
        stack.discard(id(node))


# A hex colour where a YAML value starts: YAML reads it as a comment.
_BARE_COLOUR = re.compile(r"(?:^|[\[{,:]|-)\s*(#[0-9A-Fa-f]{3,8})\b", re.M)


def _colour_comment_hint(text: str | None) -> str:
    """A hint when ``text`` has an unquoted hex colour, which YAML takes for a comment."""
    found = _BARE_COLOUR.search(text or "")
    if not found:
        return ""
    return (
        f"; an unquoted {found.group(1)} starts a YAML comment: write colours in quotes, "
        f'like "{found.group(1)}"'
    )


@contextlib.contextmanager
def _yaml_errors(origin: str) -> Iterator[None]:
    """PyYAML's exceptions (and runaway nesting) as one RecipeError with the line."""
    try:
        yield
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        buffer = getattr(mark, "buffer", None) if mark else None
        hint = _colour_comment_hint(buffer if isinstance(buffer, str) else None)
        raise RecipeError(f"{origin}: {where}not valid YAML ({problem}){hint}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{origin}: not valid YAML ({exc})") from None
    except RecursionError:
        raise RecipeError(f"{origin}: nested too deeply to be a recipe") from None


def parse_yaml(text: str, origin: str = "<string>") -> SourceText:
    """Parse YAML safely, keeping lines; raise :class:`RecipeError` on anything odd."""
    if len(text.encode("utf-8", "ignore")) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{origin}: larger than {MAX_RECIPE_BYTES} bytes; not a recipe")
    loader = yaml.SafeLoader(text)
    try:
        with _yaml_errors(origin):
            node = loader.get_single_node()
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}
    if node is None:
        return SourceText(None, lines, origin)
    try:
        _walk_nodes(node, (), lines, [MAX_VALUES], set(), 0)
    except RecipeError as exc:
        raise RecipeError(f"{origin}: {exc.message}") from None
    constructor = yaml.SafeLoader("")
    try:
        with _yaml_errors(origin):
            data = constructor.construct_document(node)
    finally:
        constructor.dispose()
    return SourceText(data, lines, origin)


def read_recipe_source(
    source: str | os.PathLike[str] | Mapping[str, Any],
) -> tuple[SourceText, Path]:
    """A path, a YAML string or a dict -> (parsed text, folder relative paths resolve in)."""
    if isinstance(source, Mapping):
        return SourceText(copy.deepcopy(dict(source)), {}, "<dict>"), Path.cwd()
    text_source = (
        isinstance(source, str)
        and ("\n" in source or ":" in source)
        and not (Path(source).suffix.lower() in {".yaml", ".yml"} and "\n" not in source)
    )
    if text_source:
        return parse_yaml(str(source), "<string>"), Path.cwd()
    path = Path(source)
    if path.is_dir():
        raise RecipeError(f"{path} is a folder, not a recipe file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {path}") from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: larger than {MAX_RECIPE_BYTES} bytes; not a recipe")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file (not UTF-8)") from None
    return parse_yaml(text, str(path)), path.resolve().parent


# -- phase 2: --set overrides ------------------------------------------------------------

_OVERRIDE = re.compile(r"^\s*([A-Za-z_][\w\-]*(?:\.[\w\-]+)*)\s*=(.*)$", re.S)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"losses.0.weight=2"`` -> (["losses", "0", "weight"], 2); the value is YAML."""
    match = _OVERRIDE.match(text)
    if not match:
        raise RecipeError(
            f"--set {text!r}: expected PATH=VALUE, e.g. --set steps=50 or --set losses.0.weight=2"
        )
    path, value_text = match.group(1).split("."), match.group(2)
    try:
        value = (
            parse_yaml(value_text, f"--set {match.group(1)}").data if value_text.strip() else None
        )
    except RecipeError as exc:
        raise RecipeError(f"--set {text!r}: {exc.message}") from None
    return path, value


def apply_override(data: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """Set ``value`` at ``path`` inside ``data`` (list items by index)."""
    target: Any = data
    shown = ""
    for i, key in enumerate(path):
        last = i == len(path) - 1
        shown = f"{shown}.{key}" if shown else key
        if isinstance(target, list):
            if not key.lstrip("-").isdigit():
                raise RecipeError(
                    f"--set {shown}: {shown.rsplit('.', 1)[0]} is a list; use an index"
                )
            index = int(key)
            if not -len(target) <= index < len(target):
                raise RecipeError(
                    f"--set {shown}: the list has {len(target)} entries (indices 0-{len(target) - 1})"
                )
            if last:
                target[index] = value
            else:
                target = target[index]
        elif isinstance(target, dict):
            if last:
                target[key] = value
            else:
                if key not in target or target[key] is None:
                    target[key] = {}
                target = target[key]
        else:
            raise RecipeError(f"--set {shown}: {shown.rsplit('.', 1)[0]} is not a mapping or list")


# -- phase 3: the typed recipe -----------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


class OptimizerConfig(_Strict):
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


class EarlyStopConfig(_Strict):
    """Stop when the total loss has not improved for a while."""

    patience: StepInterval = Field(description="steps without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="smallest decrease that counts as improvement")
    check_every: int = Field(10, ge=1, description="steps between checks (each check syncs)")


class SpeedConfig(_Strict):
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


class PluginEntry(_Strict):
    """``{use: NAME, ...options}``: a plugin and its validated options."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    use: str
    options: PluginOptions

    def to_dict(self) -> dict[str, Any]:
        return {"use": self.use, **self.options.model_dump(mode="json")}


class LossEntry(PluginEntry):
    weight: Schedule = 1.0
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"use": self.use, "weight": self.weight}
        if self.label:
            out["label"] = self.label
        out.update(self.options.model_dump(mode="json"))
        return out


_ENTRY_CORE_KEYS = {"generator": {"use"}, "losses": {"use", "weight", "label"}, "outputs": {"use"}}
_KIND_OF = {"generator": "generator", "losses": "loss", "outputs": "output"}


class RecipeCore(_Strict):
    """The recipe's own fields; plugin entries are validated separately against plugins."""

    name: str = Field("untitled", min_length=1, max_length=100, description="name of the run")
    seed: int | None = Field(None, ge=0, lt=2**63, description="random seed (random if unset)")
    size: tuple[int, int] = Field(
        (512, 512),
        description="image [width, height] in pixels; one number (512) or '640x360' also works",
    )
    steps: int | None = Field(
        None, ge=1, le=1_000_000, description="optimisation steps (default from quality, else 300)"
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 autocast on CUDA, fp32 elsewhere"
    )
    quality: Literal["draft", "normal", "better", "best"] | None = Field(
        None, description="preset for models, cutouts and steps; explicit settings win"
    )
    generator: dict[str, Any] | str = Field(
        description="{use: NAME, ...options}, or just NAME for the defaults"
    )
    losses: list[dict[str, Any] | str] = Field(
        min_length=1, description="[{use: NAME, weight, ...}], or NAME for the defaults"
    )
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)  # type: ignore[arg-type]
    outputs: list[dict[str, Any] | str] = Field(
        default_factory=list, description="[{use: NAME, ...}], or NAME for the defaults"
    )
    early_stop: EarlyStopConfig | None = None
    checkpoint_every: StepInterval | None = Field(
        None,
        description="steps between resume checkpoints (checkpoint.pt, for pixgen resume); "
        "one is also written when the run stops",
    )
    animation: AnimationConfig | None = Field(
        None, description="zoom/rotate/pan the image every N steps (see below)"
    )
    speed: SpeedConfig = Field(default_factory=SpeedConfig)  # type: ignore[arg-type]
    plugins: list[str] = Field(default_factory=list, description="local plugin files to load")

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


class Recipe(BaseModel):
    """A validated recipe: core settings plus instantiated plugin options."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    seed: int | None
    size: tuple[int, int]
    steps: int
    device: str
    precision: str
    quality: str | None
    generator: PluginEntry
    losses: list[LossEntry]
    optimizer: OptimizerConfig
    outputs: list[PluginEntry]
    early_stop: EarlyStopConfig | None
    checkpoint_every: int | str | None = None
    animation: AnimationConfig | None = None
    speed: SpeedConfig = SpeedConfig()
    plugins: list[str]
    base_dir: Path = Path(".")
    origin: str = "<dict>"

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data (written as ``recipe.yaml`` of a run)."""
        out: dict[str, Any] = {
            "name": self.name,
            "seed": self.seed,
            "size": list(self.size),
            "steps": self.steps,
            "device": self.device,
            "precision": self.precision,
        }
        if self.quality:
            out["quality"] = self.quality
        out["generator"] = self.generator.to_dict()
        out["losses"] = [entry.to_dict() for entry in self.losses]
        out["optimizer"] = self.optimizer.model_dump(mode="json")
        out["outputs"] = [entry.to_dict() for entry in self.outputs]
        if self.early_stop:
            out["early_stop"] = self.early_stop.model_dump(mode="json")
        if self.checkpoint_every is not None:
            out["checkpoint_every"] = self.checkpoint_every
        if self.animation:
            out["animation"] = self.animation.model_dump(mode="json")
        if self.speed != SpeedConfig():
            out["speed"] = self.speed.model_dump(mode="json")
        if self.plugins:
            out["plugins"] = list(self.plugins)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# -- errors ------------------------------------------------------------------------------


def format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


@dataclass
class Problem:
    path: Path_
    message: str


class _Problems:
    def __init__(self, source: SourceText, overridden: set[Path_]):
        self.source = source
        self.overridden = overridden
        self.items: list[Problem] = []

    def add(self, path: Path_, message: str) -> None:
        self.items.append(Problem(tuple(path), message))

    def line_of(self, path: Path_) -> str:
        prefixes = [tuple(path[:cut]) for cut in range(len(path), -1, -1)]
        if any(prefix in self.overridden for prefix in prefixes):
            return "--set"  # the file's lines under an overridden value are gone
        for prefix in prefixes:
            if prefix in self.source.lines:
                return f"line {self.source.lines[prefix]}"
        return ""

    def raise_if_any(self) -> None:
        if not self.items:
            return
        parts = []

        def line_number(problem: Problem) -> int:
            where = self.line_of(problem.path)
            return int(where.split()[1]) if where.startswith("line ") else 10**9

        set_file_missing = False
        for problem in sorted(self.items, key=line_number)[:12]:
            where = self.line_of(problem.path)
            set_file_missing |= where == "--set" and problem.message.startswith("file not found")
            where = f"{where}, " if where else ""
            parts.append(f"  {where}{format_path(problem.path)}: {problem.message}")
        if len(self.items) > 12:
            parts.append(f"  … and {len(self.items) - 12} more")
        if set_file_missing:
            parts.append(
                "  (a --set value is read as if written in the recipe: a relative path is "
                "relative to the recipe's folder; give an absolute path, e.g. $PWD/FILE)"
            )
        noun = "problem" if len(self.items) == 1 else "problems"
        raise RecipeError(
            f"{self.source.origin}: invalid recipe ({len(self.items)} {noun}):\n" + "\n".join(parts)
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _data_path(loc: tuple[Any, ...], data: Any) -> Path_:
    """pydantic's error location as a path through the recipe's own data: drops the
    labels pydantic adds for union members and validators (``mapping``,
    ``function-after[...]``) which are not keys of the recipe."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        in_mapping = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_mapping or in_list:
            out.append(part)
            node = node[part]
        elif last or (isinstance(part, str) and "[" not in part and node is None):
            out.append(part)
        elif isinstance(node, Mapping | list) or node is None:
            continue  # a union tag or validator label
        else:
            out.append(part)
    return tuple(out)


def _pydantic_problems(
    problems: _Problems,
    exc: ValidationError,
    prefix: Path_,
    allowed: Iterable[str] | Callable[[Path_], Iterable[str]] = (),
    data: Any = None,
    skip: Callable[[Path_], bool] = lambda loc: False,
) -> None:
    seen: set[tuple[Path_, str]] = set()
    for err in exc.errors():
        if data is not None:
            loc = _data_path(tuple(err["loc"]), data)
        else:
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        if skip(loc):
            continue
        kind = err["type"]
        if (loc, kind) in seen:
            continue
        seen.add((loc, kind))
        if kind == "extra_forbidden":
            key = str(loc[-1]) if loc else "?"
            if callable(allowed):
                names = sorted(allowed(loc[:-1]))
            else:  # the valid names are known for the entry's own keys, not nested ones
                names = sorted(allowed) if len(loc) == 1 else []
            hint = did_you_mean(key, names)
            valid = f" (valid: {', '.join(names)})" if names else ""
            problems.add((*prefix, *loc), f"unknown key{hint}{valid}")
        elif kind == "missing":
            problems.add((*prefix, *loc), "required but missing")
        else:
            msg = err["msg"]
            msg = msg.removeprefix("Value error, ")
            got = (
                f" (got {_short(err.get('input'))}{_yaml_typing_hint(kind, err.get('input'))})"
                if "input" in err and kind != "value_error"
                else ""
            )
            problems.add((*prefix, *loc), f"{msg}{got}")


def _in_an_entry(data: Mapping[str, Any]) -> Callable[[Path_], bool]:
    """Whether a place is in a plugin entry (the generator, losses[i], outputs[i]) that
    :func:`_validate_entry` checks with its own messages, against the plugin's options."""

    def check(loc: Path_) -> bool:
        if loc[:1] == ("generator",):
            return "generator" in data
        return len(loc) >= 2 and loc[0] in ("losses", "outputs") and isinstance(loc[1], int)

    return check


def _yaml_typing_hint(kind: str, value: Any) -> str:
    """Why a text field got a boolean or a number: YAML typed the bare word."""
    if kind not in ("string_type", "literal_error"):
        return ""
    if isinstance(value, bool):
        return "; YAML reads a bare yes/no/on/off/true/false as a boolean: put it in quotes"
    if isinstance(value, int | float):
        return "; YAML reads a bare number as a number: put it in quotes"
    return ""


def _core_names(parent: Path_) -> Iterable[str]:
    """Valid keys at a place in the recipe's core sections (for did-you-mean)."""
    if not parent:
        return RecipeCore.model_fields
    field = RecipeCore.model_fields.get(str(parent[0]))
    if field is None or len(parent) != 1:
        return ()
    for candidate in (field.annotation, *typing.get_args(field.annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate.model_fields
    return ()


def _validate_entry(
    problems: _Problems,
    plugins: PluginSet,
    section: str,
    index: int | None,
    raw: Any,
    base_dir: Path,
    check_files: bool,
) -> PluginEntry | None:
    path: Path_ = (section,) if index is None else (section, index)
    kind = _KIND_OF[section]
    if isinstance(raw, str):
        raw = {"use": raw}
    if not isinstance(raw, Mapping):
        problems.add(
            path, f"expected NAME or a mapping such as {{use: NAME, ...}} (got {_short(raw)})"
        )
        return None
    use = raw.get("use")
    if not isinstance(use, str) or not use:
        problems.add((*path, "use"), f"which {kind} plugin to use is required ({'use: NAME'})")
        return None
    try:
        info = plugins.registry.get(use, kind)
    except KeyError as exc:
        problems.add((*path, "use"), str(exc.args[0]))
        return None
    core_keys = _ENTRY_CORE_KEYS[section]
    option_data = {k: v for k, v in raw.items() if k not in core_keys}
    try:
        options = info.cls.Options.model_validate(
            option_data, context={"base_dir": base_dir, "check_files": check_files}
        )
    except ValidationError as exc:
        allowed = set(info.cls.Options.model_fields) | core_keys
        _pydantic_problems(problems, exc, path, allowed, data=option_data)
        return None
    if section == "losses":
        try:
            return LossEntry(
                use=use, options=options, weight=raw.get("weight", 1.0), label=raw.get("label")
            )
        except ValidationError as exc:
            _pydantic_problems(problems, exc, path)
            return None
    return PluginEntry(use=use, options=options)


def validate_recipe(
    source: SourceText,
    base_dir: Path,
    plugins: PluginSet,
    overridden: set[Path_] = frozenset(),
    check_files: bool = True,
) -> Recipe:  # type: ignore[assignment]
    """Check raw data against the core schema and every plugin's options."""
    problems = _Problems(source, set(overridden))
    data = source.data
    if data is None:
        raise RecipeError(f"{source.origin}: the recipe is empty")
    if not isinstance(data, Mapping):
        raise RecipeError(
            f"{source.origin}: a recipe is a YAML mapping (name:, generator:, losses: …), "
            f"not a {type(data).__name__}"
        )
    for key in data:
        if not isinstance(key, str):
            problems.add((), f"keys must be text, got {_short(key)}")
    problems.raise_if_any()
    try:
        core = RecipeCore.model_validate(dict(data))
    except ValidationError as exc:
        _pydantic_problems(problems, exc, (), _core_names, data=dict(data), skip=_in_an_entry(data))
        core = None
    generator = losses_out = outputs_out = None
    if "generator" in data:
        generator = _validate_entry(
            problems, plugins, "generator", None, data["generator"], base_dir, check_files
        )
    if isinstance(data.get("losses"), list):
        losses_out = [
            _validate_entry(problems, plugins, "losses", i, raw, base_dir, check_files)
            for i, raw in enumerate(data["losses"])
        ]
    if isinstance(data.get("outputs"), list):
        outputs_out = [
            _validate_entry(problems, plugins, "outputs", i, raw, base_dir, check_files)
            for i, raw in enumerate(data["outputs"])
        ]
    problems.raise_if_any()
    assert core is not None and generator is not None and losses_out is not None
    steps = core.steps or QUALITY_STEPS.get(core.quality or "", 300)
    return Recipe(
        name=core.name,
        seed=core.seed,
        size=core.size,
        steps=steps,
        device=core.device,
        precision=core.precision,
        quality=core.quality,
        generator=generator,
        losses=[e for e in losses_out if isinstance(e, LossEntry)],
        optimizer=core.optimizer,
        outputs=[e for e in (outputs_out or []) if e is not None],
        early_stop=core.early_stop,
        checkpoint_every=core.checkpoint_every,
        animation=core.animation,
        speed=core.speed,
        plugins=core.plugins,
        base_dir=base_dir,
        origin=source.origin,
    )


def load_recipe(
    source: str | os.PathLike[str] | Mapping[str, Any],
    overrides: Iterable[str] | Mapping[str, Any] = (),
    *,
    extra_plugins: Sequence[object] = (),
    check_files: bool = True,
) -> tuple[Recipe, PluginSet]:
    """Read, override and validate a recipe; load the plugins it needs.

    :param source: a path to a YAML file, a YAML string or a dict.
    :param overrides: ``["steps=50", "losses.0.weight=2"]`` (values parsed as YAML) or a
        mapping ``{"steps": 50, "losses.0.weight": 2}`` (values used as they are).
    :param extra_plugins: plugin objects/modules to register besides the installed ones.
    """
    parsed, base_dir = read_recipe_source(source)
    overridden: set[Path_] = set()
    items: list[tuple[list[str], Any]] = []
    if isinstance(overrides, Mapping):
        items = [(str(k).split("."), v) for k, v in overrides.items()]
    else:
        items = [parse_override(text) for text in overrides]
    if items:
        if parsed.data is None:
            parsed.data = {}
        if not isinstance(parsed.data, dict):
            raise RecipeError(f"{parsed.origin}: a recipe is a YAML mapping; cannot apply --set")
        for path, value in items:
            apply_override(parsed.data, path, value)
            overridden.add(tuple(int(p) if p.lstrip("-").isdigit() else p for p in path))
    files: list[Path] = []
    raw_files = parsed.data.get("plugins", []) if isinstance(parsed.data, Mapping) else []
    if isinstance(raw_files, list):
        for i, item in enumerate(raw_files):
            if not isinstance(item, str):
                continue  # the schema reports it
            file = Path(os.path.expanduser(item))
            file = file if file.is_absolute() else base_dir / file
            if not file.is_file():
                where = parsed.lines.get(("plugins", i))
                at = f"line {where}, " if where else ""
                raise RecipeError(
                    f"{parsed.origin}: invalid recipe:\n  {at}plugins[{i}]: plugin file not found: {file}"
                )
            files.append(file.resolve())
    plugin_set = load_plugins(files=files, extra=extra_plugins)
    recipe = validate_recipe(parsed, base_dir, plugin_set, overridden, check_files=check_files)
    if files:  # absolute, as the asset paths are: a run's recipe.yaml re-runs from anywhere
        recipe = recipe.model_copy(update={"plugins": [str(file) for file in files]})
    return recipe, plugin_set
