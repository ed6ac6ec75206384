"""Does inductor give the compiled VQGAN decoder channels_last (NHWC) convolutions?

    python benchmarks/decoder_layout.py --size 512

Inductor decides per graph (``GraphLowering.decide_layout_opt``). In pixgen the decoder's
graph is a training graph (the gradient flows through it to the latents), and for those
the heuristic keeps NCHW as soon as one 3x3 convolution narrows the channels by half or
more. This script traces the real f16-16384 decoder on the meta device (no weights, no
GPU, a second or two) and prints the decision for an inference and a training graph,
with the convolutions that decide it. ``speed: {conv_layout: channels_last}`` forces NHWC.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    args = parser.parse_args(argv)

    from torch._inductor.graph import GraphLowering
    from torch.fx.experimental.proxy_tensor import make_fx

    from pixgen.models.vqgan import build_vqgan, parse_config

    config = parse_config(bench_step.f16_16384_model_yaml())
    vqgan = build_vqgan(config, device="meta", dtype=torch.bfloat16, encoder=False)
    narrowing = sorted(
        {
            (conv.in_channels, conv.out_channels)
            for conv in vqgan.modules()
            if isinstance(conv, torch.nn.Conv2d)
            and conv.kernel_size[0] > 1
            and conv.out_channels * 2 <= conv.in_channels
        },
        reverse=True,
    )
    side = args.size // config.factor
    z = torch.empty(1, config.embed_dim, side, side, dtype=torch.bfloat16, device="meta")
    graph = make_fx(lambda latents: vqgan.decode(latents))(z)
    # The heuristic's CPU shortcut (always NHWC with mkldnn) does not apply to meta tensors,
    # so this is the decision a CUDA graph gets.
    for kind, is_inference in (("inference", True), ("training", False)):
        nhwc = GraphLowering.decide_layout_opt(graph, is_inference=is_inference)
        print(f"{kind} graph ({args.size}²): {'NHWC (channels_last)' if nhwc else 'NCHW'}")
    print("3x3 convolutions that narrow the channels by half or more (in -> out):")
    print("  " + ", ".join(f"{a} -> {b}" for a, b in narrowing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
