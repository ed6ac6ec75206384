"""Train ``pixgen/shapes`` from scratch on generated, captioned shapes.

    python -m tools.shapes.train --device cuda --seed 0 --minutes 4 --batch 512 --out DIR

Contrastive loss as in CLIP (symmetric cross-entropy, learnable temperature), except that
every image/caption pair that truly matches counts as a positive ("a red circle" fits all
red circles of the batch). AdamW, linear warm-up then cosine decay, bf16 autocast on CUDA.

The run fits a wall-clock budget (``--minutes``, evaluation included). With ``--steps 0``
(the default) the step count is fixed after the warm-up from the measured speed and
printed; rerunning with ``--steps N --warmup W`` and enough minutes repeats the run
exactly (same seed, same data, same schedule; bitwise only on the same hardware).
``--init FILE`` fine-tunes a saved model instead (how the shipped model's second stage,
``--adv-eps 1``, was made). Weights are saved every minute, on SIGTERM/Ctrl-C and at the
end, then evaluated: ``DIR/shapes.safetensors``, ``DIR/shapes.json``, ``DIR/metrics.json``.
"""

from __future__ import annotations

import time

_T0 = time.monotonic()  # the budget counts from here, imports included

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pixgen.spectrum import spectrum_scale  # noqa: E402
from tools.shapes import data as D  # noqa: E402
from tools.shapes.evaluate import evaluate, format_table, resolve_device  # noqa: E402
from tools.shapes.model import (  # noqa: E402
    CONTEXT_LENGTH,
    SHAPES_MODEL_CONFIG,
    VIT_VISION_CFG,
    build_model,
    config_beside,
    input_size,
    load_weights,
    normalize,
    save_weights,
)

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the temperature at 100
# open_clip initialises the ViT's position embedding at width**-0.5 (~0.07) against patch
# embeddings of magnitude ~1; at this data size the tower then never learns where things
# are (position accuracy stayed at chance after 4,445 CPU steps). Ten times larger, it
# learns positions within a few hundred steps.
POS_EMBED_INIT_GAIN = 10.0


@torch.no_grad()
def boost_position_embedding(visual: torch.nn.Module) -> None:
    """Scale the tower's position embedding by ``POS_EMBED_INIT_GAIN``: the ViT's own, or
    the attention pool's of a ModifiedResNet (same faint init, same cure)."""
    table = getattr(visual, "positional_embedding", None)
    if table is None:
        table = visual.attnpool.positional_embedding
    table.mul_(POS_EMBED_INIT_GAIN)


class AttributeHeads(torch.nn.Module):
    """Linear classifiers of the first object's colour, shape, size and position and of the
    background colour, read from the (unnormalised) image embedding. Training aid only:
    they are not part of the saved model."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.heads = torch.nn.ModuleDict(
            {
                "colour": torch.nn.Linear(dim, len(D.COLOURS)),
                "shape": torch.nn.Linear(dim, len(D.SHAPES)),
                "size": torch.nn.Linear(dim, len(D.SIZES)),
                "pos": torch.nn.Linear(dim, len(D.POSITIONS)),
                "bg_colour": torch.nn.Linear(dim, len(D.COLOURS)),
            }
        )

    def forward(self, features: torch.Tensor, attrs: D.Attributes) -> torch.Tensor:
        loss = features.new_zeros(())
        for name, head in self.heads.items():
            target = getattr(attrs, name)
            target = target[:, 0] if target.ndim == 2 else target
            loss = loss + F.cross_entropy(head(features), target)
        return loss / len(self.heads)


def batch_loss(
    model: torch.nn.Module,
    aux: AttributeHeads | None,
    aux_weight: float,
    images: torch.Tensor,
    *,
    txt: torch.Tensor,
    match: torch.Tensor,
    attrs: D.Attributes,
    size: int,
) -> torch.Tensor:
    """The training objective on ``images`` against the batch's encoded captions ``txt``."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=images.is_cuda):
        img = model.encode_image(normalize(images, size)).float()
    loss = contrastive_loss(F.normalize(img, dim=-1), txt.float(), model.logit_scale.exp(), match)
    if aux is not None:
        loss = loss + aux_weight * aux(img, attrs)
    return loss


def _l2(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))


