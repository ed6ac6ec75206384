"""Loss ``clip``: make the picture match text and image prompts, as CLIP sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator

from pixgen.context import RunContext
from pixgen.hookspecs import hookimpl
from pixgen.models.cutouts import AUGMENTATIONS, CutoutSettings, cutouts_for
from pixgen.models.prompts import PromptItem, StoryEntry, build_schedule, check_prompts
from pixgen.options import PluginOptions
from pixgen.plugin import Loss
from pixgen.steps import StepValue


@dataclass(frozen=True)
class Preset:
    models: tuple[str, ...]
    cutouts: int


QUALITY_PRESETS: dict[str, Preset] = {
    "draft": Preset(("ViT-B-32/openai",), 16),
    "normal": Preset(("ViT-B-32/openai",), 32),
    "better": Preset(("ViT-B-32/openai", "ViT-B-16/openai"), 48),
    "best": Preset(("ViT-B-32/openai", "ViT-B-16/openai", "RN50/openai"), 64),
}
"""The one table of what ``quality:`` means for CLIP: models and cutouts per model."""


def preset_for(quality: str | None) -> Preset:
    """The preset of a recipe's ``quality`` (``normal`` when unset)."""
    return QUALITY_PRESETS[quality or "normal"]


def _preset_text(what: str) -> str:
    parts = []
    for quality, preset in QUALITY_PRESETS.items():
        value = " + ".join(preset.models) if what == "models" else str(preset.cutouts)
        parts.append(f"{quality}: {value}")
    return "; ".join(parts)


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """VQGAN+CLIP's squared great-circle distance between unit vectors ``[N, D] x [K, D] -> [N, K]``."""
    return (x[:, None, :] - y[None, :, :]).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


def cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` between unit vectors, ``[N, D] x [K, D] -> [N, K]``."""
    return 1 - x @ y.T


DISTANCES = {"spherical": spherical_distance, "cosine": cosine_distance}


class ClipLoss(Loss):
    """Make the picture match text/image prompts as CLIP sees it (one term per prompt)."""

    name = "clip"

    class Options(PluginOptions):
        prompts: list[PromptItem] = Field(
            default_factory=list,
            description="texts ('a lighthouse:2 | storm | blurry:-1', each part "
            "text[:weight[:stop]]), {text, weight, stop} or {image: file, weight}; "
            "'a ^ b ^ c' spreads parts evenly over the run",
        )
        story: list[StoryEntry] | None = Field(
            None, description="timed prompts: [{at: STEP or '50%', prompts: [...]}, ...]"
        )
        transition: StepValue = Field(
            0, description="steps over which story parts cross-fade (count or share of the run)"
        )
        models: list[str] | None = Field(
            None,
            description="CLIP models (ARCH/PRETRAINED, ARCH:/path/file.safetensors or "
            "pixgen/NAME); several = an ensemble whose losses are averaged; default from "
            f"quality ({_preset_text('models')})",
        )
        cutouts: int | dict[str, int] | None = Field(
            None,
            description="cutouts per model and step, or {model: count}; default from "
            f"quality ({_preset_text('cutouts')})",
        )
        cut_pow: float = Field(
            1.0, gt=0, le=10, description="crop size bias: >1 favours small crops"
        )
        augment: list[Literal["flip", "affine", "perspective", "jitter", "noise"]] = Field(
            default_factory=lambda: list(AUGMENTATIONS),
            description="augmentations applied to every cutout",
        )
        noise: float = Field(
            0.1, ge=0, le=1, description="largest std of the noise added to cutouts"
        )
        distance: Literal["spherical", "cosine"] = Field(
            "spherical", description="spherical (VQGAN+CLIP's) or cosine distance"
        )

        @field_validator("prompts", mode="before")
        @classmethod
        def _listify(cls, value: Any) -> Any:
            return [value] if isinstance(value, str | dict) else value

        @field_validator("models", mode="before")
        @classmethod
        def _one_model(cls, value: Any) -> Any:
            return [value] if isinstance(value, str) else value

        @field_validator("models")
        @classmethod
        def _check_models(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
            if value is None:
                return None
            if not value:
                raise ValueError("name at least one model (or leave models out for the preset)")
            from pixgen.errors import WeightsError
            from pixgen.models.clip import parse_model_spec

            base = (info.context or {}).get("base_dir")
            names = []
            for name in value:
                try:
                    names.append(parse_model_spec(name, base).name)
                except WeightsError as exc:
                    raise ValueError(exc.message) from None
            if len(set(names)) != len(names):
                raise ValueError("a model is named twice")
            return names

        @field_validator("cutouts")
        @classmethod
        def _check_cutouts(cls, value: int | dict[str, int] | None) -> int | dict[str, int] | None:
            counts = [value] if isinstance(value, int) else list((value or {}).values())
            for count in counts:
                if not 1 <= count <= 1024:
                    raise ValueError("cutouts must be between 1 and 1024")
            return value

        @model_validator(mode="after")
        def _check(self) -> ClipLoss.Options:
            check_prompts(self.prompts, self.story)
            if isinstance(self.cutouts, dict):
                if self.models is None:
                    raise ValueError("cutouts per model need models: [...] too")
                unknown = set(self.cutouts) - set(self.models)
                if unknown:
                    raise ValueError(f"cutouts names models not in models: {sorted(unknown)}")
            return self

    options: Options

    def __init__(self, options: Options, ctx: RunContext):
        super().__init__(options, ctx)
        from pixgen.models.clip import model_service

        preset = preset_for(ctx.quality)
        names = options.models or list(preset.models)
        self.models = [model_service(ctx, name) for name in names]
        # The image tower is the heavy part: the engine may compile it (shared per run).
        self.image_encoders = [
            ctx.service(
                ("clip-image-encoder", m.name),
                lambda m=m: ctx.compile_module(m.encode_image, f"CLIP {m.name}"),
            )
            for m in self.models
        ]
        counts = options.cutouts
        self.cutout_counts = [
            counts if isinstance(counts, int) else (counts or {}).get(name, preset.cutouts)
            for name in names
        ]
        self.cut_settings = CutoutSettings(
            cut_pow=options.cut_pow, augment=tuple(options.augment), noise=options.noise
        )
        self.schedule = build_schedule(
            options.prompts, options.story, options.transition, ctx.steps
        )
        for message in self.schedule.notices:
            ctx.notice(f"clip: {message}")
        self.terms = self.schedule.terms
        self.distance = DISTANCES[options.distance]
        device = ctx.device
        # Computed once per run: every prompt's target embedding per model, and the
        # per-term sign and stop as device tensors (no host copies inside a step).
        self.targets = [self._embed_targets(ctx, model) for model in self.models]
        self.signs = torch.tensor([float(t.sign) for t in self.terms], device=device)
        stops = [t.stop if t.stop is not None else float("-inf") for t in self.terms]
        self.has_stops = any(t.stop is not None for t in self.terms)
        self.stops = torch.tensor(stops, device=device)

    def _embed_targets(self, ctx: RunContext, model: Any) -> torch.Tensor:
        """``[K, D]`` normalised targets of every term for one model (shared across losses)."""
        from pixgen.fileio import load_image, tensor_to_pil

        rows = []
        for term in self.terms:
            if term.text is not None:
                key: tuple[Any, ...] = ("clip-text", model.name, term.text)
                rows.append(ctx.service(key, lambda t=term.text: model.encode_text([t])[0]))
            else:
                path = ctx.resolve_path(term.image)
                key = ("clip-image-prompt", model.name, str(path))
                rows.append(
                    ctx.service(
                        key, lambda p=path: model.encode_pil([tensor_to_pil(load_image(p))])[0]
                    )
                )
        return torch.stack(rows).float()

    def prompt_weights_at(self, step: int) -> dict[str, float]:
        """``{term label: weight}`` used at ``step`` (story cross-fades included)."""
        return self.schedule.prompt_weights_at(step)

    def __call__(self, image: torch.Tensor, ctx: RunContext) -> dict[str, torch.Tensor]:
        weights = self.schedule.weights_at(ctx.step)
        if not any(weights):
            return {}
        per_model = []
        for model, encoder, count, targets in zip(
            self.models, self.image_encoders, self.cutout_counts, self.targets, strict=True
        ):
            cut_key = (model.input_size, count, self.cut_settings)

            def features(
                model: Any = model, encoder: Any = encoder, count: int = count
            ) -> torch.Tensor:
                cuts = cutouts_for(ctx, image, model.input_size, count, self.cut_settings)
                return encoder(cuts).float()

            embeds = ctx.per_step(("clip-image-features", model.name, cut_key), features)
            signed = self.distance(embeds, targets) * self.signs  # [N, K]
            if self.has_stops:
                # VQGAN+CLIP's stop: below it, the value counts but no gradient flows.
                signed = torch.where(signed < self.stops, signed.detach(), signed)
            per_model.append(signed.mean(0))
        signed = per_model[0] if len(per_model) == 1 else torch.stack(per_model).mean(0)
        return {
            term.label: abs(weight) * signed[i]
            for i, (term, weight) in enumerate(zip(self.terms, weights, strict=True))
            if weight
        }


def _presets_doc() -> str:
    rows = [
        f"  {q}: {' + '.join(p.models)}, {p.cutouts} cutouts per model"
        for q, p in QUALITY_PRESETS.items()
    ]
    return (
        "Quality presets (models and cutouts when the loss does not set them; no "
        "quality: normal):\n" + "\n".join(rows)
    )


ClipLoss.__doc__ = f"{ClipLoss.__doc__}\n\n{_presets_doc()}"


@hookimpl
def register_losses(register):  # type: ignore[no-untyped-def]
    register(ClipLoss)
