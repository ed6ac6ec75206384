"""The ``clip`` loss: prompts, weights, stops, ensembles, presets, stories, and real runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from clip_fixtures import make_tiny_clip_checkpoint
from PIL import Image
from pixgen_plugins.losses.clip import QUALITY_PRESETS, ClipLoss, preset_for

import pixgen
from pixgen.cli import main
from pixgen.engine import Engine
from pixgen.errors import RecipeError
from pixgen.models.prompts import (
    Prompt,
    PromptSchedule,
    build_schedule,
    parse_prompt_part,
    parse_prompt_string,
)
from pixgen.recipe import load_recipe


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    return make_tiny_clip_checkpoint(tmp_path / "clip")


def clip_recipe(spec: str, steps: int = 30, **loss: Any) -> dict[str, Any]:
    entry = {"use": "clip", "models": [spec], "cutouts": 8, **loss}
    return {
        "name": "clip",
        "seed": 1,
        "size": [48, 48],
        "steps": steps,
        "device": "cpu",
        "generator": {"use": "pixel", "cells": [12, 12]},
        "losses": [entry],
        "optimizer": {"name": "adam", "lr": 0.1},
    }


def first_last(values: list[float], n: int = 5) -> tuple[float, float]:
    return float(np.mean(values[:n])), float(np.mean(values[-n:]))


# -- prompt strings ----------------------------------------------------------------------


def test_prompt_strings_in_vqgan_clip_style() -> None:
    assert parse_prompt_string("a lighthouse:2 | storm | blurry:-1") == [
        Prompt("a lighthouse", weight=2.0),
        Prompt("storm"),
        Prompt("blurry", weight=-1.0),
    ]
    assert parse_prompt_part("a cat:1.5:0.8") == Prompt("a cat", weight=1.5, stop=0.8)
    assert parse_prompt_part("a cat:1:-inf") == Prompt("a cat", weight=1.0)
    assert parse_prompt_part("time: 5pm") == Prompt("time: 5pm")  # not a number: text
    with pytest.raises(ValueError, match="empty prompt"):
        parse_prompt_string("a || b")


def test_prompts_as_strings_mappings_and_images(tiny: str, target_png: Path) -> None:
    recipe = clip_recipe(
        tiny,
        prompts=[
            "a lighthouse:2 | storm",
            {"text": "blurry", "weight": -0.5},
            {"image": str(target_png), "weight": 0.5},
        ],
    )
    loaded = load_recipe(recipe)
    engine = Engine(loaded, write_files=False)
    loss = engine.losses[0].loss
    assert loss.prompt_weights_at(0) == {
        "a lighthouse": 2.0,
        "storm": 1.0,
        "blurry": -0.5,
        "image:target.png": 0.5,
    }
    model = loss.models[0]
    with Image.open(target_png) as img:
        expected = model.encode_pil([img.convert("RGB")])[0]
    assert torch.allclose(loss.targets[0][3], expected, atol=1e-6)  # embedded once at set-up
    assert torch.allclose(loss.targets[0][0], model.encode_text(["a lighthouse"])[0], atol=1e-6)


# -- runs --------------------------------------------------------------------------------


def test_clip_loss_goes_down_and_a_negative_prompt_pushes_away(tiny: str) -> None:
    result = pixgen.run(
        clip_recipe(tiny, steps=40, prompts=["a lighthouse | a cat:-1"]), write_files=False
    )
    losses = result.history["losses"]
    total0, total1 = first_last(result.history["total"])
    pull0, pull1 = first_last(losses["clip/a lighthouse"])
    push0, push1 = first_last(losses["clip/a cat"])
    assert total1 < total0
    assert pull1 < pull0  # closer to the positive prompt
    # Terms are weight x distance (they sum to the loss): for weight -1 the term falls as
    # the distance to the negative prompt rises.
    assert -push1 > -push0
    assert push1 < push0 < 0


def test_runs_are_deterministic_on_the_cpu(tiny: str) -> None:
    recipe = clip_recipe(tiny, steps=5, prompts=["a cat | a dog:-0.5"])
    a = pixgen.run(recipe, write_files=False)
    b = pixgen.run(recipe, write_files=False)
    assert a.history == b.history
    assert a.image.tobytes() == b.image.tobytes()


def test_two_losses_naming_a_model_share_one_instance(
    tiny: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixgen.models.clip import factory

    factory.clear_model_cache()
    built = []
    original = factory.instantiate
    monkeypatch.setattr(factory, "instantiate", lambda c: built.append(c) or original(c))
    recipe = clip_recipe(tiny, prompts=["a cat"])
    recipe["losses"].append({"use": "clip", "models": [tiny], "prompts": ["a dog"], "weight": 0.5})
    loaded = load_recipe(recipe)
    engine = Engine(loaded, write_files=False)
    first, second = (slot.loss for slot in engine.losses)
    assert first.models[0] is second.models[0]
    assert len(built) == 1


def test_ensemble_averages_each_models_loss(tmp_path: Path, tiny: str) -> None:
    other = make_tiny_clip_checkpoint(tmp_path / "other", seed=4, image_size=48)
    recipe = clip_recipe(tiny, steps=1, prompts=["a cat"], augment=[])
    recipe["losses"][0]["models"] = [tiny, other]
    engine = Engine(load_recipe(recipe), write_files=False)
    loss = engine.losses[0].loss
    image = torch.rand(1, 3, 48, 48)
    # Without augmentation and with cut_size >= image side, every cutout is the image.
    value = loss(image, engine.ctx)["a cat"]
    singles = [
        1
        - (
            m.encode_image(
                torch.nn.functional.interpolate(
                    image, size=m.input_size, mode="bilinear", antialias=True
                )
            )
            @ t.T
        )[0, 0]
        for m, t in zip(loss.models, loss.targets, strict=True)
    ]
    assert loss.models[1].input_size == (48, 48)
    spherical = [2 * torch.arcsin(torch.sqrt(2 * s) / 2) ** 2 for s in singles]
    assert torch.allclose(value, torch.stack(spherical).mean(), atol=2e-2)


def test_stop_ends_the_pull_below_the_distance(tiny: str) -> None:
    engine = Engine(
        load_recipe(clip_recipe(tiny, prompts=["a cat:1:100 | a dog"])), write_files=False
    )
    loss = engine.losses[0].loss
    image = torch.rand(1, 3, 48, 48, requires_grad=True)
    terms = loss(image, engine.ctx)
    (grad_cat,) = torch.autograd.grad(terms["a cat"], image, retain_graph=True)
    (grad_dog,) = torch.autograd.grad(terms["a dog"], image)
    assert terms["a cat"] > 0 and grad_cat.abs().sum() == 0
    assert grad_dog.abs().sum() > 0


def test_cosine_distance_option(tiny: str) -> None:
    engine = Engine(
        load_recipe(clip_recipe(tiny, prompts=["a cat"], distance="cosine")), write_files=False
    )
    value = engine.losses[0].loss(torch.rand(1, 3, 48, 48), engine.ctx)["a cat"]
    assert 0 < float(value) < 2


# -- presets and options -----------------------------------------------------------------


def test_quality_presets_set_models_and_cutouts_explicit_settings_win(tiny: str) -> None:
    assert len(preset_for("best").models) >= 3
    assert len(preset_for("draft").models) == 1
    assert preset_for(None) == QUALITY_PRESETS["normal"]
    assert preset_for("draft").cutouts < preset_for("best").cutouts
    recipe = clip_recipe(tiny, prompts=["a cat"])
    recipe["quality"] = "draft"
    del recipe["losses"][0]["cutouts"]
    engine = Engine(load_recipe(recipe), write_files=False)
    loss = engine.losses[0].loss
    assert loss.cutout_counts == [preset_for("draft").cutouts]
    assert [m.name for m in loss.models] == [tiny]
    recipe["losses"][0]["cutouts"] = {tiny: 5}
    assert Engine(load_recipe(recipe), write_files=False).losses[0].loss.cutout_counts == [5]


def test_presets_are_shown_by_plugins_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "show", "clip"]) == 0
    out = capsys.readouterr().out
    for quality, preset in QUALITY_PRESETS.items():
        assert f"{quality}: {' + '.join(preset.models)}, {preset.cutouts} cutouts" in out


def test_options_check_prompts_and_models(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"needs prompts"):
        load_recipe(clip_recipe("ViT-B-32/openai", prompts=[]))
    with pytest.raises(RecipeError, match=r"losses\[0\]\.models.*Did you mean 'ViT-B-32/openai'"):
        load_recipe(clip_recipe("ViT-B-32/opnai", prompts=["a cat"]))
    with pytest.raises(RecipeError, match="cutouts must be between"):
        load_recipe(clip_recipe("ViT-B-32/openai", prompts=["a cat"], cutouts=0))
    with pytest.raises(RecipeError, match="one story"):
        load_recipe(clip_recipe("ViT-B-32/openai", prompts=["a ^ b", "c ^ d"]))
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(clip_recipe("ViT-B-32/openai", prompts=[{"image": "nope.png"}]))
    ClipLoss.Options.model_validate({"prompts": "a cat | a dog:-1", "models": "ViT-B-32/openai"})


def test_missing_weights_stop_a_run_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(clip_recipe("ViT-B-32/openai", prompts=["a cat"])))
    assert main(["run", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pixgen models fetch ViT-B-32/openai" in err and "Traceback" not in err


# -- stories -----------------------------------------------------------------------------


def test_story_weights_follow_the_schedule_with_cross_fade(tiny: str) -> None:
    story = [
        {"at": 0, "prompts": ["a forest"]},
        {"at": "50%", "prompts": ["a city:2", {"text": "neon", "weight": 0.5}]},
    ]
    recipe = clip_recipe(tiny, steps=100, prompts=["oil painting"], story=story, transition=10)
    engine = Engine(load_recipe(recipe), write_files=False)
    loss = engine.losses[0].loss
    w = loss.prompt_weights_at
    assert w(0) == {"oil painting": 1.0, "a forest": 1.0, "a city": 0.0, "neon": 0.0}
    assert w(49)["a forest"] == 1.0 and w(50)["a forest"] == 1.0 and w(50)["a city"] == 0.0
    assert w(55) == pytest.approx(
        {"oil painting": 1.0, "a forest": 0.5, "a city": 1.0, "neon": 0.25}
    )
    assert w(60) == {"oil painting": 1.0, "a forest": 0.0, "a city": 2.0, "neon": 0.5}
    assert w(99) == w(60)
    # Off terms are not computed: the loss reports only what is on at the step.
    engine.ctx.begin_step(0)
    assert set(loss(torch.rand(1, 3, 48, 48), engine.ctx)) == {"oil painting", "a forest"}
    engine.ctx.begin_step(55)
    assert set(loss(torch.rand(1, 3, 48, 48), engine.ctx)) == {
        "oil painting",
        "a forest",
        "a city",
        "neon",
    }


def test_caret_spreads_prompts_evenly_over_the_run() -> None:
    schedule = build_schedule(["a forest ^ a city:2 ^ the sea"], None, 0, 90)
    assert [start for start, _ in schedule.parts] == [0, 30, 60]
    assert schedule.prompt_weights_at(29) == {"a forest": 1.0, "a city": 0.0, "the sea": 0.0}
    assert schedule.prompt_weights_at(30) == {"a forest": 0.0, "a city": 2.0, "the sea": 0.0}
    assert schedule.prompt_weights_at(89) == {"a forest": 0.0, "a city": 0.0, "the sea": 1.0}


def test_a_prompt_in_consecutive_parts_stays_on_through_the_fade() -> None:
    schedule = PromptSchedule(
        [], [(0, [Prompt("sky"), Prompt("a")]), (10, [Prompt("sky"), Prompt("b")])], transition=4
    )
    for step in range(20):
        assert schedule.prompt_weights_at(step)["sky"] == pytest.approx(1.0)
    assert schedule.prompt_weights_at(12) == pytest.approx({"sky": 1.0, "a": 0.5, "b": 0.5})


def test_story_mistakes_are_recipe_errors() -> None:
    with pytest.raises(RecipeError, match=r"story parts 1 and 2 both start at '50%'"):
        load_recipe(
            clip_recipe(
                "ViT-B-32/openai",
                story=[{"at": "50%", "prompts": ["a"]}, {"at": "50%", "prompts": ["b"]}],
            )
        )
    # '^' spreads prompts over the run; inside a timed part it has no meaning.
    with pytest.raises(
        RecipeError, match=r"story\[0\]\.prompts: 'a \^ b': a story part is timed by its at:"
    ):
        load_recipe(clip_recipe("ViT-B-32/openai", story=[{"at": 0, "prompts": ["a ^ b"]}]))


def test_story_parts_the_run_is_too_short_for_are_noticed(tiny: str) -> None:
    story = [
        {"at": 0, "prompts": ["a forest"]},
        {"at": 5, "prompts": ["a city"]},
        {"at": 20, "prompts": ["the sea"]},
    ]
    result = pixgen.run(clip_recipe(tiny, steps=5, story=story), write_files=False)
    assert result.info["notices"] == [
        "clip: story part 2 (at: 5) starts at step 5, after the run's last step (4); "
        "it is never shown",
        "clip: story part 3 (at: 20) starts at step 20, after the run's last step (4); "
        "it is never shown",
    ]
    schedule = build_schedule(["a ^ b ^ c"], None, 0, 2)  # three parts, two steps
    assert schedule.notices == [
        "'^' part 2 and '^' part 3 both start at step 1 in a 2-step run; "
        "the first is hidden by the second"
    ]


def test_a_story_runs_end_to_end(tiny: str) -> None:
    result = pixgen.run(
        clip_recipe(tiny, steps=10, prompts=["a forest ^ a city"], transition=2), write_files=False
    )
    city = result.history["losses"]["clip/a city"]
    assert city[0] is None and city[-1] is not None  # off (not computed), then on
