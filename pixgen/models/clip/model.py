"""The loaded CLIP model as losses and commands use it: :class:`ClipModel`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

DEFAULT_PROMPT_TEMPLATE = "a photo of {}"  # CLIP paper's zero-shot default


def vision_input_size(model: torch.nn.Module) -> tuple[int, int]:
    """(height, width) of the images an open_clip model's vision tower takes."""
    size = getattr(model.visual, "image_size", 224)
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ClipModel:
    """A frozen open_clip model with its tokenizer and image normalisation.

    Images go in as float ``[N, 3, H, W]`` in [0, 1] at :attr:`input_size`; features come
    out L2-normalised. ``model`` is the open_clip module itself. ``prompt_template`` is how
    a bare label becomes a prompt for this model (``"a photo of {}"`` unless its config
    says otherwise).
    """

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        tokenizer: Any,
        mean: Sequence[float],
        std: Sequence[float],
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    ):
        self.name = name
        self.prompt_template = prompt_template
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        self.input_size = vision_input_size(model)
        # Read once at load time so that scoring never syncs for it.
        self.logit_scale = float(model.logit_scale.detach().float().exp().reshape(-1)[0])
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.detach().float().reshape(-1)[0])

    def __repr__(self) -> str:
        return f"ClipModel({self.name!r}, input_size={self.input_size}, device={self.device})"

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image features of ``[N, 3, h, w]`` images in [0, 1] (differentiable)."""
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        if self.dtype != torch.float32:
            # Frozen bf16 weights run purely in bf16: autocast would re-cast around every
            # LayerNorm and softmax in every step.
            with torch.autocast(x.device.type, enabled=False):
                return self.model.encode_image(x.to(self.dtype), normalize=True)
        if torch.is_autocast_enabled(x.device.type):
            return self.model.encode_image(x, normalize=True)
        return self.model.encode_image(x.to(self.dtype), normalize=True)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised float32 text features ``[len(texts), D]`` (no gradient)."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self.model.encode_text(tokens, normalize=True).float()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """A PIL image as ``[1, 3, h, w]`` in [0, 1]: shortest side resized, centre crop."""
        from pixgen.fileio import pil_to_tensor

        h, w = self.input_size
        rgb = image.convert("RGB")
        scale = max(h / rgb.height, w / rgb.width)
        size = (max(w, round(rgb.width * scale)), max(h, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - w) // 2, (size[1] - h) // 2
        return pil_to_tensor(rgb.crop((left, top, left + w, top + h))).to(self.device)

    @torch.no_grad()
    def encode_pil(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Normalised float32 features of PIL images (no gradient)."""
        batch = torch.cat([self.preprocess(im) for im in images])
        return self.encode_image(batch).float()

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """CLIP's logits: ``logit_scale * cos`` (+ the bias of SigLIP models)."""
        out = self.logit_scale * image_features @ text_features.T
        return out + self.logit_bias if self.logit_bias is not None else out
