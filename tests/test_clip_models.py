"""CLIP model service: names, checkpoint formats, bundled models, errors, weights provider."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from clip_fixtures import (
    make_bundled_model,
    make_tiny_clip,
    make_tiny_clip_checkpoint,
    save_checkpoint,
    tiny_clip_config,
)

from pixgen.errors import WeightsError
from pixgen.models import clip as clip_models
from pixgen.models.clip import clear_model_cache, load_clip, parse_model_spec, weights_provider


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty Hugging Face cache (so a developer's real cache never leaks in)."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "pt"])
def test_checkpoint_formats_load_through_one_path(tmp_path: Path, fmt: str) -> None:
    spec = make_tiny_clip_checkpoint(tmp_path / fmt, fmt=fmt, seed=1)
    model = load_clip(spec)
    reference = make_tiny_clip(seed=1).eval()
    images = torch.rand(2, 3, 32, 32)
    expected = torch.nn.functional.normalize(
        reference.encode_image((images - model.mean) / model.std), dim=-1
    )
    assert torch.allclose(model.encode_image(images), expected, atol=1e-5)
    assert model.input_size == (32, 32)
    assert not model.model.training
    assert not any(p.requires_grad for p in model.model.parameters())
    assert model.encode_text(["a cat", "a dog"]).shape == (2, 32)


def test_one_instance_per_model_per_process(tmp_path: Path) -> None:
    spec = make_tiny_clip_checkpoint(tmp_path)
    assert load_clip(spec) is load_clip(spec)
    clear_model_cache()
    assert load_clip(spec) is not None


def test_relative_checkpoint_path_resolves_against_base_dir(tmp_path: Path) -> None:
    spec = make_tiny_clip_checkpoint(tmp_path / "weights")
    arch, _, path = spec.partition(":")
    parsed = parse_model_spec(f"{arch}:weights/{Path(path).name}", tmp_path)
    assert parsed.name == spec and parsed.source == "file"


def test_bundled_models_come_from_overridable_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_bundled_model(tmp_path / "bundled", "tiny", image_size=48)
    monkeypatch.setenv("PIXGEN_BUNDLED_MODELS", str(folder))
    model = load_clip("pixgen/tiny")
    assert model.name == "pixgen/tiny"
    assert model.input_size == (48, 48)
    assert model.mean.flatten().tolist() == [0.5, 0.5, 0.5]  # from preprocess_cfg
    info = weights_provider().info("pixgen/tiny")
    assert info.present and info.path == folder / "tiny.safetensors"
    assert "pixgen/tiny" in [e.name for e in weights_provider().entries()]


def test_unknown_names_get_a_did_you_mean() -> None:
    with pytest.raises(WeightsError) as err:
        parse_model_spec("ViT-B-32/opnai")
    assert "ViT-B-32/openai" in str(err.value) and "pixgen models list" in str(err.value)
    with pytest.raises(WeightsError, match="ViT-B-32/openai"):
        parse_model_spec("ViT-B-32")  # an architecture without weights: say which
    with pytest.raises(WeightsError, match="unknown CLIP model"):
        parse_model_spec("pixgen/nope")


def test_unknown_architecture_of_a_file(tmp_path: Path) -> None:
    path = save_checkpoint(make_tiny_clip(), tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match=r"unknown architecture .ViT-B-3..*ViT-B-32"):
        parse_model_spec(f"ViT-B-3:{path}")


def test_missing_weights_say_where_and_how_to_fetch(hf_cache: Path) -> None:
    with pytest.raises(WeightsError) as err:
        load_clip("ViT-B-32/openai", offline=True)
    text = str(err.value)
    assert err.value.exit_code == 2
    assert "'ViT-B-32/openai'" in text
    assert "pixgen models fetch ViT-B-32/openai" in text
    assert "pixgen models import ViT-B-32/openai" in text
    assert "Hugging Face cache" in text and str(weights_provider().home()) in text


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_truncated_checkpoint_is_a_clear_error(tmp_path: Path, fmt: str) -> None:
    spec = make_tiny_clip_checkpoint(tmp_path, fmt=fmt, seed=5)
    path = Path(spec.partition(":")[2])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(WeightsError, match="truncated or corrupt") as err:
        load_clip(spec)
    assert err.value.exit_code == 2


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path: Path) -> None:
    spec = make_tiny_clip_checkpoint(tmp_path, width=64)
    arch = spec.partition(":")[0]
    (tmp_path / f"{arch}.json").write_text(json.dumps(tiny_clip_config(width=32)))
    with pytest.raises(WeightsError, match="does not fit"):
        load_clip(spec)


def test_provider_follows_the_weights_protocol() -> None:
    from pixgen.models.weights import WeightsProvider, catalog, reset_catalog

    reset_catalog()
    provider = weights_provider()
    assert isinstance(provider, WeightsProvider)
    assert catalog().provider("clip").kind == "clip"
    assert catalog().provider_for("ViT-B-32/openai").kind == "clip"


def test_provider_sees_the_hugging_face_cache(hf_cache: Path) -> None:
    provider = weights_provider()
    assert not provider.info("ViT-B-32/openai").present
    repo = hf_cache / "models--timm--vit_base_patch32_clip_224.openai"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (snapshot / "open_clip_model.safetensors").write_bytes(b"x" * 10)
    info = provider.info("ViT-B-32/openai")
    assert info.present and info.path == snapshot / "open_clip_model.safetensors"
    assert info.size_bytes == 10
    assert info.source == "hf-hub:timm/vit_base_patch32_clip_224.openai"


def test_import_registers_a_local_file_for_offline_loading(tmp_path: Path, hf_cache: Path) -> None:
    from pixgen.models.weights import catalog, reset_catalog

    spec = make_tiny_clip_checkpoint(tmp_path / "src", seed=3)
    arch, _, path = spec.partition(":")
    config = tmp_path / "src" / f"{arch}.json"
    reset_catalog()
    dest = catalog().import_files("tinyarch/v1", [Path(path), config])
    assert dest.is_relative_to(weights_provider().home())
    assert "tinyarch/v1" in catalog().names()
    model = load_clip("tinyarch/v1", offline=True)
    assert model.name == "tinyarch/v1"
    reference = load_clip(spec)
    images = torch.rand(1, 3, 32, 32)
    assert torch.allclose(model.encode_image(images), reference.encode_image(images), atol=1e-6)
    catalog().remove("tinyarch/v1")
    assert not catalog().provider("clip").owns("tinyarch/v1")


def test_import_refuses_a_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(WeightsError, match="damaged or not a CLIP checkpoint"):
        weights_provider().import_files("ViT-B-32/mine", [bad])


def test_import_refuses_a_checkpoint_that_does_not_fit_its_architecture(tmp_path: Path) -> None:
    """Found on the machine the file was copied to, not at the first run."""
    from pixgen.models.weights import catalog, reset_catalog

    spec = make_tiny_clip_checkpoint(tmp_path / "src", seed=3)  # a tiny model, not a ViT-B-32
    reset_catalog()
    with pytest.raises(WeightsError) as err:
        catalog().import_files("ViT-B-32/mine", [Path(spec.partition(":")[2])])
    assert err.value.exit_code == 2
    assert "not imported: CLIP model 'ViT-B-32/mine'" in str(err.value)
    assert "does not fit the CLIP architecture" in str(err.value)
    assert not catalog().provider("clip").owns("ViT-B-32/mine")  # nothing half-imported


def test_random_model_for_benchmarks_builds_real_architectures() -> None:
    model = clip_models.random_clip_model("RN50", quick_gelu=True)
    assert model.input_size == (224, 224)
    assert model.name == "RN50/random"
