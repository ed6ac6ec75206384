"""Generator ``vqgan``: taming-transformers VQGAN latents, as in the canonical VQGAN+CLIP loop.

The optimised parameter is a continuous latent grid ``z``; each render snaps it to the
nearest codebook vectors with a straight-through gradient, decodes, and maps [-1, 1]
to [0, 1] with a clamp whose gradient survives outside the range. After every step
``z`` is clamped to the codebook's per-channel range (``post_step``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from pixgen.context import RunContext
from pixgen.fileio import load_image
from pixgen.hookspecs import hookimpl
from pixgen.models.vqgan import (
    DEFAULT_MODEL,
    VQGAN,
    check_size,
    clamp_with_grad,
    load_vqgan,
    read_config,
    vector_quantize,
    vqgan_weights,
)
from pixgen.options import InputFile, PluginOptions
from pixgen.plugin import Generator


class VQGANGenerator(Generator):
    """VQGAN latents snapped to the codebook (taming-transformers), as in VQGAN+CLIP."""

    name = "vqgan"

    class Options(PluginOptions):
        model: str | None = Field(
            None,
            description=f"named model (see `pixgen models list`); default {DEFAULT_MODEL} "
            "unless config and checkpoint are given",
        )
        config: InputFile | None = Field(
            None, description="taming model.yaml of your own VQGAN (with checkpoint)"
        )
        checkpoint: InputFile | None = Field(
            None, description="its last.ckpt (Lightning format) or .safetensors (with config)"
        )
        init: Literal["random_codes", "noise", "image"] | None = Field(
            None,
            description="start from random codebook entries, from Gaussian noise in latent "
            "space, or from init_image through the encoder; default: image when init_image "
            "is set, else random_codes",
        )
        init_image: InputFile | None = Field(
            None, description="start from this image (encoded by the VQGAN's encoder)"
        )

        @model_validator(mode="after")
        def _check(self) -> VQGANGenerator.Options:
            if (self.config is None) != (self.checkpoint is None):
                raise ValueError("config and checkpoint go together: give both or neither")
            if self.config is not None and self.model is not None:
                raise ValueError("give either model or config + checkpoint, not both")
            if self.init == "image" and self.init_image is None:
                raise ValueError("init: image needs init_image")
            if self.init_image is not None and self.init not in (None, "image"):
                raise ValueError(f"init_image is only used with init: image, not {self.init}")
            return self

    options: Options

    def __init__(self, options: Options, ctx: RunContext):
        super().__init__(options, ctx)
        device = ctx.device
        if options.config is not None and options.checkpoint is not None:
            config_path, label = Path(options.config), str(options.config)
            config = read_config(config_path)
            check_size(ctx.width, ctx.height, config.factor, label)  # before loading weights
            files = (config_path, Path(options.checkpoint))
        else:
            name = options.model or DEFAULT_MODEL
            provider = vqgan_weights()
            config = provider.config_for(name) if provider.owns(name) else None
            if config is not None:  # unknown names get their message from ensure()
                check_size(ctx.width, ctx.height, config.factor, name)  # before any download
            found = provider.ensure(name, offline=ctx.offline)
            files = (found.config, found.checkpoint)
            config = read_config(found.config)
            check_size(ctx.width, ctx.height, config.factor, name)
        dtype = ctx.model_dtype
        model = ctx.service(
            ("vqgan", str(files[0]), str(files[1]), str(device), str(dtype)),
            lambda: load_vqgan(files[0], files[1], device=device, dtype=dtype),
        )
        # Held outside the module tree on purpose: the frozen network must stay out of
        # state_dict() (resume files) and out of the optimiser's parameters.
        self.__dict__["vqgan"] = model
        codebook = model.codebook.detach().float()
        self.register_buffer("codebook_f32", codebook, persistent=False)
        self.register_buffer("codebook_sq", codebook.pow(2).sum(1), persistent=False)
        self.register_buffer("z_min", codebook.amin(0)[None, :, None, None], persistent=False)
        self.register_buffer("z_max", codebook.amax(0)[None, :, None, None], persistent=False)
        self.tokens = (ctx.height // model.factor, ctx.width // model.factor)
        # The decoder is the heaviest part of a step: the engine may compile it.
        self.__dict__["_decode"] = ctx.compile_module(self._decode_frozen, "vqgan decoder")
        init = options.init or ("image" if options.init_image is not None else "random_codes")
        self.z = torch.nn.Parameter(self._initial_z(init, codebook))
        if init == "image" and options.init_image is not None:
            self.init_from_image(load_image(options.init_image, size=(ctx.width, ctx.height)))

    vqgan: VQGAN

    def _initial_z(self, init: str, codebook: torch.Tensor) -> torch.Tensor:
        rows, cols = self.tokens
        if init == "noise":
            mean = codebook.mean(0)[None, :, None, None]
            std = codebook.std(0)[None, :, None, None]
            return (
                torch.randn(1, codebook.shape[1], rows, cols, device=codebook.device) * std + mean
            )
        # random_codes (and the placeholder for image, replaced right after)
        index = torch.randint(codebook.shape[0], (rows * cols,), device=codebook.device)
        return codebook[index].view(1, rows, cols, -1).permute(0, 3, 1, 2).contiguous()

    def _decode_frozen(self, z_q: torch.Tensor) -> torch.Tensor:
        # In the weights' own dtype with autocast off: under bf16 precision the weights
        # are bf16 already, and autocast would otherwise round-trip every GroupNorm
        # through fp32 (hundreds of casts per step).
        with torch.autocast(self.ctx.device.type, enabled=False):
            return self.vqgan.decode(z_q.to(self.vqgan.post_quant_conv.weight.dtype))

    def forward(self) -> torch.Tensor:
        # Nearest-code search in fp32 even under bf16 autocast: |z|² + |c|² - 2 z·c
        # cancels catastrophically in bf16 and would pick wrong codes.
        with torch.autocast(self.ctx.device.type, enabled=False):
            z_q = vector_quantize(self.z.float(), self.codebook_f32, self.codebook_sq)
        image = self._decode(z_q)
        return clamp_with_grad(image.float().add(1).div(2), 0.0, 1.0)

    @torch.no_grad()
    def init_from_image(self, image: torch.Tensor) -> None:
        image = image.to(self.z.device, torch.float32)
        size = (self.ctx.height, self.ctx.width)
        if tuple(image.shape[-2:]) != size:
            image = F.interpolate(image, size=size, mode="bicubic", align_corners=False)
        dtype = self.vqgan.post_quant_conv.weight.dtype
        with torch.autocast(self.ctx.device.type, enabled=False):
            z = self.vqgan.encode(image.clamp(0, 1).to(dtype))
        self.z.copy_(z.float())

    @torch.no_grad()
    def post_step(self) -> None:
        self.z.copy_(torch.maximum(torch.minimum(self.z, self.z_max), self.z_min))


@hookimpl
def register_generators(register):  # type: ignore[no-untyped-def]
    register(VQGANGenerator)
