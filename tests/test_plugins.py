"""The plugin system: entry points, local files, duplicates, hooks and the plugins CLI."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import pixgen
from pixgen import hookspecs
from pixgen.cli import main
from pixgen.errors import PluginLoadError
from pixgen.plugins import load_plugins

BUILTINS = {
    "pixel": "generator",
    "image": "generator",
    "smoothness": "loss",
    "target_image": "loss",
    "png": "output",
}

CUSTOM_LOSS = '''
import torch
import pixgen
from pixgen import PluginOptions
from pydantic import Field


class Brightness(pixgen.Loss):
    """Pushes the mean brightness towards a target level."""

    name = "brightness"

    class Options(PluginOptions):
        level: float = Field(0.9, ge=0, le=1, description="target mean brightness")

    def __call__(self, image, ctx):
        return (image.mean() - self.options.level) ** 2


@pixgen.hookimpl
def register_losses(register):
    register(Brightness)
'''


def test_builtins_come_through_the_entry_point_group() -> None:
    plugins = load_plugins()
    for name, kind in BUILTINS.items():
        info = plugins.registry.get(name, kind)
        assert info.source.startswith("pixgen "), info.source
        assert info.file and "plugins" in info.file


def test_plugins_list_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name, kind in BUILTINS.items():
        assert rows[name]["kind"] == kind
        assert rows[name]["source"] == f"pixgen {pixgen.__version__}"
        assert rows[name]["summary"] and "``" not in rows[name]["summary"]  # plain text
    assert main(["plugins", "list"]) == 0
    assert "target_image" in capsys.readouterr().out


def test_plugins_show_prints_options_from_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "show", "pixel"]) == 0
    out = capsys.readouterr().out
    assert "palette" in out and "cells" in out and "hex colours" in out
    assert main(["plugins", "show", "pixle"]) == 2
    assert "did you mean 'pixel'" in capsys.readouterr().err


def test_plugins_show_and_list_a_local_plugin_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plugin author sees their file's options before writing the recipe."""
    (tmp_path / "my_loss.py").write_text(CUSTOM_LOSS)
    assert main(["plugins", "show", "brightness"]) == 2
    assert "add --plugin FILE" in capsys.readouterr().err
    assert main(["plugins", "show", "brightness", "--plugin", str(tmp_path / "my_loss.py")]) == 0
    out = capsys.readouterr().out
    assert "brightness (loss, from file" in out and "my_loss.py" in out
    assert "level: number (≥ 0, ≤ 1) = 0.9  -- target mean brightness" in out
    assert main(["plugins", "list", "--json", "-p", str(tmp_path / "my_loss.py")]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["brightness"]["kind"] == "loss" and "pixel" in rows
    assert main(["plugins", "list", "-p", str(tmp_path / "missing.py")]) == 2
    assert "plugin file not found" in capsys.readouterr().err


def test_local_plugin_file_takes_effect_in_a_run(tmp_path: Path, basic_recipe: dict) -> None:
    (tmp_path / "my_loss.py").write_text(CUSTOM_LOSS)
    recipe = dict(basic_recipe, plugins=["my_loss.py"], steps=30)
    recipe["losses"] = [{"use": "brightness", "level": 0.9}]
    path = tmp_path / "r.yaml"
    import yaml

    path.write_text(yaml.safe_dump(recipe))
    result = pixgen.run(path)
    history = result.history["losses"]["brightness"]
    assert history[-1] < history[0] * 0.5
    assert np.asarray(result.image).mean() / 255 > 0.7
    # the run's recipe.yaml re-runs from its own folder: the plugin file's path is absolute
    assert result.run_dir is not None
    rerun = pixgen.run(result.run_dir / "recipe.yaml", steps=2)
    assert rerun.recipe.plugins == [(tmp_path / "my_loss.py").resolve()]
    assert "brightness" in rerun.history["losses"]


def test_third_party_package_via_entry_point(
    tmp_path: Path, basic_recipe: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 'pip-installed' package: a module plus dist-info with a pixgen entry point."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "pixgen_brightness.py").write_text(CUSTOM_LOSS)
    dist = site / "pixgen_brightness-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pixgen-brightness\nVersion: 1.2.3\n"
    )
    (dist / "entry_points.txt").write_text("[pixgen]\nbrightness = pixgen_brightness\n")
    monkeypatch.syspath_prepend(str(site))
    plugins = load_plugins()
    info = plugins.registry.get("brightness", "loss")
    assert info.source == "pixgen-brightness 1.2.3"
    recipe = dict(basic_recipe, losses=[{"use": "brightness"}])
    result = pixgen.run(recipe)
    assert result.history["losses"]["brightness"][-1] < result.history["losses"]["brightness"][0]
    sys.modules.pop("pixgen_brightness", None)


def test_duplicate_names_raise_naming_both_sources(tmp_path: Path) -> None:
    (tmp_path / "dup.py").write_text(
        textwrap.dedent('''
        import pixgen

        class Pixel(pixgen.Generator):
            """Another pixel."""
            name = "pixel"

        @pixgen.hookimpl
        def register_generators(register):
            register(Pixel)
    ''')
    )
    with pytest.raises(PluginLoadError) as info:
        load_plugins(files=[tmp_path / "dup.py"])
    message = str(info.value)
    assert "two plugins are named 'pixel'" in message
    assert "pixgen 0.1.0" in message and "dup.py" in message


def test_misspelt_hook_is_reported(tmp_path: Path) -> None:
    (tmp_path / "typo.py").write_text(
        "import pixgen\n@pixgen.hookimpl\ndef register_loss(register):\n    pass\n"
    )
    with pytest.raises(PluginLoadError, match="register_loss"):
        load_plugins(files=[tmp_path / "typo.py"])


def test_registering_a_non_plugin_is_reported(tmp_path: Path) -> None:
    (tmp_path / "odd.py").write_text(
        "import pixgen\n@pixgen.hookimpl\ndef register_losses(register):\n    register(int)\n"
    )
    with pytest.raises(PluginLoadError, match=r"not a subclass of pixgen\.Loss"):
        load_plugins(files=[tmp_path / "odd.py"])


def test_load_only_and_block_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXGEN_LOAD_PLUGINS", "pixel,smoothness")
    assert set(load_plugins().registry.names()) == {"pixel", "smoothness"}
    monkeypatch.delenv("PIXGEN_LOAD_PLUGINS")
    monkeypatch.setenv("PIXGEN_BLOCK_PLUGINS", "png")
    assert "png" not in load_plugins().registry.names()


def _run_loss_plugin(
    tmp_path: Path,
    basic_recipe: dict,
    plugin_file: str,
    loss: str,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str, dict]:
    """``pixgen run`` of the basic recipe with only the loss ``loss`` from ``plugin_file``."""
    recipe = dict(basic_recipe, plugins=[plugin_file], losses=[{"use": loss}])
    return _run_cli(tmp_path, recipe, capsys)


def _loss_plugin_file(path: Path, returns: dict[str, str]) -> None:
    """A plugin file registering one loss per name, whose ``__call__(image, ctx)`` returns
    the given Python expression."""
    classes = "".join(
        f'''
class Loss{i}(pixgen.Loss):
    """The test loss {name}."""
    name = {name!r}

    def __call__(self, image, ctx):
        return {expression}
'''
        for i, (name, expression) in enumerate(returns.items())
    )
    registers = "".join(f"    register(Loss{i})\n" for i in range(len(returns)))
    path.write_text(
        f"import pixgen\n{classes}\n@pixgen.hookimpl\ndef register_losses(register):\n{registers}"
    )


def _run_cli(
    tmp_path: Path, recipe: dict, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, dict]:
    """``pixgen run`` of ``recipe`` into ``tmp_path/run``: the exit status, stderr and the
    run's run.json."""
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code = main(["run", str(path), "-q", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    return code, err, json.loads((tmp_path / "run" / "run.json").read_text())


def test_plugin_raising_during_run_is_named(
    tmp_path: Path, basic_recipe: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.py").write_text(
        textwrap.dedent('''
        import pixgen

        class Explodes(pixgen.Loss):
            """Fails on step 2."""
            name = "explodes"

            def __call__(self, image, ctx):
                if ctx.step == 2:
                    raise ValueError("kaboom")
                return image.mean()

        @pixgen.hookimpl
        def register_losses(register):
            register(Explodes)
    ''')
    )
    code, err, run_info = _run_loss_plugin(tmp_path, basic_recipe, "bad.py", "explodes", capsys)
    assert code == 1
    assert "loss plugin 'explodes'" in err and "bad.py" in err and "kaboom" in err
    assert "step 2" in err and "Traceback" not in err
    assert run_info["status"] == "failed" and "kaboom" in run_info["error"]
    assert (tmp_path / "run" / "final.png").exists()


def test_generator_rendering_the_wrong_shape_is_named(
    tmp_path: Path, basic_recipe: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """The final image is rendered again after a failure: the shape error must survive it
    instead of ending as an internal error from the PNG writer."""
    (tmp_path / "two_channels.py").write_text(
        textwrap.dedent('''
        import pixgen
        import torch

        class TwoChannels(pixgen.Generator):
            """Forgets the blue channel."""
            name = "two_channels"

            def __init__(self, options, ctx):
                super().__init__(options, ctx)
                self.pixels = torch.nn.Parameter(torch.rand(1, 2, ctx.height, ctx.width))

            def forward(self):
                return self.pixels

        @pixgen.hookimpl
        def register_generators(register):
            register(TwoChannels)
    ''')
    )
    recipe = dict(basic_recipe, plugins=["two_channels.py"], generator={"use": "two_channels"})
    code, err, run_info = _run_cli(tmp_path, recipe, capsys)
    assert code == 1
    assert "generator 'two_channels'" in err and "two_channels.py" in err
    assert "rendered shape (1, 2, 48, 64), expected (1, 3, 48, 64)" in err
    assert "internal error" not in err
    assert run_info["status"] == "failed" and "rendered shape" in run_info["error"]
    assert not (tmp_path / "run" / "final.png").exists()


def test_a_loss_becoming_nan_stops_the_run_and_names_the_term(
    tmp_path: Path, basic_recipe: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every step after a NaN paints nothing: stop, say where, keep the stills."""
    _loss_plugin_file(
        tmp_path / "unstable.py",
        {"unstable": 'image.mean() * (float("nan") if ctx.step >= 3 else 1.0)'},
    )
    recipe = dict(
        basic_recipe,
        plugins=["unstable.py"],
        losses=[
            {"use": "unstable", "weight": 0.1},
            # scheduled off from step 2: its column is empty, not to blame
            {"use": "smoothness", "weight": {0: 1.0, 1: 1.0, 2: 0.0}},
        ],
        outputs=[{"use": "png", "every": 1}],
    )
    code, err, run_info = _run_cli(tmp_path, recipe, capsys)
    assert code == 1 and "Traceback" not in err
    assert "the loss became NaN at step 3 ('unstable' was NaN)" in err
    assert "lower optimizer lr" in err
    assert run_info["status"] == "failed" and "step 3" in run_info["error"]
    assert None not in run_info["history"]["total"][:3]  # the steps before were finite
    # the stills painted before the NaN are kept; a NaN final image is not written
    assert (tmp_path / "run" / "steps" / "000002.png").exists()
    assert not (tmp_path / "run" / "final.png").exists()


def test_a_loss_returning_a_number_or_nothing_is_named(
    tmp_path: Path, basic_recipe: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    _loss_plugin_file(
        tmp_path / "untensored.py",
        {"number": "float(image.detach().mean())", "nothing": "None"},
    )
    for loss, kind in (("number", "float"), ("nothing", "NoneType")):
        (tmp_path / loss).mkdir()
        plugin_file = str(tmp_path / "untensored.py")
        code, err, run_info = _run_loss_plugin(
            tmp_path / loss, basic_recipe, plugin_file, loss, capsys
        )
        assert code == 1 and "internal error" not in err
        assert f"loss plugin {loss!r}" in err and "untensored.py" in err
        assert f"returned a {kind} as its value; a loss returns a scalar tensor" in err
        assert run_info["status"] == "failed"


def test_a_loss_without_a_gradient_gets_a_notice_and_no_torch_warning(
    basic_recipe: dict, recwarn: pytest.WarningsRecorder
) -> None:
    class Detached(pixgen.Loss):
        """Measures the image but cannot change it."""

        name = "detached"

        def __call__(self, image, ctx):  # type: ignore[no-untyped-def]
            return image.detach().mean()

    class Plugin:
        @pixgen.hookimpl
        def register_losses(self, register):  # type: ignore[no-untyped-def]
            register(Detached)

    recipe = dict(basic_recipe, steps=3, losses=[{"use": "detached"}])
    result = pixgen.run(recipe, plugins=[Plugin()])
    assert result.status == "completed"
    assert any(
        "loss 'detached'" in n and "cannot steer the picture" in n for n in result.info["notices"]
    )
    # nothing to learn: the optimiser is not stepped, and torch's lr-schedule warning
    # about that is not the user's business
    assert not [w for w in recwarn if "lr_scheduler" in str(w.message)]


def test_an_output_failing_to_finish_fails_the_run(
    tmp_path: Path, basic_recipe: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its file is lost: exit 0 and "completed" would hide that."""
    (tmp_path / "unfinished.py").write_text(
        textwrap.dedent('''
        import pixgen

        class Unfinished(pixgen.Output):
            """Cannot close its file."""
            name = "unfinished"

            def on_finish(self, ctx, image):
                raise OSError("cannot close the file")

            def summary(self):
                return {"when": object()}  # not JSON: run.json must still be written

        @pixgen.hookimpl
        def register_outputs(register):
            register(Unfinished)
    ''')
    )
    recipe = dict(basic_recipe, plugins=["unfinished.py"], outputs=[{"use": "unfinished"}])
    code, err, run_info = _run_cli(tmp_path, recipe, capsys)
    assert code == 1 and "internal error" not in err
    assert "output plugin 'unfinished'" in err and "cannot close the file" in err
    assert run_info["status"] == "failed" and "cannot close the file" in run_info["error"]
    assert (tmp_path / "run" / "final.png").exists()


def test_a_hook_with_arguments_not_in_its_spec_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "badhook.py").write_text(
        "import pixgen\n\n@pixgen.hookimpl\ndef register_losses(register, extra):\n    pass\n"
    )
    assert main(["plugins", "list", "-p", str(tmp_path / "badhook.py")]) == 2
    err = capsys.readouterr().err
    assert "badhook.py is invalid" in err and "extra" in err and "internal error" not in err


def test_out_of_gpu_memory_in_the_backward_pass_is_one_clear_message(
    tmp_path: Path, basic_recipe: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """The backward pass holds the most memory, and runs outside any plugin's code."""
    (tmp_path / "hungry.py").write_text(
        textwrap.dedent('''
        import pixgen
        import torch

        class OutOfMemoryBackward(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x.clone()

            @staticmethod
            def backward(ctx, grad):
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")

        class Hungry(pixgen.Loss):
            """Its backward runs out of memory on step 1."""
            name = "hungry"

            def __call__(self, image, ctx):
                if ctx.step == 1:
                    image = OutOfMemoryBackward.apply(image)
                return image.mean()

        @pixgen.hookimpl
        def register_losses(register):
            register(Hungry)
    ''')
    )
    code, err, run_info = _run_loss_plugin(tmp_path, basic_recipe, "hungry.py", "hungry", capsys)
    assert code == 2, err
    assert err.startswith("error: out of GPU memory in the backward pass of step 1; lower the size")
    assert "internal error" not in err and "Traceback" not in err
    assert run_info["status"] == "failed" and run_info["steps_done"] == 1
    assert (tmp_path / "run" / "final.png").exists()  # the finished step's picture kept


# -- every hook has a test (datasette-style): test_hook_<name> -------------------------


class _Observer:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    @pixgen.hookimpl
    def run_started(self, ctx):  # type: ignore[no-untyped-def]
        self.events.append(("started", ctx.run_dir))

    @pixgen.hookimpl
    def run_step(self, ctx, step, losses):  # type: ignore[no-untyped-def]
        self.events.append(("step", step, float(losses["total"])))

    @pixgen.hookimpl
    def run_finished(self, ctx, result):  # type: ignore[no-untyped-def]
        self.events.append(("finished", result.status))


def test_hook_run_started(basic_recipe: dict) -> None:
    observer = _Observer()
    result = pixgen.run(basic_recipe, plugins=[observer])
    assert observer.events[0] == ("started", result.run_dir)


def test_hook_run_step(basic_recipe: dict) -> None:
    observer = _Observer()
    result = pixgen.run(basic_recipe, plugins=[observer])
    steps = [e for e in observer.events if e[0] == "step"]
    assert [e[1] for e in steps] == list(range(basic_recipe["steps"]))
    assert steps[-1][2] == pytest.approx(result.history["total"][-1])


def test_hook_run_finished(basic_recipe: dict) -> None:
    observer = _Observer()
    pixgen.run(basic_recipe, plugins=[observer])
    assert observer.events[-1] == ("finished", "completed")


@pytest.mark.parametrize(
    ("hook", "arguments", "status"),
    [
        ("run_started", "ctx", "failed"),
        ("run_step", "ctx, step, losses", "failed"),
        ("run_finished", "ctx, result", "completed"),
    ],
)
def test_an_observer_that_raises_is_named(
    hook: str,
    arguments: str,
    status: str,
    tmp_path: Path,
    basic_recipe: dict,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plugin = tmp_path / "watcher.py"
    plugin.write_text(
        f"import pixgen\n\n@pixgen.hookimpl\ndef {hook}({arguments}):\n"
        "    raise RuntimeError('the dashboard is down')\n"
    )
    code, err, run_info = _run_cli(tmp_path, {**basic_recipe, "plugins": [str(plugin)]}, capsys)
    assert code == 1
    assert err.startswith(
        f"error: plugin file {plugin} failed in {hook}: RuntimeError: the dashboard is down"
    ), err
    assert run_info["status"] == status
    if hook == "run_finished":  # the painting itself is whole; the message says so
        assert "(the run itself ended: completed; see run.json)" in err
        assert (tmp_path / "run" / "final.png").is_file()


def test_hook_register_generators(basic_recipe: dict) -> None:
    class Flat(pixgen.Generator):
        """One flat colour."""

        name = "flat"

        def __init__(self, options, ctx):  # type: ignore[no-untyped-def]
            super().__init__(options, ctx)
            self.colour = torch.nn.Parameter(torch.zeros(1, 3, 1, 1))

        def forward(self):  # type: ignore[no-untyped-def]
            return torch.sigmoid(self.colour).expand(1, 3, self.ctx.height, self.ctx.width)

    class Plugin:
        @pixgen.hookimpl
        def register_generators(self, register):  # type: ignore[no-untyped-def]
            register(Flat)

    result = pixgen.run(dict(basic_recipe, generator={"use": "flat"}), plugins=[Plugin()])
    assert result.image.size == (64, 48)
    assert len(np.unique(np.asarray(result.image).reshape(-1, 3), axis=0)) == 1


def test_hook_register_losses(basic_recipe: dict) -> None:
    class Dark(pixgen.Loss):
        """Mean brightness."""

        name = "dark"

        def __call__(self, image, ctx):  # type: ignore[no-untyped-def]
            return {"mean": image.mean(), "max": image.amax()}

    class Plugin:
        @pixgen.hookimpl
        def register_losses(self, register):  # type: ignore[no-untyped-def]
            register(Dark)

    result = pixgen.run(dict(basic_recipe, losses=[{"use": "dark"}]), plugins=[Plugin()])
    assert set(result.history["losses"]) == {"dark", "dark/mean", "dark/max"}
    assert result.history["losses"]["dark/mean"][-1] < result.history["losses"]["dark/mean"][0]


def test_hook_register_outputs(basic_recipe: dict) -> None:
    seen: list[int] = []

    class Recorder(pixgen.Output):
        """Remembers steps."""

        name = "recorder"

        def wants(self, step: int) -> bool:
            return step % 5 == 0

        def on_step(self, ctx, step, image):  # type: ignore[no-untyped-def]
            seen.append(step)

        def summary(self):  # type: ignore[no-untyped-def]
            return {"seen": len(seen)}

    class Plugin:
        @pixgen.hookimpl
        def register_outputs(self, register):  # type: ignore[no-untyped-def]
            register(Recorder)

    result = pixgen.run(dict(basic_recipe, outputs=[{"use": "recorder"}]), plugins=[Plugin()])
    assert seen == [0, 5, 10, 15]
    assert result.info["outputs"]["recorder"] == {"seen": 4}


def test_hook_register_commands(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from pixgen.cli import app, register_plugin_commands

    class Plugin:
        @pixgen.hookimpl
        def register_commands(self, cli):  # type: ignore[no-untyped-def]
            @cli.command("hello-test")
            def hello() -> None:
                typer.echo("hello from a plugin")

    register_plugin_commands(extra=[Plugin()])
    try:
        assert main(["hello-test"]) == 0
        assert "hello from a plugin" in capsys.readouterr().out
    finally:
        app.registered_commands[:] = [c for c in app.registered_commands if c.name != "hello-test"]


def test_every_hook_has_a_test() -> None:
    names = {n for n in dir(hookspecs) if n.startswith(("register_", "run_"))}
    tested = {n.removeprefix("test_hook_") for n in globals() if n.startswith("test_hook_")}
    assert names <= tested, names - tested
