"""The VQGAN network, safe checkpoint loading and the ``vqgan`` generator."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from pixgen_plugins.generators.vqgan import VQGANGenerator
from vqgan_fixtures import (
    TINY_FACTOR,
    lightning_checkpoint,
    serve,
    tiny_config,
    tiny_context,
    tiny_state_dict,
    unimportable_class,
    write_malicious_checkpoint,
    write_registry,
    write_tiny_vqgan,
)

from pixgen.errors import RecipeError, WeightsError
from pixgen.models import weights
from pixgen.models.vqgan import (
    build_vqgan,
    check_size,
    load_vqgan,
    load_weights,
    nearest_valid_sizes,
    parse_config,
    read_checkpoint,
    read_config,
    registry_config,
    vector_quantize,
)
from pixgen.plugin import Generator


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("PIXGEN_HOME", str(home))
    monkeypatch.delenv("PIXGEN_OFFLINE", raising=False)
    monkeypatch.delenv("PIXGEN_VQGAN_REGISTRY", raising=False)
    weights.reset_catalog()
    yield home
    weights.reset_catalog()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_tiny_vqgan(tmp_path_factory.mktemp("tiny"))


def _generator(options: dict, ctx=None) -> VQGANGenerator:  # type: ignore[no-untyped-def]
    opts = VQGANGenerator.Options.model_validate(options, context={"check_files": True})
    return VQGANGenerator(opts, ctx or tiny_context())


# -- configs --------------------------------------------------------------------------


def test_config_parsed_from_taming_yaml(tiny: tuple[Path, Path]) -> None:
    config = read_config(tiny[0])
    assert (config.n_embed, config.embed_dim, config.factor, config.gumbel) == (64, 8, 4, False)
    gumbel = parse_config(tiny_config(gumbel=True))
    assert gumbel.gumbel and gumbel.target.endswith("GumbelVQ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: [unclosed", "not valid YAML"),
        ("model: {target: taming.models.cond_transformer.Other, params: {}}", "not a VQGAN"),
        ("model: {target: taming.models.vqgan.VQModel, params: {n_embed: 4}}", "embed_dim"),
        ("other: 1", "no 'model' section"),
        ("!!python/object/apply:os.system ['echo hi']", "not valid YAML"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(text)
    with pytest.raises(WeightsError, match=message):
        read_config(path)


def test_transformer_config_uses_its_first_stage(tiny: tuple[Path, Path]) -> None:
    inner = tiny_config()["model"]
    outer = {
        "model": {
            "target": "taming.models.cond_transformer.Net2NetTransformer",
            "params": {"first_stage_config": inner, "transformer_config": {}},
        }
    }
    config = parse_config(outer)
    assert config.key_prefix == "first_stage_model."
    state = {f"first_stage_model.{k}": v for k, v in read_checkpoint(tiny[1]).items()}
    state["transformer.tok_emb.weight"] = torch.zeros(2, 2)
    load_weights(build_vqgan(config), state)


# -- safe loading ---------------------------------------------------------------------


def test_lightning_checkpoint_loads_without_lightning(tiny: tuple[Path, Path]) -> None:
    assert "pytorch_lightning" not in sys.modules
    state = read_checkpoint(tiny[1])
    assert any(k.startswith("loss.") for k in state)
    model = load_vqgan(*tiny)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    reference = tiny_state_dict(tiny_config())
    assert torch.equal(model.codebook, reference["quantize.embedding.weight"])
    assert "pytorch_lightning" not in sys.modules
    leaked = [g for g in torch.serialization.get_safe_globals() if isinstance(g, tuple)]
    assert leaked == []  # the allow-list was scoped to the load


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_code_in_checkpoint_is_refused_and_not_run(tmp_path: Path, legacy: bool) -> None:
    target = tmp_path / "pwned"
    evil = write_malicious_checkpoint(tmp_path / "evil.ckpt", target, legacy=legacy)
    with pytest.raises(WeightsError, match="refused to load") as err:
        read_checkpoint(evil)
    assert "exec" in str(err.value) and "nothing was executed" in str(err.value)
    assert not target.exists()


def test_unknown_class_in_checkpoint_is_refused(tmp_path: Path) -> None:
    with unimportable_class("someones_trainer.callbacks.Secret") as secret:
        torch.save({"state_dict": {}, "callbacks": {secret: {}}}, tmp_path / "x.ckpt")
    with pytest.raises(WeightsError, match=r"someones_trainer\.callbacks\.Secret"):
        read_checkpoint(tmp_path / "x.ckpt")


def test_truncated_checkpoint(tmp_path: Path, tiny: tuple[Path, Path]) -> None:
    data = tiny[1].read_bytes()
    for i, cut in enumerate((len(data) // 2, 100)):
        path = tmp_path / f"cut{i}.ckpt"
        path.write_bytes(data[:cut])
        with pytest.raises(WeightsError, match="truncated or corrupt"):
            read_checkpoint(path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        read_checkpoint(junk)


def test_config_checkpoint_mismatch(tmp_path: Path, tiny: tuple[Path, Path]) -> None:
    _, other = write_tiny_vqgan(tmp_path / "other", n_embed=32)
    with pytest.raises(WeightsError, match="does not fit config") as err:
        load_vqgan(tiny[0], other)
    assert "quantize.embedding.weight [32, 8] (config wants [64, 8])" in str(err.value)
    state = read_checkpoint(tiny[1])
    del state["decoder.conv_out.bias"]
    with pytest.raises(WeightsError, match=r"1 missing: decoder\.conv_out\.bias"):
        load_weights(build_vqgan(read_config(tiny[0])), state)


def test_safetensors_accepted(tmp_path: Path, tiny: tuple[Path, Path]) -> None:
    config, ckpt = write_tiny_vqgan(tmp_path, safetensors=True)
    model = load_vqgan(config, ckpt)
    assert torch.equal(model.codebook, load_vqgan(*tiny).codebook)


def test_full_size_imagenet_16384_maps_real_checkpoint_keys() -> None:
    config = registry_config("vqgan_imagenet_f16_16384")
    model = build_vqgan(config, device="meta")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # Key names and shapes as they appear in the published last.ckpt.
    real = {
        "encoder.conv_in.weight": (128, 3, 3, 3),
        "encoder.down.0.block.0.norm1.weight": (128,),
        "encoder.down.2.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "encoder.down.3.downsample.conv.weight": (256, 256, 3, 3),
        "encoder.down.4.attn.1.proj_out.weight": (512, 512, 1, 1),
        "encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "encoder.conv_out.weight": (256, 512, 3, 3),
        "quant_conv.weight": (256, 256, 1, 1),
        "quantize.embedding.weight": (16384, 256),
        "post_quant_conv.weight": (256, 256, 1, 1),
        "decoder.conv_in.weight": (512, 256, 3, 3),
        "decoder.mid.block_2.conv2.weight": (512, 512, 3, 3),
        "decoder.up.4.attn.2.k.weight": (512, 512, 1, 1),
        "decoder.up.4.upsample.conv.weight": (512, 512, 3, 3),
        "decoder.up.3.block.0.nin_shortcut.weight": (256, 512, 1, 1),
        "decoder.up.0.block.2.conv2.weight": (128, 128, 3, 3),
        "decoder.conv_out.weight": (3, 128, 3, 3),
    }
    for key, shape in real.items():
        assert shapes[key] == shape, key
    assert not any(k.startswith("encoder.down.4.downsample") for k in shapes)
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    state["loss.discriminator.main.0.weight"] = torch.empty(64, 3, 4, 4, device="meta")
    state["loss.perceptual_loss.net.slice1.0.weight"] = torch.empty(64, 3, 3, 3, device="meta")
    load_weights(model, state, source="imagenet-16384-shaped")
    decoder_only = build_vqgan(config, device="meta", encoder=False)
    load_weights(decoder_only, state)
    assert decoder_only.encoder is None
    gumbel = build_vqgan(registry_config("vqgan_gumbel_openimages_f8_8192"), device="meta")
    assert tuple(gumbel.codebook.shape) == (8192, 256) and gumbel.factor == 8
    assert tuple(gumbel.state_dict()["quantize.proj.weight"].shape) == (8192, 256, 1, 1)


# -- latents and sizes ----------------------------------------------------------------


def test_vector_quantize_snaps_with_straight_through_gradient() -> None:
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 3.0]])
    z = torch.tensor([[0.9, 1.2], [-1.0, 2.0]]).T.reshape(1, 2, 1, 2).requires_grad_(True)
    z_q = vector_quantize(z, codebook)
    assert torch.equal(z_q.detach().reshape(2, 2).T, torch.tensor([[1.0, 1.0], [-2.0, 3.0]]))
    z_q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_size_error_names_nearest_valid_sizes() -> None:
    assert nearest_valid_sizes(500, 512, 16) == [(496, 512), (512, 512)]
    with pytest.raises(RecipeError) as err:
        check_size(500, 300, 16, "vqgan_imagenet_f16_16384")
    message = str(err.value)
    assert "multiples of 16" in message and "vqgan_imagenet_f16_16384" in message
    for size in ("[496, 304]", "[496, 288]", "[512, 304]", "[512, 288]"):
        assert size in message
    assert err.value.exit_code == 2
    check_size(512, 288, 16, "ok")


def test_generator_size_error_comes_before_any_download(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXGEN_OFFLINE", "1")  # an attempt to fetch would be a WeightsError
    with pytest.raises(RecipeError, match=r"\[512, 512\]"):
        _generator({"model": "vqgan_imagenet_f16_16384"}, tiny_context(500, 510))


def test_generator_size_error_with_own_files(tiny: tuple[Path, Path]) -> None:
    ctx = tiny_context(30, 32)
    with pytest.raises(RecipeError, match=r"\[28, 32\], \[32, 32\]"):
        _generator({"config": str(tiny[0]), "checkpoint": str(tiny[1])}, ctx)


# -- the generator --------------------------------------------------------------------


def test_generator_renders_and_clamps(tiny: tuple[Path, Path]) -> None:
    ctx = tiny_context(32, 24)
    gen = _generator({"config": str(tiny[0]), "checkpoint": str(tiny[1])}, ctx)
    assert isinstance(gen, Generator) and gen.name == "vqgan"
    assert gen.z.shape == (1, 8, 24 // TINY_FACTOR, 32 // TINY_FACTOR)
    assert [name for name, _ in gen.named_parameters()] == ["z"]  # the network is frozen
    assert list(gen.state_dict()) == ["z"]
    codebook = gen.vqgan.codebook
    rows = gen.z.detach().permute(0, 2, 3, 1).reshape(-1, 8)
    assert all(any(torch.equal(r, c) for c in codebook) for r in rows)  # random codes
    image = gen()
    assert image.shape == (1, 3, 24, 32) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    image.mean().backward()
    assert gen.z.grad is not None and gen.z.grad.abs().sum() > 0
    with torch.no_grad():
        gen.z.mul_(100)
    gen.post_step()
    assert torch.all(gen.z <= gen.z_max) and torch.all(gen.z >= gen.z_min)
    assert torch.equal(gen.z_max[0, :, 0, 0], codebook.amax(0))


def test_noise_init(tiny: tuple[Path, Path]) -> None:
    gen = _generator({"config": str(tiny[0]), "checkpoint": str(tiny[1]), "init": "noise"})
    assert gen().shape == (1, 3, 32, 32)
    rows = gen.z.detach().permute(0, 2, 3, 1).reshape(-1, 8)
    assert not any(torch.equal(rows[0], c) for c in gen.vqgan.codebook)


def test_init_image_round_trips(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    from pixgen.fileio import load_image, save_png

    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    picture = torch.stack([x, y, 1 - x * y])[None]
    save_png(tmp_path / "init.png", picture)
    gen = _generator(
        {
            "config": str(tiny[0]),
            "checkpoint": str(tiny[1]),
            "init_image": str(tmp_path / "init.png"),
        }
    )
    model = gen.vqgan
    loaded = load_image(tmp_path / "init.png")
    expected = model.decode(model.encode(loaded)).add(1).div(2).clamp(0, 1)
    with torch.no_grad():
        first = gen()
    assert torch.allclose(first, expected, atol=1e-5)
    # The engine's hook does the same from a tensor (resized to the run's size).
    gen.init_from_image(torch.nn.functional.interpolate(loaded, size=(16, 16)))
    assert gen.z.shape == (1, 8, 8, 8)


def test_gumbel_model_uses_quantize_embed(tmp_path: Path) -> None:
    config, ckpt = write_tiny_vqgan(tmp_path, gumbel=True)
    gen = _generator({"config": str(config), "checkpoint": str(ckpt)})
    assert gen.vqgan.codebook is gen.vqgan.quantize.embed.weight
    assert gen().shape == (1, 3, 32, 32)
    image = torch.rand(1, 3, 32, 32)
    gen.init_from_image(image)
    rows = gen.z.detach().permute(0, 2, 3, 1).reshape(-1, 8)
    assert all(any(torch.equal(r, c) for c in gen.vqgan.codebook) for r in rows)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"config": "model.yaml"}, "config and checkpoint go together"),
        ({"init": "image"}, "init: image needs init_image"),
        ({"model": "x", "config": "a", "checkpoint": "b"}, "either model or config"),
        ({"colour": 3}, "Extra inputs"),
    ],
)
def test_options_are_validated(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VQGANGenerator.Options.model_validate(options, context={"check_files": False})


def test_named_model_is_fetched_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _home: Path
) -> None:
    root = tmp_path / "www"
    write_tiny_vqgan(root / "tiny")
    with serve(root) as server:
        monkeypatch.setenv(
            "PIXGEN_VQGAN_REGISTRY", str(write_registry(tmp_path / "r.yaml", server))
        )
        with pytest.raises(WeightsError, match="pixgen models fetch tiny_vqgan"):
            _generator({"model": "tiny_vqgan"}, tiny_context(offline=True))
        assert server.requests == []
        gen = _generator({"model": "tiny_vqgan"}, tiny_context())
        assert gen().shape == (1, 3, 32, 32)
        fetched = len(server.requests)
        _generator({"model": "tiny_vqgan"}, tiny_context(offline=True))  # now cached
        assert len(server.requests) == fetched
    assert (_home / "vqgan" / "tiny_vqgan" / "last.ckpt").is_file()


def test_unknown_model_name(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not a VQGAN model pixgen knows"):
        _generator({"model": "vqgan_imagenet_f16_9"})


def test_registry_is_data_with_anchored_sources() -> None:
    from pixgen.models.vqgan import load_registry

    registry = load_registry()
    for name in (
        "vqgan_imagenet_f16_1024",
        "vqgan_imagenet_f16_16384",
        "wikiart_16384",
        "vqgan_gumbel_openimages_f8_8192",
    ):
        entry = registry[name]
        assert entry.checkpoint.urls and entry.config.urls
        registry_config(name)
    assert "heibox.uni-heidelberg.de" in registry["vqgan_imagenet_f16_16384"].checkpoint.urls[0]
    assert registry_config("vqgan_imagenet_f16_1024").n_embed == 1024


@pytest.mark.parametrize("recipe", ["vqgan-lighthouse.yaml", "vqgan-wikiart.yaml"])
def test_recipes_name_registered_models(recipe: str) -> None:
    data = yaml.safe_load((Path(__file__).parent.parent / "recipes" / recipe).read_text())
    generator = data["generator"]
    assert generator["use"] == "vqgan"
    VQGANGenerator.Options.model_validate(
        {k: v for k, v in generator.items() if k != "use"}, context={"check_files": False}
    )
    config = registry_config(generator["model"])
    check_size(*data["size"], config.factor, generator["model"])


def test_lightning_checkpoint_helper_pickles_unimportable_class(tmp_path: Path) -> None:
    state = tiny_state_dict(tiny_config())
    path = lightning_checkpoint(state, tmp_path / "x.ckpt")
    found = torch.serialization.get_unsafe_globals_in_checkpoint(path)  # static scan
    assert found == ["pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"]
    assert set(read_checkpoint(path)) == set(state)


def test_static_scan_catches_corrupt_files(tmp_path: Path, tiny: tuple[Path, Path]) -> None:
    from pixgen.models.vqgan import check_checkpoint

    data = tiny[1].read_bytes()
    for name, payload in (("cut.ckpt", data[: len(data) // 2]), ("html.ckpt", b"<html>")):
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(WeightsError, match="truncated or corrupt"):
            check_checkpoint(tmp_path / name)
    _, good = write_tiny_vqgan(tmp_path / "st", safetensors=True)
    check_checkpoint(good)
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        check_checkpoint(tmp_path / "cut.safetensors")
    check_checkpoint(tiny[1])


def test_tiny_model_under_a_registry_name_runs_offline(_home: Path) -> None:
    from vqgan_fixtures import place_tiny_vqgan_in_cache

    folder = place_tiny_vqgan_in_cache("vqgan_imagenet_f16_16384")
    assert folder == _home / "vqgan" / "vqgan_imagenet_f16_16384"
    gen = _generator({"model": "vqgan_imagenet_f16_16384"}, tiny_context(offline=True))
    assert gen().shape == (1, 3, 32, 32)
