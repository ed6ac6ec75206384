"""pixgen/shapes: captioned-shape data, the model's file and the evaluation command."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tools.shapes import data as D
from tools.shapes import evaluate as E
from tools.shapes.model import (
    SHAPES_MODEL_CONFIG,
    VIT_VISION_CFG,
    build_model,
    load_weights,
    save_weights,
)


def test_vocabularies() -> None:
    assert len(D.COLOURS) >= 8
    assert {"circle", "square", "triangle", "star", "ring", "stripes"} <= set(D.SHAPES)
    assert {"left", "right", "top", "bottom", "centre"} <= set(D.POSITIONS)
    for rgb in D.COLOURS.values():
        assert len(rgb) == 3 and all(0.0 <= v <= 1.0 for v in rgb)


def test_same_seed_same_batch_other_seed_other_batch() -> None:
    a = D.sample_batch(16, "train", seed=3, augment_images=True)
    b = D.sample_batch(16, "train", seed=3, augment_images=True)
    c = D.sample_batch(16, "train", seed=4, augment_images=True)
    assert a.captions == b.captions
    assert torch.equal(a.images, b.images)
    assert a.captions != c.captions
    assert a.images.shape == (16, 3, 64, 64)
    assert float(a.images.min()) >= 0.0 and float(a.images.max()) <= 1.0


def test_held_out_pairs_never_in_train_and_only_in_test() -> None:
    assert D.HELD_OUT_PAIRS and D.TRAIN_PAIRS
    # Every colour and shape still appears in training.
    assert {c for c, _ in D.TRAIN_PAIRS} == set(range(len(D.COLOURS)))
    assert {s for _, s in D.TRAIN_PAIRS} == set(range(len(D.SHAPES)))
    g = torch.Generator().manual_seed(0)
    for split, want_held in (("train", False), ("test", True)):
        group = 4 if split == "train" else 1
        attrs = D.sample_attributes(2000, split, g, two_object_prob=0.5, group_size=group)
        present = attrs.colour != D.UNSET
        for c, s in zip(attrs.colour[present].tolist(), attrs.shape[present].tolist(), strict=True):
            assert D.is_held_out(c, s) is want_held


def test_captions_name_what_the_image_shows() -> None:
    batch = D.sample_batch(256, "train", seed=1, two_object_prob=0.3)
    # Every caption's claim is true of its own image ...
    assert bool(D.match_matrix(batch.attrs, batch.claims).diagonal().all())
    for i, (text, rec) in enumerate(zip(batch.captions, batch.attrs.records(), strict=True)):
        words = text.split()
        colours = {o["colour"] for o in rec["objects"]} | {rec["background"]}
        shapes = {o["shape"] for o in rec["objects"]}
        # ... and the words say nothing the image does not show.
        assert {w for w in words if w in D.COLOURS} <= colours, (text, rec)
        assert {w for w in words if w in D.SHAPES} <= shapes, (text, rec)
        for claim in batch.claims.obj[i].tolist():
            colour, shape, _, pos = claim
            if colour != D.UNSET:
                assert D.COLOUR_NAMES[colour] in words
            if shape != D.UNSET:
                assert D.SHAPES[shape] in words
            if pos != D.UNSET:
                phrase = D.position_phrase(pos)
                assert phrase in text or phrase.replace("centre", "center") in text
        if "background" in words:
            assert D.background_phrase(int(batch.attrs.bg_colour[i])) in text


def test_rendered_object_is_where_and_what_the_caption_says() -> None:
    g = torch.Generator().manual_seed(5)
    attrs = D.sample_attributes(64, "train", g, two_object_prob=0.0)
    attrs.bg_texture.zero_()  # plain backgrounds: object pixels = those unlike the background
    images = D.render(attrs, size=64, seed=0)
    rgb = torch.tensor(list(D.COLOURS.values()))
    for i, rec in enumerate(attrs.records()):
        obj = rec["objects"][0]
        img = images[i]
        bg = rgb[int(attrs.bg_colour[i])][:, None, None]
        mask = (img - bg).abs().amax(0) > 0.3
        assert int(mask.sum()) > 10, rec
        ys, xs = torch.nonzero(mask, as_tuple=True)
        cx, cy = float(xs.float().mean()) / 64, float(ys.float().mean()) / 64
        if "left" in obj["position"]:
            assert cx < 0.5
        if "right" in obj["position"]:
            assert cx > 0.5
        if "top" in obj["position"]:
            assert cy < 0.5
        if "bottom" in obj["position"]:
            assert cy > 0.5
        if obj["position"] == "centre":
            assert abs(cx - 0.5) < 0.12 and abs(cy - 0.5) < 0.12
        # The object's pixels have its colour (closest palette entry).
        colour = img[:, mask].mean(1)
        nearest = int((rgb - colour).norm(dim=1).argmin())
        if obj["shape"] != "stripes":  # stripes mix in the background
            assert D.COLOUR_NAMES[nearest] == obj["colour"], (rec, colour)


def test_augmentation_keeps_size_and_range() -> None:
    g = torch.Generator().manual_seed(0)
    images = D.sample_batch(8, "train", seed=2).images
    out = D.augment(images, g, seed=1)
    assert out.shape == images.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_tokenizer_matches_open_clip() -> None:
    from open_clip.tokenizer import SimpleTokenizer

    captions = D.sample_batch(64, "train", seed=7).captions
    ours = D.CaptionTokenizer(32)(captions)
    ref = SimpleTokenizer(context_length=32)(captions)
    assert torch.equal(ours, ref)


def test_model_builds_and_file_is_small(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model()
    path = save_weights(model, tmp_path / "shapes.safetensors")
    # <= 16 MiB: the package budget is ~20 MB, and a device run hands back files <= 16 MiB.
    assert path.stat().st_size <= 16 * 2**20
    cfg = json.loads((tmp_path / "shapes.json").read_text())
    assert cfg["embed_dim"] == SHAPES_MODEL_CONFIG["embed_dim"]
    assert cfg["preprocess_cfg"]["size"] == 64
    # open_clip's own CLIP class rebuilds it from the JSON.
    from open_clip.model import CLIP
    from safetensors.torch import load_file

    clip = CLIP(**{k: v for k, v in cfg.items() if k not in ("preprocess_cfg", "prompt_template")})
    clip.load_state_dict(load_file(str(path)))
    again = load_weights(path)
    x = torch.rand(2, 3, 64, 64)
    ref = model.half().float().eval().encode_image(x)
    assert torch.allclose(again.encode_image(x), ref, atol=1e-4)


def test_caption_words_hold_every_token_of_every_caption() -> None:
    """The saved token embedding keeps only these tokens' rows: a caption must never use
    another (it would read a zero row)."""
    tokenizer = D.CaptionTokenizer(32)
    kept = set(tokenizer.vocabulary_ids())
    assert len(kept) < 100
    for split in ("train", "test"):
        captions = D.sample_batch(3000, split, seed=11).captions
        assert set(tokenizer(captions).unique().tolist()) <= kept
    assert {"center", "centre", "stripes", "pixel", "background"} <= set(D.caption_words())


def test_saved_weights_keep_only_the_caption_tokens_rows(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``token_rows`` the file stores those rows of the token embedding (a fraction of
    the full file), and both pixgen's loaders rebuild a model that reads every caption
    exactly as the saved one; the untrained rows come back as zeros."""
    from pixgen.errors import WeightsError
    from pixgen.models.clip import clear_model_cache, load_clip

    torch.manual_seed(0)
    model = build_model().half().float().eval()
    tokenizer = D.CaptionTokenizer(32)
    rows = tokenizer.vocabulary_ids()
    full = save_weights(model, tmp_path / "full" / "shapes.safetensors")
    path = save_weights(model, tmp_path / "bundled" / "shapes.safetensors", token_rows=rows)
    assert path.stat().st_size < 0.6 * full.stat().st_size

    captions = D.sample_batch(16, "test", seed=3).captions
    tokens = tokenizer(captions)
    with torch.no_grad():
        expected = model.encode_text(tokens, normalize=True)
        again = load_weights(path)
        assert torch.allclose(again.encode_text(tokens, normalize=True), expected, atol=1e-6)
    embedding = again.token_embedding.weight
    assert embedding[rows].abs().sum() > 0
    assert int(embedding.abs().sum(1).gt(0).sum()) == len(rows)

    monkeypatch.setenv("PIXGEN_BUNDLED_MODELS", str(path.parent))
    clear_model_cache()
    clip = load_clip("pixgen/shapes", device="cpu")
    assert torch.allclose(clip.encode_text(captions), expected, atol=1e-6)

    # Rows of the wrong width: a clear error naming the file, not a traceback.
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    state["token_embedding.weight"] = state["token_embedding.weight"][:, :8].contiguous()
    save_file(state, str(path))
    clear_model_cache()
    with pytest.raises(WeightsError, match="does not fit"):
        load_clip("pixgen/shapes", device="cpu")
    clear_model_cache()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("shapes") / "shapes.safetensors"
    return save_weights(build_model(), path)