class PerturbationSpace:
    """Where adversarial changes are drawn: ``pixels`` (each pixel free), ``cells:N``
    (N x N blocks of constant colour, the ``pixel`` generator's cells) or ``fft:D`` (a
    spectrum scaled by 1/f^D, the ``image`` generator's Fourier parameterisation). A model
    made robust to the changes a painter can make follows that painter's gradients better
    than one made robust to pixel-fine changes, and keeps more of its fine detail (shape).
    ``A+B`` takes turns: one training step draws in A, the next in B."""

    def __init__(self, spec: str = "pixels") -> None:
        self.spec = spec
        self._turn = 0
        if "+" in spec:
            self.kind, self.value = "turns", 0.0
            self.parts = [PerturbationSpace(part) for part in spec.split("+")]
            return
        self.parts = [self]
        kind, _, value = spec.partition(":")
        try:
            number = float(value) if value else None
        except ValueError:
            number = None
        if kind == "pixels" and not value:
            self.kind, self.value = kind, 0.0
        elif kind in ("cells", "fft") and number is not None and number >= 0:
            self.kind, self.value = kind, number
            if kind == "cells" and (number != int(number) or number < 1):
                raise ValueError(f"cells:N needs a whole number of cells >= 1, not {value!r}")
        else:
            raise ValueError(
                f"expected pixels, cells:N, fft:DECAY or several joined by +, not {spec!r}"
            )
        self._scales: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def next_space(self) -> PerturbationSpace:
        """The space this attack draws in: this one, or the next of its turns."""
        part = self.parts[self._turn % len(self.parts)]
        self._turn += 1
        return part

    def sample(self, n: int, c: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Random coordinates of ``n`` changes (not yet scaled)."""
        if self.kind == "turns":
            raise TypeError(f"{self.spec!r} takes turns: draw in its next_space()")
        if self.kind == "cells":
            k = int(self.value)
            return torch.randn(n, c, k, k, device=device)
        if self.kind == "fft":
            return torch.randn(n, c, h, w // 2 + 1, 2, device=device)
        return torch.randn(n, c, h, w, device=device)

    def expand(self, coords: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The pixel-space change ``[n, c, h, w]`` the coordinates stand for (linear)."""
        if self.kind == "cells":
            return F.interpolate(coords, size=(h, w), mode="nearest")
        if self.kind == "fft":
            # The image generator's spectrum, without its step-size normalisation (the
            # caller sets the length); computed once per size, not three times a step.
            key = (h, w, coords.device)
            if key not in self._scales:
                self._scales[key] = spectrum_scale(h, w, self.value, coords.device)
            spectrum = torch.view_as_complex(coords.contiguous()) * self._scales[key]
            return torch.fft.irfft2(spectrum, s=(h, w), norm="ortho")
        return coords


def perturbation_space(spec: str) -> PerturbationSpace:
    """``--adv-space``'s parser: a malformed value is a usage error with the reason."""
    try:
        return PerturbationSpace(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def adversarial_images(
    images: torch.Tensor,
    eps: float,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    space: PerturbationSpace | None = None,
) -> torch.Tensor:
    """One-step L2 attack with a random start ("fast adversarial training", Wong et al.
    2020): each image moves within radius ``eps`` (pixel units, [0, 1] range) in the
    direction of ``space`` that raises ``loss_fn``. Costs one extra forward and backward
    of the image tower."""
    space = (space or PerturbationSpace()).next_space()
    n, c, h, w = images.shape
    coords = space.sample(n, c, h, w, images.device).requires_grad_(True)
    radius = eps * torch.rand(n, device=images.device).view(-1, 1, 1, 1)
    # One expansion serves both: the start is scaled in pixel space (expand is linear), and
    # the per-image scale leaves the gradient's direction in coordinates unchanged.
    unit = space.expand(coords, h, w)
    delta = unit * (radius / _l2(unit.detach()))
    (grad,) = torch.autograd.grad(loss_fn((images + delta).clamp(0, 1)), coords)
    step = space.expand(grad, h, w)
    delta = delta.detach() + 1.25 * eps * step / _l2(step)
    delta = delta * (eps / _l2(delta)).clamp(max=1.0)  # back onto the ball
    return (images + delta).clamp(0, 1).detach()


class _Stop(Exception):
    """Raised by the SIGTERM handler so the loop ends through the save path."""


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", flush=True)


def contrastive_loss(
    img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, match: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE with multi-positive targets ``match`` ``[B_img, B_txt]``."""
    logits = scale * img @ txt.T
    m = match.float()
    i2t = -(m / m.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    t2i = -(m / m.sum(0, keepdim=True) * F.log_softmax(logits, dim=0)).sum(0).mean()
    return (i2t + t2i) / 2


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (as open_clip's trainer: not gains, biases, scale)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_at(step: int, base: float, warmup: int, total: int | None) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine to zero at ``total``."""
    if step < warmup or total is None:
        return base * min(1.0, (step + 1) / warmup)
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tools.shapes.train", description=__doc__.split("\n")[0]
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=4.0, help="wall-clock budget, eval included")
    p.add_argument("--steps", type=int, default=0, help="step count; 0 = fit the time budget")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (cuda 300, cpu 30)")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--two-object-prob", type=float, default=0.3)
    p.add_argument(
        "--group", type=int, default=4, help="images per hard-negative group (same colours)"
    )
    p.add_argument(
        "--aux-weight",
        type=float,
        default=0.0,
        help="weight of an auxiliary attribute-classification loss on the image embedding "
        "(0 = the CLIP loss alone); speeds up learning where and what things are on a CPU budget",
    )
    p.add_argument(
        "--adv-eps",
        type=float,
        default=0.0,
        help="train on adversarial images: each image moved by one gradient step that raises "
        "the loss (within L2 radius EPS in [0, 1] pixel units, random start); 0 = off. "
        "Robust models have gradients that look like the thing named, which is what "
        "text-guided painting follows",
    )
    p.add_argument(
        "--adv-space",
        type=perturbation_space,
        default=PerturbationSpace(),
        help="with --adv-eps: where the adversarial change is drawn: pixels (default), "
        "cells:N (N x N blocks of constant colour, as the pixel generator paints) or fft:D "
        "(a spectrum scaled by 1/f^D, as the image generator paints); A+B takes turns",
    )
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from these weights (a shapes.safetensors with its .json beside) "
        "instead of a fresh model: fine-tuning",
    )
    p.add_argument("--eval-n", type=int, default=1000, help="images per held-out eval set")
    p.add_argument("--eval-reserve", type=float, default=None, help="seconds kept for eval")
    p.add_argument("--log-every", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("outputs/shapes"))
    p.add_argument(
        "--config",
        default=None,
        help="model config instead of the shipped one (a ModifiedResNet vision tower): "
        "'vit' (the first shipped model's ViT tower), a JSON file or inline JSON "
        "(open_clip's model-config format)",
    )
    return p.parse_args(argv)


