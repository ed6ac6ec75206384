"""How fast can a vision tower learn *shape* on the CPU? Supervised, shape labels only.

    OMP_NUM_THREADS=1 python -m benchmarks.shapes_tower_speed --tower resnet --minutes 6
    OMP_NUM_THREADS=1 python -m benchmarks.shapes_tower_speed --tower vit --minutes 8
    OMP_NUM_THREADS=1 python -m benchmarks.shapes_tower_speed --tower shipped --minutes 4 --lr 3e-4

Trains the image tower of ``pixgen/shapes`` (``vit``: the shipped architecture from
scratch; ``resnet``: the ModifiedResNet of ``train --config resnet`` from scratch;
``shipped``: the shipped weights) with a linear shape classifier on augmented training
batches, and prints shape accuracy every 100 steps on 500 training-pair images and on 500
images of held-out colour-shape pairs (never seen in training).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from tools.shapes import data as D
from tools.shapes.evaluate import DEFAULT_WEIGHTS
from tools.shapes.model import build_model, load_weights, normalize
from tools.shapes.train import boost_position_embedding, model_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tower", choices=("vit", "resnet", "shipped"), default="resnet")
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    torch.manual_seed(0)
    if args.tower == "shipped":
        model = load_weights(DEFAULT_WEIGHTS)
    else:
        model = build_model(model_config("resnet" if args.tower == "resnet" else None))
        boost_position_embedding(model.visual)
    tower = model.visual.train()
    head = torch.nn.Linear(tower.output_dim, len(D.SHAPES))
    params = [*tower.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    seen = D.sample_batch(500, "train", seed=5, two_object_prob=0.0)
    held_out = D.sample_batch(500, "test", seed=6, two_object_prob=0.0)

    def accuracy(batch: D.Batch) -> float:
        tower.eval()
        with torch.no_grad():
            pred = head(tower(normalize(batch.images))).argmax(-1)
        tower.train()
        return float((pred == batch.attrs.shape[:, 0]).float().mean())

    g = torch.Generator().manual_seed(0)
    t0, step = time.monotonic(), 0
    while time.monotonic() - t0 < args.minutes * 60:
        batch = D.sample_batch(args.batch, "train", seed=g, augment_images=True)
        loss = F.cross_entropy(head(tower(normalize(batch.images))), batch.attrs.shape[:, 0])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            print(
                f"{time.monotonic() - t0:6.0f}s step {step:5d} loss {loss.item():.3f} "
                f"shape acc: training pairs {accuracy(seen):.3f}, held-out pairs "
                f"{accuracy(held_out):.3f}",
                flush=True,
            )
    print(
        f"{args.tower}: {step} steps, training pairs {accuracy(seen):.3f}, held-out pairs {accuracy(held_out):.3f}"
    )


if __name__ == "__main__":
    main()
