"""Linear probes on ``pixgen/shapes`` image embeddings: what the image tower knows,
independently of whether the text tower has learnt the words for it.

    python -m benchmarks.shapes_probe --weights PATH

Fits one linear classifier per attribute (first object's colour, shape, position) on
3,000 training-split images and reports its accuracy on 1,000 other training-split
images. Zero-shot accuracy (``python -m tools.shapes.evaluate``) can only be high where
the probe is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tools.shapes import data as D
from tools.shapes.evaluate import DEFAULT_WEIGHTS, encode_images
from tools.shapes.model import load_weights


def probe(weights: Path, n_train: int = 3000, n_test: int = 1000) -> dict[str, float]:
    torch.manual_seed(0)
    model = load_weights(weights)
    cpu = torch.device("cpu")
    train = D.sample_batch(n_train, "train", seed=11, two_object_prob=0.0)
    test = D.sample_batch(n_test, "train", seed=12, two_object_prob=0.0)
    f_train, f_test = (
        encode_images(model, train.images, cpu),
        encode_images(model, test.images, cpu),
    )
    out = {}
    for attr in ("colour", "shape", "pos"):
        y_train, y_test = getattr(train.attrs, attr)[:, 0], getattr(test.attrs, attr)[:, 0]
        head = torch.nn.Linear(f_train.shape[1], int(y_train.max()) + 1)
        opt = torch.optim.Adam(head.parameters(), lr=0.05)
        for _ in range(300):
            loss = torch.nn.functional.cross_entropy(head(f_train * 10), y_train)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out[attr] = float((head(f_test * 10).argmax(-1) == y_test).float().mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    args = parser.parse_args()
    for attr, acc in probe(args.weights).items():
        print(f"{attr:<8} probe accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
