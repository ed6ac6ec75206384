"""``pixgen classify`` and ``pixgen search`` end to end on images the tests write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from clip_fixtures import make_tiny_clip_checkpoint, write_images

from pixgen.cli import main
from pixgen.commands.clip import index_path
from pixgen.models.clip import ClipModel


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    return make_tiny_clip_checkpoint(tmp_path / "clip")


@pytest.fixture
def count_image_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the image batches the CLIP image encoder sees."""
    seen: list[int] = []
    original = ClipModel.encode_image

    def counting(self: ClipModel, images: Any) -> Any:
        seen.append(images.shape[0])
        return original(self, images)

    monkeypatch.setattr(ClipModel, "encode_image", counting)
    return seen


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, Any, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


# -- classify --------------------------------------------------------------------------------


def test_classify_prints_labels_by_probability(
    tmp_path: Path, tiny: str, capsys: pytest.CaptureFixture[str]
) -> None:
    images = write_images(tmp_path / "imgs", 2)
    code = main(
        [
            "classify",
            *map(str, images),
            "--labels",
            "a cat, a dog,a person",
            "--model",
            tiny,
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0] == str(images[0]) and out.count("%") == 6

    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# animals\na cat\na dog\n\na person\n")
    code, data, _ = run_json(
        capsys,
        [
            "classify",
            *map(str, images),
            "--labels-file",
            str(labels_file),
            "--template",
            "art of {}",
            "--model",
            tiny,
            "--json",
        ],
    )
    assert code == 0 and data["model"] == tiny and data["failed"] == []
    for item in data["results"]:
        probs = [e["probability"] for e in item["labels"]]
        assert sorted(e["label"] for e in item["labels"]) == ["a cat", "a dog", "a person"]
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)


