"""Devices and precision: what ``device:`` and ``precision:`` in a recipe become."""

from __future__ import annotations

import re

import torch

from pixgen.errors import DeviceError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable explicit device is an error."""
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} was asked for, but PyTorch sees no CUDA GPU "
                f"(torch {torch.__version__}); use auto or cpu instead"
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} was asked for, but only {torch.cuda.device_count()} "
                "CUDA GPU(s) are visible"
            )
        return torch.device("cuda", index)
    if not re.fullmatch(r"cpu|mps", name):
        raise DeviceError(f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N or mps")
    if name == "mps" and not mps_ok:
        raise DeviceError("device 'mps' was asked for, but Apple's MPS is not available")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is bf16 autocast on CUDA and fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision
