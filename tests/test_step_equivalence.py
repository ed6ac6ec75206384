"""The engine's step computes what the canonical VQGAN+CLIP step computes.

Same weights, same latents, same crops: the loss and the gradient on z from the pixgen
engine (vqgan generator + clip loss, batched roi_align cutouts) match the reference in
benchmarks/reference.py (a Python loop of crops + adaptive average pooling). Crop sizes
are whole multiples of the model's input size, where roi_align's averaging equals
adaptive average pooling exactly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from clip_fixtures import make_tiny_clip_checkpoint
from vqgan_fixtures import write_tiny_vqgan

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_step  # noqa: E402
import reference  # noqa: E402

import pixgen.models.cutouts as cutouts_module  # noqa: E402
from pixgen.engine import Engine  # noqa: E402
from pixgen.models.clip import load_clip  # noqa: E402
from pixgen.models.vqgan import load_vqgan  # noqa: E402
from pixgen.recipe import load_recipe  # noqa: E402


def _boxes(size: int, cut: int, n: int) -> list[tuple[int, int, int]]:
    g = torch.Generator().manual_seed(5)
    boxes = []
    for _ in range(n):
        k = int(torch.randint(1, size // cut + 1, (), generator=g))
        s = k * cut
        x = int(torch.randint(0, size - s + 1, (), generator=g))
        y = int(torch.randint(0, size - s + 1, (), generator=g))
        boxes.append((x, y, s))
    return boxes


def engine_and_reference(
    tmp_path: Path,
    *,
    device: str,
    precision: str,
    size: int,
    reference_precision: str | None = None,
    vqgan_files: tuple[Path, Path],
    clip_spec: str,
    cut: int,
    n: int,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[tuple, tuple]:
    boxes = _boxes(size, cut, n)

    def fixed_boxes(height, width, cut_size, count, cut_pow, dev, dtype=torch.float32):  # type: ignore[no-untyped-def]
        rows = [[0.0, x, y, x + s, y + s] for x, y, s in boxes]
        return torch.tensor(rows, device=dev, dtype=torch.float32).to(dtype)

    monkeypatch.setattr(cutouts_module, "crop_boxes", fixed_boxes)
    recipe = {
        "name": "equiv",
        "seed": 0,
        "size": [size, size],
        "steps": 1,
        "device": device,
        "precision": precision,
        "speed": {"compile": "off"},
        "generator": {
            "use": "vqgan",
            "config": str(vqgan_files[0]),
            "checkpoint": str(vqgan_files[1]),
            "init": "random_codes",
        },
        "losses": [
            {
                "use": "clip",
                "models": [clip_spec],
                "prompts": ["a red circle"],
                "cutouts": n,
                "augment": [],
            }
        ],
    }
    loaded = load_recipe(recipe)
    engine = Engine(loaded, write_files=False)
    engine.ctx.begin_step(0)
    gen = engine.generator
    _, total, _ = engine.stepper.gradients(0)
    engine_result = (total.detach().float(), gen.z.grad.detach().float().clone())

    text = engine.losses[0].loss._embed_targets(engine.ctx, engine.losses[0].loss.models[0])
    # The reference runs on its own fp32 copies read from the same files: the engine may
    # keep frozen weights in bf16, and the canonical step keeps them in fp32.
    vq = load_vqgan(*vqgan_files, device=device, encoder=False)
    clip = load_clip(clip_spec, device, torch.float32, offline=True)
    ref = reference.ReferenceStep(
        vq.decoder,
        vq.post_quant_conv,
        vq.codebook,
        _Encoder(clip),
        text.float(),
        gen.z.detach(),
        cut_size=cut,
        cutn=n,
        precision=reference_precision or precision,
    )
    ref.make_cutouts.boxes = boxes
    ref.mean = torch.zeros(1, 3, 1, 1, device=gen.z.device)  # the encoder normalises itself
    ref.std = torch.ones(1, 3, 1, 1, device=gen.z.device)
    loss = ref.loss()
    loss.backward()
    return engine_result, (loss.detach().float(), ref.z.grad.detach().float())


class _Encoder(torch.nn.Module):
    """The shared CLIP model seen through open_clip's plain ``encode_image`` interface."""

    def __init__(self, clip):  # type: ignore[no-untyped-def]
        super().__init__()
        self.clip = clip

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(x)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


# bf16 tolerances are the GPU test's: the engine computes in bf16 with bf16 weights, the
# reference in fp32 with the files' fp32 weights.
@pytest.mark.parametrize(
    ("precision", "loss_tolerance", "grad_tolerance"),
    [("fp32", 1e-5, 1e-4), ("bf16", 3e-2, 0.15)],
)
def test_engine_step_matches_reference_on_cpu(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    precision: str,
    loss_tolerance: float,
    grad_tolerance: float,
) -> None:
    files = write_tiny_vqgan(tmp_path / "vq")
    spec = make_tiny_clip_checkpoint(tmp_path / "clip")
    (engine_loss, engine_grad), (ref_loss, ref_grad) = engine_and_reference(
        tmp_path,
        device="cpu",
        precision=precision,
        size=64,
        reference_precision="fp32",
        vqgan_files=files,
        clip_spec=spec,
        cut=32,
        n=8,
        monkeypatch=monkeypatch,
    )
    assert torch.isfinite(engine_grad).all() and ref_grad.abs().sum() > 0
    assert float(engine_loss) == pytest.approx(float(ref_loss), rel=loss_tolerance)
    assert _relative(engine_grad, ref_grad) < grad_tolerance


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_engine_step_matches_reference_full_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    """VQGAN f16-16384 + ViT-B-32 + 32 cutouts at 256²: the engine in bf16 against the
    fp32 reference, within bf16's tolerance (about 20 s on a 2-core CPU)."""
    files = bench_step.write_weights(tmp_path)  # the benchmark's random weights
    (engine_loss, engine_grad), (ref_loss, ref_grad) = engine_and_reference(
        tmp_path,
        device=device,
        precision="bf16",
        size=256,
        reference_precision="fp32",
        vqgan_files=(files["config"], files["checkpoint"]),
        clip_spec=f"ViT-B-32:{files['clip']}",
        cut=224,
        n=32,
        monkeypatch=monkeypatch,
    )
    loss_error = abs(float(engine_loss) - float(ref_loss)) / abs(float(ref_loss))
    grad_error = _relative(engine_grad, ref_grad)
    print(f"bf16 engine vs fp32 reference: loss {loss_error:.2e}, gradient {grad_error:.2e}")
    assert loss_error < 3e-2, f"loss differs by {loss_error:.2e} (gradient {grad_error:.2e})"
    assert grad_error < 0.15, f"gradient differs by {grad_error:.2e} (loss {loss_error:.2e})"