def test_evaluate_runs_end_to_end(tiny_weights, capsys) -> None:
    assert E.main(["--weights", str(tiny_weights), "--device", "cpu", "--n", "40", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("colour_acc", "shape_acc", "position_acc", "retrieval_p@5"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["n_images"] == 40

    assert E.main(["--weights", str(tiny_weights), "--device", "cpu", "--n", "40"]) == 0
    table = capsys.readouterr().out
    for key in ("colour_acc", "shape_acc", "position_acc", "retrieval_p@5"):
        assert re.search(rf"{re.escape(key)}\s+\d\.\d{{3}}", table)


def test_evaluate_without_weights_says_so(tmp_path, capsys) -> None:
    assert E.main(["--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "no weights" in capsys.readouterr().err
    assert E.main(["--weights", "pixgen/no-such-model"]) == 2
    assert "bundled/no-such-model.safetensors" in capsys.readouterr().err


def test_evaluate_takes_a_bundled_model_by_name(capsys) -> None:
    assert E.main(["--weights", "pixgen/shapes-vit", "--device", "cpu", "--n", "10"]) == 0
    assert capsys.readouterr().out.startswith("pixgen/shapes-vit held-out evaluation (10 images")


def test_train_writes_weights_config_and_metrics(tmp_path) -> None:
    from tools.shapes import train

    out = tmp_path / "run"
    args = ["--device", "cpu", "--steps", "2", "--batch", "8", "--eval-n", "16"]
    assert train.main([*args, "--log-every", "1", "--out", str(out)]) == 0
    assert (out / "shapes.safetensors").exists() and (out / "shapes.json").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["stop_reason"] == "steps"
    assert 0.0 <= metrics["colour_acc"] <= 1.0


def test_train_options_aux_loss_and_other_config(tmp_path) -> None:
    """The auxiliary attribute heads train alongside and stay out of the saved model; an
    experimental config is saved as trained (its JSON rebuilds the same architecture)."""
    from safetensors.torch import load_file

    from tools.shapes import train

    config = json.loads(json.dumps(SHAPES_MODEL_CONFIG))
    config["vision_cfg"] = dict(VIT_VISION_CFG, image_size=32, layers=2)
    out = tmp_path / "run"
    quick = ["--device", "cpu", "--steps", "2", "--batch", "8", "--eval-n", "16"]
    quick += ["--aux-weight", "1"]
    assert train.main([*quick, "--config", json.dumps(config), "--out", str(out)]) == 0
    saved = json.loads((out / "shapes.json").read_text())
    assert saved["vision_cfg"]["image_size"] == 32 and saved["preprocess_cfg"]["size"] == 32
    model = load_weights(out / "shapes.safetensors")
    assert len(model.visual.transformer.resblocks) == 2

    # The shipped ResNet tower (the default): BatchNorm's integer step counters are saved
    # as integers (fp16 would overflow them), the weights as fp16.
    resnet = tmp_path / "resnet"
    assert train.main([*quick, "--out", str(resnet)]) == 0
    assert json.loads((resnet / "shapes.json").read_text())["vision_cfg"]["layers"] == [1, 1, 1, 1]
    state = load_file(str(resnet / "shapes.safetensors"))
    counters = {k: v for k, v in state.items() if k.endswith("num_batches_tracked")}
    assert counters and all(v.dtype == torch.int64 and int(v) == 2 for v in counters.values())
    # Only the caption words' rows of the token embedding are saved, with their indices.
    rows = state.pop("token_embedding.weight.rows")
    assert rows.tolist() == D.CaptionTokenizer(32).vocabulary_ids()
    assert state["token_embedding.weight"].shape[0] == len(rows)
    assert {v.dtype for k, v in state.items() if k not in counters} == {torch.float16}
    assert hasattr(load_weights(resnet / "shapes.safetensors").visual, "attnpool")
    assert json.loads((out / "metrics.json").read_text())["aux_weight"] == 1.0


def test_fine_tuning_starts_from_saved_weights_and_trains_adversarially(
    tiny_weights, tmp_path
) -> None:
    """``--init`` continues from a saved model (its weights, not a fresh draw) and
    ``--adv-eps`` / ``--adv-space`` train on perturbed images; all are recorded in the
    metrics."""
    from tools.shapes import train

    out = tmp_path / "tuned"
    args = ["--device", "cpu", "--steps", "1", "--batch", "8", "--eval-n", "16", "--lr", "0"]
    args += ["--init", str(tiny_weights), "--adv-eps", "1", "--adv-space", "fft:2"]
    args += ["--out", str(out)]
    assert train.main(args) == 0
    before, after = load_weights(tiny_weights), load_weights(out / "shapes.safetensors")
    # Learning rate 0: every weight is the saved model's (BatchNorm's running statistics
    # still follow the batches, as they do at any learning rate).
    # (The token embedding is saved for the caption words' rows only: the rest of the
    # vocabulary is never trained.)
    after_params = dict(after.named_parameters())
    rows = D.CaptionTokenizer(32).vocabulary_ids()
    for name, a in before.named_parameters():
        b = after_params[name]
        if name == "token_embedding.weight":
            a, b = a[rows], b[rows]
        assert torch.equal(a, b), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["adv_eps"] == 1.0 and metrics["adv_space"] == "fft:2"
    assert metrics["init"] == str(tiny_weights)


def test_fine_tuning_from_a_missing_file_says_so(tmp_path, capsys) -> None:
    from tools.shapes import train

    assert train.main(["--init", str(tmp_path / "none.safetensors"), "--device", "cpu"]) == 2
    assert "no weights" in capsys.readouterr().err


def test_adversarial_images_stay_close_and_raise_the_loss() -> None:
    from tools.shapes.train import PerturbationSpace, adversarial_images

    torch.manual_seed(0)
    images = torch.rand(4, 3, 16, 16) * 0.8 + 0.1
    target = torch.rand(4, 3, 16, 16)

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        return -((x - target) ** 2).sum()  # highest far from target

    changes = {}
    for spec in ("pixels", "cells:4", "fft:2"):
        moved = adversarial_images(images, 0.5, loss_fn, PerturbationSpace(spec))
        assert moved.shape == images.shape
        assert 0 <= float(moved.min()) <= float(moved.max()) <= 1
        assert float((moved - images).flatten(1).norm(dim=1).max()) <= 0.5 + 1e-5
        assert float(loss_fn(moved)) > float(loss_fn(images))
        changes[spec] = moved - images
    # cells:4: constant over each 4 x 4 block (nothing is clipped: a block of 16 pixels
    # moves by at most 0.5 / 4 per pixel, and pixels lie in [0.1, 0.9]).
    blocks = changes["cells:4"].unflatten(2, (4, 4)).unflatten(4, (4, 4))
    assert torch.allclose(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks), atol=1e-6)

    # fft:2: smooth, neighbouring pixels change alike (per pixel they would not).
    def roughness(d: torch.Tensor) -> float:
        return float((d[..., 1:] - d[..., :-1]).abs().mean() / d.abs().mean())

    assert roughness(changes["fft:2"]) < 0.5 < roughness(changes["pixels"])


@pytest.mark.parametrize(
    "spec", ["cells", "cells:0", "cells:2.5", "fft", "fft:x", "fft:-1", "waves:2", "pixels:3"]
)
def test_perturbation_space_rejects_malformed_specs(spec: str) -> None:
    from tools.shapes.train import PerturbationSpace

    with pytest.raises(ValueError, match=r"pixels, cells:N, fft:DECAY|whole number"):
        PerturbationSpace(spec)


def test_joined_perturbation_spaces_take_turns() -> None:
    from tools.shapes.train import PerturbationSpace, adversarial_images

    space = PerturbationSpace("cells:4+fft:2")
    assert [space.next_space().spec for _ in range(3)] == ["cells:4", "fft:2", "cells:4"]
    with pytest.raises(ValueError, match="fft:DECAY"):
        PerturbationSpace("cells:4+waves")
    with pytest.raises(TypeError, match="next_space"):
        space.sample(1, 3, 16, 16, torch.device("cpu"))
    # The next attack (the fourth turn) draws in fft:2: smooth, not blocks of 4 x 4.
    images = torch.full((2, 3, 16, 16), 0.5)
    moved = adversarial_images(images, 0.5, lambda x: (x**2).sum(), space)
    blocks = (moved - images).unflatten(2, (4, 4)).unflatten(4, (4, 4))
    assert not torch.allclose(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks), atol=1e-6)


def test_hard_negative_groups_share_colour_or_shape() -> None:
    g = torch.Generator().manual_seed(2)
    attrs = D.sample_attributes(400, "train", g, two_object_prob=0.3, group_size=4)
    colour = attrs.colour[:, 0].reshape(-1, 4)
    shape = attrs.shape[:, 0].reshape(-1, 4)
    same_colour = (colour == colour[:, :1]).all(1)
    same_shape = (shape == shape[:, :1]).all(1)
    assert bool((same_colour | same_shape).all())
    assert 0.5 < float(same_colour.float().mean()) < 0.95  # mostly colour, sometimes shape


def test_sample_pictures_written_with_captions(tmp_path) -> None:
    assert D.main([str(tmp_path / "s"), "--n", "5", "--size", "48"]) == 0
    lines = (tmp_path / "s" / "captions.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == [f"{i:03d}.png" for i in range(5)]
    from PIL import Image

    with Image.open(tmp_path / "s" / "004.png") as image:
        assert image.size == (48, 48) and image.mode == "RGB"
    first = D.sample_batch(5, "test", seed=0, size=48, two_object_prob=0.25).captions
    assert [line.split("\t")[1] for line in lines] == first
