"""Measure ``pixgen/shapes`` on the held-out split (colour/shape pairs never seen in training).

    python -m tools.shapes.evaluate [--weights PATH] [--device auto|cpu|cuda] [--n 1000] [--json]

Zero-shot accuracy of colour, shape and position on single-object images (one prompt per
class naming that attribute alone: "a red shape", "a circle", "a shape at the left"; also
reported: CLIP-style prompt ensembles, and the same images as cropped cutouts), and text->image retrieval precision@5 over a pool of
held-out images: a retrieved image is correct when it has every attribute the query names.
For diagnosis it also prints shape accuracy on colour-shape pairs seen in training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pixgen.models.clip import BUNDLED_DIRS
from tools.shapes import data as D
from tools.shapes.model import CONTEXT_LENGTH, input_size, load_weights, normalize

DEFAULT_WEIGHTS = BUNDLED_DIRS[0] / "shapes.safetensors"  # the shipped pixgen/shapes
ACC_SEED = 20_001  # the evaluation sets are fixed: same images on every machine
POOL_SEED = 20_002
TARGETS = {"colour_acc": 0.95, "shape_acc": 0.85, "position_acc": 0.80, "retrieval_p@5": 0.90}
CHANCE = {
    "colour_acc": 1 / len(D.COLOURS),
    "shape_acc": 1 / len(D.SHAPES),
    "position_acc": 1 / len(D.POSITIONS),
}


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def encode_images(
    model: torch.nn.Module, images: torch.Tensor, device: torch.device, chunk: int = 500
) -> torch.Tensor:
    """Normalised image embeddings, fp32, ``[N, D]``."""
    out, size = [], input_size(model)
    for i in range(0, len(images), chunk):
        x = normalize(images[i : i + chunk].to(device), size)
        with _autocast(device):
            out.append(model.encode_image(x, normalize=True).float())
    return torch.nn.functional.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def encode_texts(
    model: torch.nn.Module,
    texts: list[str],
    device: torch.device,
    tokenizer: D.CaptionTokenizer | None = None,
    chunk: int = 1000,
) -> torch.Tensor:
    """Normalised text embeddings, fp32, ``[N, D]``."""
    tokenizer = tokenizer or D.CaptionTokenizer(CONTEXT_LENGTH)
    out = []
    for i in range(0, len(texts), chunk):
        tok = tokenizer(texts[i : i + chunk]).to(device)
        with _autocast(device):
            out.append(model.encode_text(tok, normalize=True).float())
    return torch.nn.functional.normalize(torch.cat(out), dim=-1)


def _class_embeddings(
    model: torch.nn.Module,
    prompts: list[list[str]],
    device: torch.device,
    tokenizer: D.CaptionTokenizer,
) -> torch.Tensor:
    """One embedding per class: the normalised mean over its prompt ensemble."""
    flat = [p for group in prompts for p in group]
    emb = encode_texts(model, flat, device, tokenizer)
    out, i = [], 0
    for group in prompts:
        out.append(emb[i : i + len(group)].mean(0))
        i += len(group)
    return torch.nn.functional.normalize(torch.stack(out), dim=-1)


def zero_shot_prompts(ensemble: bool = False) -> dict[str, list[list[str]]]:
    """Prompts per class, written with the training caption templates.

    By default one prompt per class naming that attribute alone ("a red shape",
    "a circle", "a shape at the left"): it never mentions a held-out colour-shape pair.
    ``ensemble=True`` adds the class's phrase combined with every value of the other
    attributes ("a red circle", "a red square", ...), averaged as in the CLIP paper.
    """
    n_col, n_shape = len(D.COLOURS), len(D.SHAPES)
    cols = [D.UNSET, *range(n_col)] if ensemble else [D.UNSET]
    shapes = [D.UNSET, *range(n_shape)] if ensemble else [D.UNSET]
    return {
        "colour": [[D.describe(colour=c, shape=s) for s in shapes] for c in range(n_col)],
        "shape": [[D.describe(colour=c, shape=s) for c in cols] for s in range(n_shape)],
        "position": [
            [D.describe(colour=c, shape=s, pos=p) for c in cols for s in shapes]
            for p in range(len(D.POSITIONS))
        ],
    }


def retrieval_queries() -> tuple[list[str], D.Claims, list[str]]:
    """Queries about held-out pairs: alone, with a position, a size or a background."""
    texts, rows, kinds = [], [], []

    def add(kind: str, c: int, s: int, z: int = D.UNSET, p: int = D.UNSET, b: int = D.UNSET):
        texts.append(D.describe(colour=c, shape=s, size=z, pos=p, bg=b))
        rows.append(([[c, s, z, p]], b))
        kinds.append(kind)

    for c, s in D.HELD_OUT_PAIRS:
        add("colour+shape", c, s)
        for p in range(len(D.POSITIONS)):
            add("+position", c, s, p=p)
        for z in range(len(D.SIZES)):
            add("+size", c, s, z=z)
        for b in range(len(D.COLOURS)):
            if b != c:
                add("+background", c, s, b=b)
    return texts, D.Claims.stack(rows), kinds


def eval_sets(n: int) -> tuple[D.Batch, D.Batch]:
    """The fixed held-out sets: ``n`` single-object images, and a pool of ``n`` images
    (a quarter with two objects) for retrieval. Rendered on the CPU so that every machine
    scores the very same pixels."""
    acc = D.sample_batch(n, "test", seed=ACC_SEED, device="cpu", two_object_prob=0.0)
    pool = D.sample_batch(n, "test", seed=POOL_SEED, device="cpu", two_object_prob=0.25)
    return acc, pool


def evaluate(
    model: torch.nn.Module, device: torch.device | str = "cpu", n: int = 1000, k: int = 5
) -> dict[str, Any]:
    """All held-out figures as a dict (fractions in [0, 1])."""
    t0 = time.perf_counter()
    device = torch.device(device)
    was_training = model.training
    model.eval()
    tokenizer = D.CaptionTokenizer(CONTEXT_LENGTH)
    acc_set, pool = eval_sets(n)
    out: dict[str, Any] = {"n_images": n}

    img = encode_images(model, acc_set.images, device)
    prompts = zero_shot_prompts()
    truth = {
        "colour": acc_set.attrs.colour[:, 0],
        "shape": acc_set.attrs.shape[:, 0],
        "position": acc_set.attrs.pos[:, 0],
    }
    # The same images as the optimiser's cutouts see them (crops >= 0.8 of the side,
    # some pixelated): not a target, but what guidance relies on.
    aug = D.augment(acc_set.images, torch.Generator().manual_seed(ACC_SEED + 1), seed=ACC_SEED + 2)
    img_aug = encode_images(model, aug, device)
    ensembles = zero_shot_prompts(ensemble=True)
    classes: dict[str, torch.Tensor] = {}
    for name, groups in prompts.items():
        cls = classes[name] = _class_embeddings(model, groups, device, tokenizer)
        pred = (img @ cls.T).argmax(-1).cpu()
        out[f"{name}_acc"] = float((pred == truth[name]).float().mean())
        pred = (img_aug @ cls.T).argmax(-1).cpu()
        out[f"{name}_acc_cutouts"] = float((pred == truth[name]).float().mean())
        cls = _class_embeddings(model, ensembles[name], device, tokenizer)
        pred = (img @ cls.T).argmax(-1).cpu()
        out[f"{name}_acc_ensemble"] = float((pred == truth[name]).float().mean())

    # Shape on colour-shape pairs seen in training: tells "cannot see shapes" apart from
    # "cannot compose a colour with a shape it never came with".
    seen = D.sample_batch(n, "train", seed=ACC_SEED + 3, device="cpu", two_object_prob=0.0)
    pred = (encode_images(model, seen.images, device) @ classes["shape"].T).argmax(-1).cpu()
    out["shape_acc_seen_pairs"] = float((pred == seen.attrs.shape[:, 0]).float().mean())

    texts, claims, kinds = retrieval_queries()
    relevant = D.match_matrix(pool.attrs, claims).T  # [Q, N]
    keep = relevant.sum(-1) >= k  # a query needs k right answers to be scored at k
    idx = torch.nonzero(keep).flatten().tolist()
    hits = torch.zeros(0)
    if idx:  # tiny pools (tests) may have no scorable query
        q_emb = encode_texts(model, [texts[i] for i in idx], device, tokenizer)
        p_emb = encode_images(model, pool.images, device)
        top = (q_emb @ p_emb.T).topk(k, dim=-1).indices.cpu()
        hits = relevant[idx].gather(1, top).float().mean(-1)  # [Q]
    out[f"retrieval_p@{k}"] = float(hits.mean()) if len(idx) else 0.0
    out["retrieval_queries"] = len(idx)
    by_kind: dict[str, list[float]] = {}
    for j, i in enumerate(idx):
        by_kind.setdefault(kinds[i], []).append(float(hits[j]))
    out["retrieval_by_kind"] = {kk: sum(v) / len(v) for kk, v in by_kind.items()}
    out["eval_seconds"] = round(time.perf_counter() - t0, 2)
    model.train(was_training)
    return out


def format_table(metrics: dict[str, Any]) -> str:
    """A human-readable table with targets and chance levels."""
    model = metrics.get("model", "pixgen/shapes")
    lines = [f"{model} held-out evaluation ({metrics['n_images']} images per set)"]
    lines.append(f"  {'metric':<16}{'value':>8}{'target':>9}{'chance':>9}")
    for key in ("colour_acc", "shape_acc", "position_acc", "retrieval_p@5"):
        if key not in metrics:
            continue
        target = TARGETS.get(key)
        chance = CHANCE.get(key)
        verdict = "" if target is None else ("  ok" if metrics[key] >= target else "  BELOW")
        lines.append(
            f"  {key:<16}{metrics[key]:>8.3f}"
            f"{'' if target is None else f'{target:>9.2f}'}"
            f"{'' if chance is None else f'{chance:>9.3f}'}{verdict}"
        )
    if "shape_acc_seen_pairs" in metrics:
        lines.append(
            f"  shape on colour-shape pairs seen in training: {metrics['shape_acc_seen_pairs']:.3f}"
        )
    for suffix, label in (("cutouts", "on cutout-like crops"), ("ensemble", "prompt ensembles")):
        keys = [k for k in ("colour", "shape", "position") if f"{k}_acc_{suffix}" in metrics]
        if keys:
            parts = ", ".join(f"{k} {metrics[f'{k}_acc_{suffix}']:.3f}" for k in keys)
            lines.append(f"  {label}: {parts}")
    if "retrieval_by_kind" in metrics:
        parts = ", ".join(f"{kk} {v:.3f}" for kk, v in metrics["retrieval_by_kind"].items())
        lines.append(f"  retrieval ({metrics['retrieval_queries']} queries): {parts}")
    return "\n".join(lines)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.shapes.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--weights",
        default=str(DEFAULT_WEIGHTS),
        help="a .safetensors file, or a bundled model's name (pixgen/shapes-vit)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--n", type=int, default=1000, help="images per held-out set")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    weights = Path(args.weights)
    if args.weights.startswith("pixgen/"):
        weights = DEFAULT_WEIGHTS.parent / f"{args.weights.removeprefix('pixgen/')}.safetensors"
    if not weights.exists():
        print(f"error: no weights at {weights} (pass --weights PATH)", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    model = load_weights(weights, device)
    metrics = evaluate(model, device, n=args.n)
    metrics["weights"] = str(weights)
    metrics["model"] = (
        f"pixgen/{weights.stem}" if weights.parent == DEFAULT_WEIGHTS.parent else str(weights)
    )
    print(json.dumps(metrics, indent=2) if args.json else format_table(metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
