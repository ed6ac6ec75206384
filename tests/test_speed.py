"""The engine's speed policy on the CPU: when it compiles, that compiling changes nothing a
run computes, and that a module which fails to compile still runs (eagerly, with a notice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from clip_fixtures import make_tiny_clip_checkpoint
from vqgan_fixtures import tiny_vqgan_clip_recipe, write_tiny_vqgan

from pixgen.compiling import CompiledOrEager
from pixgen.context import AUTO_COMPILE_MIN_STEPS, RunContext
from pixgen.engine import Engine
from pixgen.recipe import load_recipe


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[Path, Path], str]:
    folder = tmp_path_factory.mktemp("models")
    return write_tiny_vqgan(folder / "vq"), make_tiny_clip_checkpoint(folder / "clip")


def vqgan_clip_recipe(
    models: tuple[tuple[Path, Path], str], compile: str, **speed: Any
) -> dict[str, Any]:
    files, clip = models
    recipe = tiny_vqgan_clip_recipe(
        files,
        clip,
        speed={"compile": compile, **speed},  # the default mode, reduce-overhead
        precision="fp32",
        # A large step, so the latents change codes within five steps.
        optimizer={"name": "adam", "lr": 1.0},
    )
    recipe["generator"]["init"] = "noise"
    recipe["losses"][0]["augment"] = []
    return recipe


def run_engine(recipe: dict[str, Any]) -> tuple[Engine, list[float], list[str]]:
    engine = Engine(load_recipe(recipe), write_files=False, quiet=True)
    result = engine.run()
    assert result.status == "completed"
    return engine, result.history["total"], result.info["notices"]


def context(steps: int, compile: str, device: str) -> RunContext:
    recipe = load_recipe(
        {
            "name": "policy",
            "steps": steps,
            "generator": {"use": "image"},
            "losses": [{"use": "smoothness"}],
            "speed": {"compile": compile},
        }
    )
    return RunContext(
        recipe=recipe,
        device=torch.device(device),  # only read, so "cuda" needs no GPU here
        precision="fp32",
        seed=0,
        run_dir=None,
        recipe_dir=Path("."),
    )


@pytest.mark.parametrize(
    ("steps", "compile", "device", "compiles"),
    [
        (AUTO_COMPILE_MIN_STEPS, "auto", "cuda", True),
        (AUTO_COMPILE_MIN_STEPS - 1, "auto", "cuda", False),
        (100_000, "auto", "cpu", False),
        (10, "on", "cpu", True),
        (10, "on", "cuda", True),
        (100_000, "off", "cuda", False),
    ],
)
def test_compile_auto_compiles_long_cuda_runs_only(
    steps: int, compile: str, device: str, compiles: bool
) -> None:
    ctx = context(steps, compile, device)
    assert ctx.compile_enabled is compiles
    module = torch.nn.Identity()
    assert isinstance(ctx.compile_module(module, "identity"), CompiledOrEager) is compiles


def test_a_short_auto_run_on_cuda_says_why_it_does_not_compile() -> None:
    ctx = context(300, "auto", "cuda")
    for name in ("vqgan decoder", "CLIP ViT-B-32"):
        ctx.compile_module(torch.nn.Identity(), name)
    assert ctx.notices == [
        "not compiling for a run of 300 steps: compilation takes about a minute and pays "
        f"back from about {AUTO_COMPILE_MIN_STEPS} steps (speed: {{compile: on}} compiles anyway)"
    ]
    quiet = context(300, "off", "cuda")  # compiling was turned off: nothing to explain
    quiet.compile_module(torch.nn.Identity(), "x")
    assert quiet.notices == []


@pytest.mark.parametrize("conv_layout", ["auto", "channels_last"])
def test_a_compiled_run_paints_what_an_eager_run_paints(tiny_models: Any, conv_layout: str) -> None:
    from torch._dynamo.utils import counters

    _, eager, _ = run_engine(vqgan_clip_recipe(tiny_models, "off"))
    graphs_before = counters["stats"]["unique_graphs"]
    recipe = vqgan_clip_recipe(tiny_models, "on", conv_layout=conv_layout)
    engine, compiled, notices = run_engine(recipe)
    # Both heavy modules were captured as graphs (not skipped by dynamo) and stayed compiled.
    assert counters["stats"]["unique_graphs"] - graphs_before >= 2
    decoder = engine.generator._decode
    encoder = engine.losses[0].loss.image_encoders[0]
    for module in (decoder, encoder):
        assert isinstance(module, CompiledOrEager) and module.compiled is not None
    assert notices == []
    assert len(set(eager)) > 1  # the picture changed, so the comparison means something
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-6)


def test_a_module_that_fails_to_compile_runs_eagerly_with_one_notice(
    tiny_models: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, eager, _ = run_engine(vqgan_clip_recipe(tiny_models, "off"))

    def broken_compile(module: Any, **options: Any) -> Any:
        def compiled(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("backend exploded\nsecond line of a long trace")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    _, history, notices = run_engine(vqgan_clip_recipe(tiny_models, "on"))
    assert history == pytest.approx(eager, rel=1e-6)
    assert len(notices) == 2
    assert notices[0] == (
        "vqgan decoder: torch.compile failed (RuntimeError: backend exploded); "
        "running it uncompiled"
    )
    assert notices[1].startswith("CLIP ") and notices[1].endswith(
        "torch.compile failed (RuntimeError: backend exploded); running it uncompiled"
    )


class _FailingBackward(torch.autograd.Function):
    """Identity forward; a backward that fails, as a lazily compiled backward can."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("backward compilation failed\nsecond line")