def test_classify_uses_the_models_logit_scale(
    tmp_path: Path, tiny: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from pixgen.models.clip import load_clip

    image = write_images(tmp_path / "imgs", 1)[0]
    _, data, _ = run_json(
        capsys, ["classify", str(image), "--labels", "red,blue", "--model", tiny, "--json"]
    )
    model = load_clip(tiny)
    from PIL import Image

    with Image.open(image) as img:
        features = model.encode_pil([img.convert("RGB")])
    text = model.encode_text(["a photo of red", "a photo of blue"])
    expected = (model.logit_scale * features @ text.T).softmax(-1)[0].tolist()
    got = {e["label"]: e["probability"] for e in data["results"][0]["labels"]}
    assert [got["red"], got["blue"]] == pytest.approx(expected, abs=1e-5)
    assert model.logit_scale == pytest.approx(float(torch.tensor(1 / 0.07)), rel=1e-4)


def test_classify_reports_bad_files_and_goes_on(
    tmp_path: Path, tiny: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_images(tmp_path / "imgs", 1)[0]
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    code, data, err = run_json(
        capsys,
        [
            "classify",
            str(text),
            str(good),
            str(tmp_path / "gone.jpg"),
            "--labels",
            "a,b",
            "--model",
            tiny,
            "--json",
        ],
    )
    assert code == 1
    assert [r["image"] for r in data["results"]] == [str(good)]
    assert "notes.png" in err and "gone.jpg" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--labels", " , ,"], ["--labels", "a", "--template", "no slot"]])
def test_classify_bad_labels_exit_2(
    tmp_path: Path, tiny: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_images(tmp_path / "imgs", 1)[0]
    assert main(["classify", str(image), *argv, "--model", tiny]) == 2
    assert "error:" in capsys.readouterr().err


def test_classify_with_a_truncated_checkpoint_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = make_tiny_clip_checkpoint(tmp_path / "broken", seed=9)
    path = Path(spec.partition(":")[2])
    path.write_bytes(path.read_bytes()[:1000])
    image = write_images(tmp_path / "imgs", 1)[0]
    assert main(["classify", str(image), "--labels", "a,b", "--model", spec]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def test_unknown_model_lists_close_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_images(tmp_path / "imgs", 1)[0]
    assert main(["classify", str(image), "--labels", "a", "--model", "ViT-B-32/opena"]) == 2
    assert "Did you mean 'ViT-B-32/openai'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["classify", "search"])
def test_offline_flag_never_tries_a_download(
    tmp_path: Path,
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("PIXGEN_OFFLINE")  # only the flag says offline
    image = write_images(tmp_path / "imgs", 1)[0]
    args = (
        [str(image), "--labels", "a,b"] if command == "classify" else ["a", "-i", str(image.parent)]
    )
    assert main([command, *args, "--model", "ViT-B-32/openai", "--offline"]) == 2
    err = capsys.readouterr().err
    assert "pixgen is offline, so it will not download" in err
    assert "pixgen models import ViT-B-32/openai" in err


def test_classify_bad_device_or_binary_labels_file_exit_2(
    tmp_path: Path, tiny: str, capsys: pytest.CaptureFixture[str]
) -> None:
    image = str(write_images(tmp_path / "imgs", 1)[0])
    assert main(["classify", image, "-l", "a,b", "--model", tiny, "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err
    (tmp_path / "labels.txt").write_bytes(bytes(range(128, 256)))
    args = ["classify", image, "--labels-file", str(tmp_path / "labels.txt"), "--model", tiny]
    assert main(args) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err


# -- search ----------------------------------------------------------------------------------


def test_search_ranks_and_reuses_its_index(
    tmp_path: Path, tiny: str, count_image_batches: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    write_images(folder, 5)
    argv = [
        "search",
        "a red square",
        "--images",
        str(folder),
        "--top",
        "3",
        "--model",
        tiny,
        "--json",
    ]
    code, first, _ = run_json(capsys, argv)
    assert code == 0 and len(first["results"]) == 3
    scores = [r["score"] for r in first["results"]]
    assert scores == sorted(scores, reverse=True)
    assert sum(count_image_batches) == 5
    assert index_path(folder, tiny).is_file()

    count_image_batches.clear()
    code, second, _ = run_json(capsys, argv)
    assert code == 0 and second["results"] == first["results"]
    assert count_image_batches == []  # nothing re-embedded

    # A renamed file is the same content; only the genuinely new image is embedded.
    (folder / "img00.png").rename(folder / "renamed.png")
    write_images(tmp_path / "more", 6, seed=1)[5].rename(folder / "new.png")
    code, third, _ = run_json(capsys, [*argv, "--top", "10"])
    assert code == 0 and sum(count_image_batches) == 1
    assert {Path(r["path"]).name for r in third["results"]} == {
        "renamed.png",
        "img01.png",
        "img02.png",
        "img03.png",
        "img04.png",
        "new.png",
    }

    code = main(argv[:-1])  # plain text: score then path (top 3)
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and len(lines) == 3 and lines[0].split()[1].endswith(".png")


def test_search_skips_unreadable_files(
    tmp_path: Path, tiny: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    write_images(folder, 2)
    (folder / "broken.png").write_text("not a png")
    (folder / "readme.txt").write_text("hello")  # not an image file: left alone
    code, data, err = run_json(
        capsys, ["search", "a cat", "--images", str(folder), "--model", tiny, "--json"]
    )
    assert code == 1
    assert len(data["results"]) == 2 and "broken.png" in err and "readme.txt" not in err
    assert data["failed"] == [str(folder / "broken.png")]


def test_search_a_damaged_index_is_rebuilt(
    tmp_path: Path, tiny: str, count_image_batches: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    write_images(folder, 2)
    index_path(folder, tiny).write_bytes(b"garbage")
    assert main(["search", "a cat", "--images", str(folder), "--model", tiny]) == 0
    assert sum(count_image_batches) == 2
    assert index_path(folder, tiny).stat().st_size > 100


def test_search_recursive_covers_subfolders_with_one_index(
    tmp_path: Path, tiny: str, count_image_batches: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Like an outputs/ folder of runs: images in subfolders, found with --recursive."""
    root = tmp_path / "outputs"
    first = write_images(root / "run-1", 2)
    second = write_images(root / "run-2" / "steps", 3, seed=1)
    write_images(root / ".hidden", 1, seed=2)  # hidden folders are left alone
    argv = ["search", "a red square", "-i", str(root), "--model", tiny, "--top", "10"]

    assert main(argv) == 2  # not recursive: nothing at the top, and it says where to look
    assert "its subfolders have 5: add --recursive" in capsys.readouterr().err

    code, found, _ = run_json(capsys, [*argv, "--recursive", "--json"])
    assert code == 0 and sum(count_image_batches) == 5
    assert {r["path"] for r in found["results"]} == {str(f) for f in [*first, *second]}
    assert not list(root.glob("run-*/.pixgen-index-*")), "one index, in the searched folder"

    count_image_batches.clear()
    code, again, _ = run_json(capsys, [*argv, "-r", "--json"])
    assert code == 0 and again["results"] == found["results"]
    assert count_image_batches == []  # every file known by its path under the folder


@pytest.mark.parametrize("make", ["empty", "missing"])
def test_search_empty_or_missing_folder_exits_2(
    tmp_path: Path, tiny: str, make: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    if make == "empty":
        folder.mkdir()
    assert main(["search", "a cat", "--images", str(folder), "--model", tiny]) == 2
    assert "error:" in capsys.readouterr().err
