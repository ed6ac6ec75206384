"""The 1/f^decay spectrum behind Fourier-parameterised images.

Used by the ``image`` generator (its ``fft`` parameterisation) and by the ``pixgen/shapes``
training tool (``tools/shapes/train.py``, outside the package), which draws adversarial
changes in the same space (``--adv-space fft:D``).
"""

from __future__ import annotations

import torch


def spectrum_scale(
    height: int, width: int, decay: float, device: torch.device | str | None = None
) -> torch.Tensor:
    """Per-frequency gain ``1 / f^decay`` of an ``rfft2`` spectrum, ``[height, width // 2 + 1]``.

    The lowest frequency is clamped to one cycle per image so the constant term stays finite.
    """
    fy = torch.fft.fftfreq(height, device=device)[:, None]
    fx = torch.fft.rfftfreq(width, device=device)[None, :]
    freq = torch.sqrt(fx * fx + fy * fy).clamp(min=1.0 / max(height, width))
    return 1.0 / freq**decay