def test_a_step_whose_compiled_backward_fails_runs_again_uncompiled(
    tiny_models: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, eager, _ = run_engine(vqgan_clip_recipe(tiny_models, "off"))
    calls: list[str] = []

    def compile_with_broken_backward(module: Any, **options: Any) -> Any:
        def compiled(*args: Any, **kwargs: Any) -> Any:
            calls.append("compiled")
            return _FailingBackward.apply(module(*args, **kwargs))

        return compiled

    monkeypatch.setattr(torch, "compile", compile_with_broken_backward)
    engine, history, notices = run_engine(vqgan_clip_recipe(tiny_models, "on"))
    assert history == pytest.approx(eager, rel=1e-6)  # step 0 redone, nothing counted twice
    assert notices == [
        "compiled step 0 failed (RuntimeError: backward compilation failed); running uncompiled"
    ]
    assert calls == ["compiled", "compiled"]  # decoder and CLIP, once, then never again
    assert engine.generator._decode.compiled is None


def test_a_plugin_error_is_reported_as_itself_when_compiled(
    tiny_models: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixgen.errors import PluginRunError

    recipe = vqgan_clip_recipe(tiny_models, "on")
    engine = Engine(load_recipe(recipe), write_files=False, quiet=True)

    def broken(self: Any, image: torch.Tensor, ctx: Any) -> torch.Tensor:
        raise ValueError("my loss is broken")

    monkeypatch.setattr(type(engine.losses[0].loss), "__call__", broken)
    with pytest.raises(PluginRunError, match=r"plugin 'clip'.*my loss is broken"):
        engine.run()
    assert engine.ctx.notices == []  # not taken for a compilation failure


@pytest.mark.parametrize("compile", ["on", "off"])
def test_the_progress_bar_shows_the_compiling_warm_up_as_such(
    tiny_models: Any, compile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixgen.progress import ProgressDisplay

    phases: list[str] = []
    monkeypatch.setattr(ProgressDisplay, "set_phase", lambda self, text: phases.append(text))
    recipe = vqgan_clip_recipe(tiny_models, compile)
    engine = Engine(load_recipe(recipe), write_files=False, quiet=False)  # the bar shown
    assert engine.run().status == "completed"
    assert phases == (["warming up (compiling)", "painting"] if compile == "on" else [])
