"""Malformed recipes through the CLI: one clear message, exit 2, no traceback, no run folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pixgen.cli import main

BASE = """\
name: fuzz
size: [32, 32]
steps: 3
device: cpu
generator: {use: pixel, cells: [8, 8]}
losses:
  - {use: smoothness}
"""

BOMB = """\
a: &a ["x","x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""

MALFORMED: dict[str, str | bytes] = {
    "empty file": "",
    "only a comment": "# nothing here\n",
    "not yaml": "name: [unclosed\nsteps: 3\n",
    "tab indentation": "name: x\n\tsteps: 3\n",
    "a list, not a mapping": "- a\n- b\n",
    "a scalar": "just text\n",
    "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "latin-1 bytes": "name: caf\xe9\n".encode("latin-1"),
    "yaml bomb": BOMB,
    "deep nesting": "a: " + "[" * 2000 + "]" * 2000 + "\n",
    "recursive alias": "a: &a [*a]\n",
    "duplicate document": BASE + "---\n" + BASE,
    "unknown top key": BASE + "stepz: 4\n",
    "unknown top key 2": BASE + "colour: red\n",
    "steps string": BASE.replace("steps: 3", "steps: many"),
    "steps negative": BASE.replace("steps: 3", "steps: -5"),
    "steps zero": BASE.replace("steps: 3", "steps: 0"),
    "steps float": BASE.replace("steps: 3", "steps: 2.5"),
    "steps huge": BASE.replace("steps: 3", "steps: 99999999999"),
    "steps null bool": BASE.replace("steps: 3", "steps: [1]"),
    "size negative": BASE.replace("size: [32, 32]", "size: [-32, 32]"),
    "size zero": BASE.replace("size: [32, 32]", "size: [0, 0]"),
    "size a word": BASE.replace("size: [32, 32]", "size: large"),
    "generator empty": BASE.replace("generator: {use: pixel, cells: [8, 8]}", "generator:"),
    "loss a number": BASE.replace("  - {use: smoothness}", "  - 3"),
    "size three numbers": BASE.replace("size: [32, 32]", "size: [32, 32, 3]"),
    "size strings": BASE.replace("size: [32, 32]", "size: [wide, tall]"),
    "size enormous": BASE.replace("size: [32, 32]", "size: [100000, 100000]"),
    "seed negative": BASE + "seed: -1\n",
    "seed text": BASE + "seed: lucky\n",
    "device unknown": BASE.replace("device: cpu", "device: tpu"),
    "device cuda typo": BASE.replace("device: cpu", "device: 'cuda:x'"),
    "precision unknown": BASE + "precision: fp8\n",
    "quality unknown": BASE + "quality: ultra\n",
    "name with slash": BASE.replace("name: fuzz", "name: a/b"),
    "name empty": BASE.replace("name: fuzz", "name: ''"),
    "generator missing": BASE.replace("generator: {use: pixel, cells: [8, 8]}\n", ""),
    "generator unknown": BASE.replace("use: pixel", "use: pixl"),
    "generator no use": BASE.replace("{use: pixel, cells: [8, 8]}", "{cells: [8, 8]}"),
    "generator is a number": BASE.replace("{use: pixel, cells: [8, 8]}", "42"),
    "generator is a loss": BASE.replace("use: pixel", "use: smoothness"),
    "generator bad option": BASE.replace("cells: [8, 8]", "celz: [8, 8]"),
    "generator cells negative": BASE.replace("cells: [8, 8]", "cells: [-1, 8]"),
    "palette bad colour": BASE.replace("cells: [8, 8]", "palette: ['#zzzzzz', '#000000']"),
    "palette one colour": BASE.replace("cells: [8, 8]", "palette: ['#ffffff']"),
    "init image missing": BASE.replace("cells: [8, 8]", "init_image: missing.png"),
    "losses missing": BASE.replace("losses:\n  - {use: smoothness}\n", ""),
    "losses empty": BASE.replace("losses:\n  - {use: smoothness}\n", "losses: []\n"),
    "losses mapping": BASE.replace("  - {use: smoothness}", "  use: smoothness"),
    "loss unknown": BASE.replace("use: smoothness", "use: smoothnes"),
    "loss bad weight": BASE.replace("{use: smoothness}", "{use: smoothness, weight: heavy}"),
    "loss bad schedule": BASE.replace("{use: smoothness}", "{use: smoothness, weight: {x: 1}}"),
    "loss bad option": BASE.replace("{use: smoothness}", "{use: smoothness, norm: l7}"),
    "loss unknown option": BASE.replace("{use: smoothness}", "{use: smoothness, strength: 2}"),
    "target image missing": BASE.replace("{use: smoothness}", "{use: target_image, image: no.png}"),
    "target image no path": BASE.replace("{use: smoothness}", "{use: target_image}"),
    "optimizer unknown": BASE + "optimizer: {name: lbfgs}\n",
    "optimizer lr negative": BASE + "optimizer: {name: adam, lr: -1}\n",
    "optimizer unknown key": BASE + "optimizer: {name: adam, learning_rate: 0.1}\n",
    "optimizer warmup bad": BASE + "optimizer: {warmup: '150 percent'}\n",
    "optimizer drop share over 100": BASE + "optimizer: {drops: ['150%']}\n",
    "outputs not a list": BASE + "outputs: {use: png}\n",
    "output unknown": BASE + "outputs: [{use: pgn}]\n",
    "output bad every": BASE + "outputs: [{use: png, every: often}]\n",
    "early stop without patience": BASE + "early_stop: {min_delta: 0.1}\n",
    "plugins file missing": BASE + "plugins: [./nope.py]\n",
    "plugins not a list": BASE + "plugins: 3\n",
    "non-string key": BASE + "1: one\n",
    "duplicate key": BASE + "steps: 5\n",
    "duplicate option": BASE.replace("cells: [8, 8]", "cells: [8, 8], cells: [4, 4]"),
    "loss weight nan": BASE.replace("{use: smoothness}", "{use: smoothness, weight: .nan}"),
    "loss weight inf in schedule": BASE.replace(
        "{use: smoothness}", "{use: smoothness, weight: {0: 1, 2: .inf}}"
    ),
    "option nan": BASE.replace("cells: [8, 8]", "temperature: [.nan, 1]"),
    "animation zoom nan": BASE + "animation: {zoom: .nan}\n",
    "animation rotate inf": BASE + "animation: {rotate: -.inf}\n",
}


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


def test_there_are_enough_cases() -> None:
    assert len(MALFORMED) >= 50


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_recipe_fails_cleanly(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = MALFORMED[case]
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    code, err = _run_cli(["run", str(path), "-q"], capsys)
    assert code == 2, err
    assert err.startswith("error: "), err
    assert "Traceback" not in err
    assert "\n\n" not in err.strip(), "one paragraph"
    assert not (tmp_path / "outputs").exists(), "no run folder for a bad recipe"


@pytest.mark.parametrize(
    "generator",
    [
        "{use: pixel, palette: [#ff0000, #00ff00]}",  # YAML: a comment from the first '#'
        "\n    use: pixel\n    palette:\n      - #ff0000\n      - #00ff00",  # empty entries
    ],
)
def test_an_unquoted_colour_is_explained(
    generator: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(BASE.replace("{use: pixel, cells: [8, 8]}", generator))
    code, err = _run_cli(["run", str(path), "-q"], capsys)
    assert code == 2
    assert "YAML comment" in err and 'in quotes, like "#ff0000"' in err, err


@pytest.mark.parametrize(
    ("name", "hint"),
    [("no", "a bare yes/no/on/off/true/false as a boolean"), ("1984", "a bare number")],
)
def test_a_name_yaml_typed_says_to_quote_it(
    name: str, hint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(BASE.replace("name: fuzz", f"name: {name}"))
    code, err = _run_cli(["run", str(path), "-q"], capsys)
    assert code == 2
    assert "line 1, name: Input should be a valid string (got " in err
    assert f"YAML reads {hint}" in err and "put it in quotes" in err, err


def test_a_key_given_twice_is_refused_with_both_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """YAML would silently keep the last; a recipe saying two things is a mistake."""
    path = tmp_path / "recipe.yaml"
    path.write_text(BASE + "optimizer:\n  lr: 0.1\n  lr: 0.5\n")
    code, err = _run_cli(["run", str(path), "-q"], capsys)
    assert code == 2
    assert "line 10: optimizer.lr is given twice (first on line 9)" in err, err


def test_yaml_merge_keys_still_give_defaults(tmp_path: Path) -> None:
    """A merge key (<<) gives defaults that a key beside it overrides: not a duplicate."""
    from pixgen.recipe import load_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text(BASE + "optimizer:\n  <<: {lr: 0.1, name: adamw}\n  lr: 0.5\n")
    recipe = load_recipe(path)
    assert recipe.optimizer.lr == 0.5 and recipe.optimizer.name == "adamw"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("animation: {zoom: {0: 1.0, 2: .nan}}", "animation.zoom: the value at 2 must be a finite"),
        ("animation: {translate_x: .inf}", "animation.translate_x: a value must be a finite"),
    ],
)
def test_non_finite_animation_is_refused(
    setting: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(BASE + setting + "\n")
    code, err = _run_cli(["run", str(path), "-q"], capsys)
    assert code == 2 and message in err, err


@pytest.mark.parametrize(("value", "shown"), [("null", "None"), ("''", "''"), ("[a]", "['a']")])
def test_a_file_option_that_is_not_a_path_says_so(
    value: str, shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(BASE.replace("{use: smoothness}", f"{{use: target_image, image: {value}}}"))
    code, err = _run_cli(["run", str(path), "-q"], capsys)
    assert code == 2
    assert err.endswith(f"line 7, losses[0].image: expected a file path, got {shown}\n"), err


def test_missing_recipe_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_cli(["run", "does-not-exist.yaml"], capsys)
    assert code == 2 and "recipe file not found" in err


def test_plugin_file_with_syntax_error_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken.py").write_text("def oops(:\n")
    path = tmp_path / "r.yaml"
    path.write_text(BASE + "plugins: [broken.py]\n")
    code, err = _run_cli(["run", str(path)], capsys)
    assert code == 2
    assert "broken.py" in err and "SyntaxError" in err and "line 1" in err


def test_cli_subprocess_has_no_traceback(tmp_path: Path) -> None:
    """The real process boundary: the installed script prints one message and exits 2."""
    path = tmp_path / "r.yaml"
    path.write_text(BASE.replace("steps: 3", "steps: -1"))
    proc = subprocess.run(
        [sys.executable, "-m", "pixgen.cli", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
