"""Recipes: validation against core and plugin schemas, overrides, and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixgen.errors import RecipeError
from pixgen.recipe import QUALITY_STEPS, load_recipe
from pixgen.steps import ScheduleFn, resolve_step


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = """\
name: test
size: [64, 48]
steps: 10
generator: {use: pixel, cells: [8, 6]}
losses:
  - use: smoothness
    weight: 0.5
  - {use: smoothness, norm: l2}
outputs:
  - {use: png, every: 5}
"""


def test_valid_recipe_becomes_typed_objects(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, GOOD))
    assert recipe.size == (64, 48) and recipe.steps == 10
    assert recipe.generator.options.cells == (8, 6)
    assert recipe.losses[0].weight == 0.5
    assert recipe.losses[1].options.norm == "l2"
    assert recipe.outputs[0].options.every == 5


def test_sets_override_any_field_with_yaml_values(tmp_path: Path) -> None:
    recipe = load_recipe(
        write(tmp_path, GOOD),
        ["steps=50", "losses.0.weight=2", "outputs=[{use: png, every: 10}]", "size=[32, 32]"],
    )
    assert recipe.steps == 50
    assert recipe.losses[0].weight == 2.0
    assert len(recipe.outputs) == 1 and recipe.outputs[0].options.every == 10
    assert recipe.size == (32, 32)


def test_size_as_one_number_or_width_x_height(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert load_recipe(path, ["size=256"]).size == (256, 256)
    assert load_recipe(path, ["size=640x360"]).size == (640, 360)
    assert load_recipe(path, ["size='640 X 360'"]).size == (640, 360)
    with pytest.raises(RecipeError, match="one number or 'WIDTHxHEIGHT'"):
        load_recipe(path, ["size=big"])
    with pytest.raises(RecipeError, match="between 8 and 8192"):
        load_recipe(path, ["size=4"])


def test_a_problem_inside_an_overridden_value_is_located_at_the_override(
    tmp_path: Path,
) -> None:
    # size[1] exists in the file (line 2), but --set replaced the whole size
    with pytest.raises(RecipeError, match=r"--set, size\[1\]: required but missing"):
        load_recipe(write(tmp_path, GOOD), ["size=[64]"])


def test_a_missing_file_given_with_set_says_where_relative_paths_start(
    tmp_path: Path,
) -> None:
    (tmp_path / "recipes").mkdir()
    path = write(tmp_path / "recipes", GOOD)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["losses=[{use: target_image, image: mine.png}]"])
    text = str(err.value)
    assert f"file not found: {tmp_path / 'recipes' / 'mine.png'}" in text
    assert "relative to the recipe's folder; give an absolute path" in text


def test_a_plugin_with_its_defaults_can_be_named_alone(tmp_path: Path) -> None:
    text = "size: 32\nsteps: 3\ngenerator: pixel\nlosses: [smoothness]\noutputs: [png]\n"
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.generator.use == "pixel" and recipe.generator.options.cells is None  # default
    assert [entry.use for entry in recipe.losses] == ["smoothness"]
    assert recipe.losses[0].weight == 1.0 and recipe.outputs[0].use == "png"
    with pytest.raises(RecipeError, match="unknown loss plugin 'smoothnes'; did you mean"):
        load_recipe(write(tmp_path, text.replace("[smoothness]", "[smoothnes]")))
    # neither form: one message per entry, not one per form tried
    for bad in ("generator: 7", "generator:"):
        with pytest.raises(RecipeError) as err:
            load_recipe(write(tmp_path, text.replace("generator: pixel", bad)))
        assert "(1 problem)" in str(err.value) and "dict[" not in str(err.value)
        assert "generator: expected NAME or a mapping such as {use: NAME, ...}" in str(err.value)


@pytest.mark.parametrize(
    "override",
    [
        "outputs=[{use: png, every: 0}]",
        "outputs=[{use: video, every: '0%'}]",
        "animation={every: 0}",
        "early_stop={patience: 0}",
    ],
)
def test_an_interval_of_zero_steps_is_refused(tmp_path: Path, override: str) -> None:
    with pytest.raises(RecipeError, match="an interval must be at least 1 step"):
        load_recipe(write(tmp_path, GOOD), [override])


def test_animation_zoom_must_be_above_zero(tmp_path: Path) -> None:
    for zoom in ("0", "{0: 1.0, '50%': -0.5}"):
        with pytest.raises(RecipeError, match="a zoom must be above 0"):
            load_recipe(write(tmp_path, GOOD), [f"animation={{every: 5, zoom: {zoom}}}"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.betas=[2, 0.5]", "less than 1"),
        (
            "outputs=[{use: png, folder: ../elsewhere}]",
            "must be a plain name inside the run folder",
        ),
    ],
)
def test_values_torch_or_the_run_folder_would_refuse_are_refused_early(
    tmp_path: Path, override: str, message: str
) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, GOOD), [override])


def test_compile_on_and_off_read_as_written_in_yaml(tmp_path: Path) -> None:
    # YAML 1.1 reads a bare on/off as true/false; the recipe means the words.
    recipe = load_recipe(write(tmp_path, GOOD + "speed: {compile: on}\n"))
    assert recipe.speed.compile == "on"
    recipe = load_recipe(write(tmp_path, GOOD), ["speed.compile=off"])
    assert recipe.speed.compile == "off"
    assert "compile: 'off'" in recipe.to_yaml()  # and written back so it reads the same
    with pytest.raises(RecipeError, match="'auto', 'off' or 'on'"):
        load_recipe(write(tmp_path, GOOD), ["speed.compile=fast"])


def test_bad_override_index_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="the list has 2 entries"):
        load_recipe(write(tmp_path, GOOD), ["losses.5.weight=2"])
    with pytest.raises(RecipeError, match="PATH=VALUE"):
        load_recipe(write(tmp_path, GOOD), ["steps"])


def test_error_names_file_line_field_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("    weight: 0.5", "    wieght: 0.5"))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 7" in message
    assert "losses[0].wieght" in message
    assert "did you mean 'weight'" in message


def test_unknown_plugin_gets_did_you_mean(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, GOOD.replace("use: pixel", "use: pixle")))
    assert "unknown generator plugin 'pixle'; did you mean 'pixel'?" in str(info.value)
    assert "line 4" in str(info.value)


def test_wrong_type_says_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, GOOD.replace("steps: 10", "steps: many")))
    assert "line 3, steps:" in str(info.value)
    assert "integer" in str(info.value)


def test_override_errors_point_at_set(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"--set, steps"):
        load_recipe(write(tmp_path, GOOD), ["steps=-3"])


def test_missing_input_file_is_caught_before_the_run(tmp_path: Path) -> None:
    text = GOOD.replace(
        "  - {use: smoothness, norm: l2}", "  - {use: target_image, image: nope.png}"
    )
    with pytest.raises(RecipeError, match=r"losses\[1\]\.image: file not found"):
        load_recipe(write(tmp_path, text))


def test_relative_files_resolve_against_the_recipe_folder(tmp_path: Path, target_png: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "t.png").write_bytes(target_png.read_bytes())
    text = GOOD.replace("  - {use: smoothness, norm: l2}", "  - {use: target_image, image: t.png}")
    recipe = load_recipe(write(sub, text))
    assert recipe.losses[1].options.image == sub / "t.png"


def test_quality_sets_steps_unless_given(tmp_path: Path) -> None:
    text = GOOD.replace("steps: 10\n", "quality: draft\n")
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.steps == QUALITY_STEPS["draft"]
    recipe = load_recipe(write(tmp_path, text), ["steps=7"])
    assert recipe.steps == 7


def test_recipe_from_string_and_dict(basic_recipe: dict) -> None:
    recipe = load_recipe(basic_recipe)
    assert recipe.name == "basic"
    recipe = load_recipe(GOOD)
    assert recipe.name == "test"


def test_resolved_recipe_round_trips(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, GOOD))
    again = load_recipe(recipe.to_yaml())
    assert again.to_dict() == recipe.to_dict()


def test_step_values_accept_counts_and_shares() -> None:
    assert resolve_step(150, 300) == 150
    assert resolve_step("75%", 300) == 225
    fn = ScheduleFn({0: 1.0, "50%": 0.0}, 100)
    assert fn(0) == 1.0 and fn(25) == pytest.approx(0.5) and fn(50) == 0.0 and fn(99) == 0.0


def test_weight_schedule_in_recipe(tmp_path: Path) -> None:
    text = GOOD.replace("weight: 0.5", "weight: {0: 1.0, '50%': 0.2}")
    recipe = load_recipe(write(tmp_path, text))
    fn = ScheduleFn(recipe.losses[0].weight, recipe.steps)
    assert fn(0) == 1.0 and fn(5) == pytest.approx(0.2)


def test_nested_errors_follow_the_recipes_own_keys(tmp_path: Path) -> None:
    text = GOOD + "optimizer: {name: adam, betaz: [0.9, 0.99]}\n"
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    assert "optimizer.betaz: unknown key; did you mean 'betas'?" in str(info.value)