def model_config(arg: str | None) -> dict[str, Any]:
    if arg is None or arg == "resnet":
        return SHAPES_MODEL_CONFIG
    if arg == "vit":
        return {**SHAPES_MODEL_CONFIG, "vision_cfg": VIT_VISION_CFG}
    text = arg if arg.lstrip().startswith("{") else Path(arg).read_text()
    return json.loads(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    warmup = args.warmup if args.warmup is not None else (300 if cuda else 30)
    if args.steps:
        warmup = max(1, min(warmup, args.steps // 5))
    log_every = args.log_every or (100 if cuda else 10)
    reserve = args.eval_reserve if args.eval_reserve is not None else (30.0 if cuda else 40.0)
    deadline = _T0 + args.minutes * 60 - reserve
    weights_path = args.out / "shapes.safetensors"

    torch.manual_seed(args.seed)
    if cuda:
        torch.set_float32_matmul_precision("high")  # TF32 for the few fp32 matmuls
    if args.init is not None:
        if not args.init.is_file():
            print(f"error: --init: no weights at {args.init}", file=sys.stderr)
            return 2
        config = config_beside(args.init) or SHAPES_MODEL_CONFIG  # saved as it was loaded
        model = load_weights(args.init)
    else:
        config = model_config(args.config)
        model = build_model(config)
        boost_position_embedding(model.visual)
    model = model.to(device).train()
    size = input_size(model)
    n_params = sum(p.numel() for p in model.parameters())
    aux = AttributeHeads(model.visual.output_dim).to(device) if args.aux_weight else None
    groups = param_groups(model, args.weight_decay)
    if aux is not None:
        groups.append({"params": list(aux.parameters()), "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    tokenizer = D.CaptionTokenizer(CONTEXT_LENGTH)
    data_gen = torch.Generator()
    data_gen.manual_seed(args.seed)
    log(
        f"pixgen/shapes: {n_params / 1e6:.2f}M params on {device}"
        f"{' (' + torch.cuda.get_device_name(device) + ')' if cuda else ''}, batch {args.batch}, "
        f"torch {torch.__version__}, budget {args.minutes:g} min ({reserve:g} s kept for eval)"
    )

    def on_term(signum: int, frame: Any) -> None:
        raise _Stop(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)

    # Only the caption tokens' rows of the token embedding are saved: no other row trains.
    token_rows = tokenizer.vocabulary_ids()

    def save(step: int) -> None:
        meta = {"step": str(step), "seed": str(args.seed)}
        save_weights(model, weights_path, meta, config, token_rows)

    total: int | None = args.steps or None
    auto_steps, replanned = total is None, False
    step, stop_reason, last_save = 0, "steps", time.monotonic()
    t_rate: float | None = None
    s_rate = 0
    n_rate = 0.0
    loss_acc = torch.zeros((), device=device)
    t_log, step_log = time.monotonic(), 0
    try:
        while total is None or step < total:
            now = time.monotonic()
            if now >= deadline:
                stop_reason = "time budget"
                break
            # Fix the step count once the warm-up has measured the speed (from step 10:
            # the first steps pay for lazy initialisation).
            if step == 10:
                t_rate, s_rate = now, step
            if total is None and step == max(warmup, 20) and t_rate is not None:
                rate = (step - s_rate) / max(1e-6, now - t_rate)
                total = max(step + 1, int(step + 0.97 * rate * (deadline - now)))
                t_rate, s_rate = now, step  # later re-plans use the speed since this point
                log(
                    f"speed {rate:.2f} it/s -> {total} steps (reproduce: --steps {total} --warmup {warmup})"
                )
            lr = lr_at(step, args.lr, warmup, total)
            for group in opt.param_groups:
                group["lr"] = lr

            batch = D.sample_batch(
                args.batch,
                "train",
                seed=data_gen,
                device=device,
                two_object_prob=args.two_object_prob,
                augment_images=True,
                group_size=args.group,
            )
            tokens = tokenizer(batch.captions).to(device, non_blocking=True)
            attrs = batch.attrs.to(device)
            match = D.match_matrix(attrs, batch.claims)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                txt = model.encode_text(tokens, normalize=True)
            loss_of = partial(
                batch_loss, model, aux, args.aux_weight, match=match, attrs=attrs, size=size
            )
            images = batch.images
            if args.adv_eps > 0:
                images = adversarial_images(
                    images, args.adv_eps, partial(loss_of, txt=txt.detach()), args.adv_space
                )
            loss = loss_of(images, txt=txt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            loss_acc += loss.detach()
            step += 1

            if step % log_every == 0:
                now = time.monotonic()
                n_rate = (step - step_log) / max(1e-6, now - t_log)
                log(
                    f"step {step}/{total or '?'} loss {float(loss_acc) / (step - step_log):.4f} "
                    f"lr {lr:.2e} scale {float(model.logit_scale.detach().exp()):.1f} {n_rate:.2f} it/s"
                )
                loss_acc.zero_()
                t_log, step_log = now, step
                # The speed changed since it was measured (a shared CPU): re-plan so the
                # cosine still ends at the deadline: shorter at any time, longer only in
                # the first half (the learning rate must not jump back up late). Only
                # then is the run not exactly reproducible from the printed step count.
                if auto_steps and total is not None and t_rate is not None and step > s_rate:
                    avg_rate = (step - s_rate) / max(1e-6, now - t_rate)
                    fits = int(step + 0.97 * avg_rate * max(0.0, deadline - now))
                    if fits < 0.97 * total or (fits > 1.1 * total and step < total / 2):
                        total = max(step + 1, fits)
                        replanned = True
                        log(f"speed now {avg_rate:.2f} it/s: re-planned to {total} steps")
            if time.monotonic() - last_save > 60:
                save(step)
                last_save = time.monotonic()
    except (_Stop, KeyboardInterrupt) as exc:
        stop_reason = f"interrupted ({exc or 'Ctrl-C'})"
    finally:
        save(step)
        train_seconds = time.monotonic() - _T0
        log(f"saved {weights_path} after {step} steps ({stop_reason}), {train_seconds:.0f} s")

    if stop_reason.startswith("interrupted"):
        return 130
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    metrics = evaluate(model, device, n=args.eval_n)
    metrics.update(
        {
            "steps": step,
            "planned_steps": total,
            "replanned": replanned,
            "warmup": warmup,
            "batch": args.batch,
            "group": args.group,
            "aux_weight": args.aux_weight,
            "adv_eps": args.adv_eps,
            "adv_space": args.adv_space.spec,
            "init": str(args.init) if args.init else None,
            "lr": args.lr,
            "seed": args.seed,
            "stop_reason": stop_reason,
            "train_seconds": round(train_seconds, 1),
            "total_seconds": round(time.monotonic() - _T0, 1),
            "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "weights_bytes": weights_path.stat().st_size,
        }
    )
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(format_table(metrics), flush=True)
    log(f"done: {args.out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
