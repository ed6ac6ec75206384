"""Generator ``strokes``: CLIPDraw-style vector strokes, rasterised in pure torch.

CLIPDraw (Frans et al. 2021) paints with open cubic Bézier strokes rendered by diffvg.
diffvg is not installable from PyPI, so this generator draws the strokes with a soft
distance field instead: each curve is sampled into a polyline, every pixel finds its
distance to each stroke, and the coverage falls off smoothly across the stroke's edge.
The distance and its gradient are computed by :class:`_PolylineDistance`, which keeps
one index, one number and a direction per stroke and pixel for the backward pass,
rather than the ``[strokes, segments, H, W]`` temporaries of the search.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator
from torch.autograd.function import FunctionCtx, once_differentiable

from pixgen.colours import Colour, parse_hex
from pixgen.context import RunContext
from pixgen.hookspecs import hookimpl
from pixgen.options import PluginOptions
from pixgen.plugin import Generator

# Elements in one [strokes, segments, H, W] temporary of the nearest-segment search; the
# search holds about three at once. On the CPU small chunks that stay in the cache are
# about 2.5x faster than large ones (measured at 224², 256 strokes); on a GPU large
# chunks launch fewer kernels (64 MiB each in float32).
CHUNK_ELEMENTS = {"cpu": 2**20}
CHUNK_ELEMENTS_DEFAULT = 2**24


def _chunk(device: torch.device, per_stroke: int) -> int:
    """Strokes per chunk when one stroke needs ``per_stroke`` elements."""
    return max(1, CHUNK_ELEMENTS.get(device.type, CHUNK_ELEMENTS_DEFAULT) // per_stroke)


# Learning rates of the parameter groups relative to the recipe's lr, as CLIPDraw's
# (points 1.0, widths 0.1, colours 0.01 with Adam): points are scaled so that the
# recipe's lr is a step of about that many pixels.
WIDTH_LR = 0.1
COLOUR_LR = 0.01

# CLIPDraw starts each curve within a box of this side (a share of the image) around a
# random first point.
START_RADIUS = 0.1


def bezier_basis(segments: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """Cubic Bernstein weights at ``segments + 1`` evenly spaced t: ``[segments + 1, 4]``."""
    t = torch.linspace(0.0, 1.0, segments + 1, device=device, dtype=dtype)
    u = 1.0 - t
    return torch.stack([u**3, 3 * u * u * t, 3 * u * t * t, t**3], dim=1)


class _PolylineDistance(torch.autograd.Function):
    """Distance from every pixel centre to each polyline: ``[N, K, 2] -> [N, H, W]``.

    The gradient uses the envelope theorem: moving the nearest segment's ends A and B
    changes the distance by ``-(1 - t) u`` and ``-t u`` (t the nearest point's position
    on the segment, u the unit vector from it to the pixel), so only the nearest
    segment's index, t and u are kept for the backward pass.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, samples: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor
    ) -> torch.Tensor:
        n, k, _ = samples.shape
        segments = k - 1
        height, width = ys.numel(), xs.numel()
        starts = samples[:, :-1]
        edges = samples[:, 1:] - starts
        # A curve sampled at one point (all four control points equal) has zero-length
        # segments: t is then 0 and the distance is that to the point.
        inverse = 1.0 / edges.square().sum(-1).clamp_min(1e-12)
        sx, sy, ex, ey = starts[..., 0], starts[..., 1], edges[..., 0], edges[..., 1]
        # The edge over its squared length: t = (P - A) . E / |E|^2 in one pass.
        fx, fy = ex * inverse, ey * inverse
        options = {"device": samples.device, "dtype": samples.dtype}
        dist = torch.empty(n, height, width, **options)
        t_near = torch.empty(n, height, width, **options)
        ux = torch.empty(n, height, width, **options)
        uy = torch.empty(n, height, width, **options)
        # uint8: 8x smaller than int64 for the one tensor kept per stroke and pixel.
        index = torch.empty(n, height, width, device=samples.device, dtype=torch.uint8)
        chunk = _chunk(samples.device, segments * height * width)
        px = xs.view(1, 1, 1, width)
        py = ys.view(1, 1, height, 1)
        for lo in range(0, n, chunk):
            part = slice(lo, min(n, lo + chunk))
            # [c, S, 1, 1] views of this chunk's segments, broadcast against the pixels.
            csx, csy, cex, cey, cfx, cfy = (
                v[part, :, None, None] for v in (sx, sy, ex, ey, fx, fy)
            )
            dx = px - csx  # [c, S, 1, W]
            dy = py - csy  # [c, S, H, 1]
            # Seven passes over [c, S, H, W] and three such temporaries at most.
            t = torch.add(dx * cfx, dy * cfy).clamp_(0.0, 1.0)  # [c, S, H, W]
            rx = torch.addcmul(dx, t, cex, value=-1.0)
            ry = torch.addcmul(dy, t, cey, value=-1.0)
            d2 = rx.square_().addcmul_(ry, ry)
            del rx, ry
            nearest_d2, nearest = d2.min(dim=1)  # [c, H, W]
            del d2
            # Results go straight into the outputs' slices (out=): no extra copies.
            t_sel = t_near[part]
            torch.gather(t, 1, nearest.unsqueeze(1), out=t_sel.unsqueeze(1))
            del t
            flat = nearest.view(nearest.shape[0], -1)
            # The nearest segment's start and direction at each pixel, [c, H, W] each.
            nsx, nsy, nex, ney = (
                v[part].gather(1, flat).view(-1, height, width) for v in (sx, sy, ex, ey)
            )
            d = torch.sqrt(nearest_d2, out=dist[part])
            scale = d.clamp_min(1e-6).reciprocal_()
            # The unit vector from the nearest point to the pixel.
            ox = torch.sub(xs.view(1, 1, width), nsx).sub_(t_sel * nex)
            oy = torch.sub(ys.view(1, height, 1), nsy).sub_(t_sel * ney)
            torch.mul(ox, scale, out=ux[part])
            torch.mul(oy, scale, out=uy[part])
            index[part] = nearest
        ctx.save_for_backward(index, t_near, ux, uy)
        ctx.samples_shape = samples.shape  # type: ignore[attr-defined]
        return dist

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        index, t_near, ux, uy = ctx.saved_tensors  # type: ignore[attr-defined]
        n, k, _ = ctx.samples_shape  # type: ignore[attr-defined]
        # The negated gradient, (1 - t) g u for A and t g u for B, negated once at the end
        # on the small [N, K, 2] result rather than on every pixel.
        out = torch.zeros(2, n, k, device=grad.device, dtype=grad.dtype)
        chunk = _chunk(grad.device, 4 * grad[0].numel())
        for lo in range(0, n, chunk):
            part = slice(lo, min(n, lo + chunk))
            at = index[part].flatten(1).long()
            after = at + 1
            t = t_near[part].flatten(1)
            g = grad[part].flatten(1)
            for axis, u in enumerate((ux, uy)):
                gu = g * u[part].flatten(1)
                tgu = t * gu
                out[axis, part].scatter_add_(1, after, tgu)  # the segment's end B
                out[axis, part].scatter_add_(1, at, gu.sub_(tgu))  # and its start A
        return out.neg_().permute(1, 2, 0), None, None


def polyline_distance(samples: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Distance in pixels from each pixel centre (``xs`` [W], ``ys`` [H]) to each
    polyline ``samples`` ([N, K, 2], pixels, K - 1 <= 255 segments): ``[N, H, W]``."""
    return _PolylineDistance.apply(samples, xs, ys)  # type: ignore[no-any-return]


class _Over(torch.autograd.Function):
    """Strokes composited over the background in order, the last on top.

    A loop over the strokes, each step an ``[H, W]`` lerp: on the CPU this is an order
    of magnitude faster than the unrolled form (``alpha_i`` times a reversed cumulative
    product of ``1 - alpha``), whose flips and cumprod over ``[N, H, W]`` dominated a
    step. The backward pass keeps nothing but ``alpha``: it needs the picture below
    each stroke only projected on the incoming gradient, ``g . below_i``, which one
    forward scan of a single channel recovers.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, alpha: torch.Tensor, rgb: torch.Tensor, background: torch.Tensor
    ) -> torch.Tensor:
        _, height, width = alpha.shape
        image = background.view(3, 1, 1).expand(3, height, width).clone()
        for a, colour in zip(alpha, rgb, strict=True):
            image.addcmul_(a, colour.view(3, 1, 1) - image)  # lerp towards the stroke
        ctx.save_for_backward(alpha, rgb, background)
        return image.unsqueeze(0)

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        alpha, rgb, background = ctx.saved_tensors  # type: ignore[attr-defined]
        g = grad[0]  # [3, H, W]
        toward = torch.einsum("chw,nc->nhw", g, rgb)  # g . colour_i at each pixel
        grad_alpha = torch.empty_like(alpha)
        below = torch.einsum("chw,c->hw", g, background)  # g . (the picture below stroke 0)
        for i, a in enumerate(alpha):
            grad_alpha[i] = below
            below = below.addcmul_(a, toward[i] - below)
        # Top down: `through` is how much of stroke i's result reaches the final picture.
        through = torch.ones_like(below)
        shown = torch.empty_like(alpha)  # alpha_i times `through`: stroke i's weight
        for i in range(alpha.shape[0] - 1, -1, -1):
            torch.mul(through, toward[i] - grad_alpha[i], out=grad_alpha[i])
            torch.mul(through, alpha[i], out=shown[i])
            through.sub_(shown[i])  # through * (1 - alpha_i)
        grad_rgb = torch.einsum("nhw,chw->nc", shown, g)
        grad_background = torch.einsum("hw,chw->c", through, g)
        return grad_alpha, grad_rgb, grad_background


def composite(alpha: torch.Tensor, rgb: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Strokes over the background in order (the last on top): ``alpha`` [N, H, W],
    ``rgb`` [N, 3], ``background`` [3] -> ``[1, 3, H, W]``."""
    return _Over.apply(alpha, rgb, background)  # type: ignore[no-any-return]


class StrokesGenerator(Generator):
    """CLIPDraw-style vector strokes: cubic Bézier curves with a width and an RGBA colour each.

    As in CLIPDraw, the optimiser's lr is a control point's step in pixels (use about
    1.0); widths learn at 0.1x and colours at 0.01x of it. The svg output writes the
    strokes as final.svg.
    """

    name = "strokes"

    class Options(PluginOptions):
        strokes: int = Field(128, ge=1, le=2048, description="number of strokes")
        segments: int = Field(
            8,
            ge=1,
            le=64,
            description="straight pieces each curve is drawn with (more: smoother curves, slower)",
        )
        width: float = Field(
            2.0,
            gt=0,
            le=512,
            description="starting width of every stroke in pixels (clamped into "
            "[min_width, max_width])",
        )
        min_width: float = Field(
            1.0, gt=0, le=512, description="narrowest a stroke may get, in pixels"
        )
        max_width: float | None = Field(
            None,
            gt=0,
            le=512,
            description="widest a stroke may get, in pixels; default 6% of the shorter side "
            "(13 px at 224²), at least min_width",
        )
        opacity: tuple[float, float] = Field(
            (0.0, 1.0),
            description="range of each stroke's alpha, learned from a random start inside "
            "it; equal bounds fix it ([1, 1]: opaque strokes)",
        )
        background: Colour = Field(
            "#ffffff",
            description='canvas colour under the strokes, in quotes ("#ffffff": a bare # '
            "starts a YAML comment)",
        )
        softness: float = Field(
            1.0,
            gt=0,
            le=64,
            description="width in pixels of a stroke's soft edge (its coverage falls as "
            "steeply as a linear ramp this wide); wider edges pass gradients further",
        )

        @field_validator("opacity")
        @classmethod
        def _opacity_range(cls, value: tuple[float, float]) -> tuple[float, float]:
            low, high = value
            if not 0 <= low <= high <= 1:
                raise ValueError("opacity is [low, high] with 0 <= low <= high <= 1")
            return value

        @model_validator(mode="after")
        def _width_range(self) -> StrokesGenerator.Options:
            if self.max_width is not None and self.max_width < self.min_width:
                raise ValueError(
                    f"max_width ({self.max_width}) is below min_width ({self.min_width})"
                )
            return self

    options: Options

    def __init__(self, options: Options, ctx: RunContext):
        super().__init__(options, ctx)
        n, device = options.strokes, ctx.device
        self.width_range = (options.min_width, self._max_width())
        # CLIPDraw's start: a random first point, the next three each within a small box
        # around the previous one, so every stroke begins as a short squiggle.
        first = torch.rand(n, 1, 2)
        steps = (torch.rand(n, 3, 2) - 0.5) * START_RADIUS
        points = torch.cat([first, first + steps.cumsum(1)], dim=1).clamp(0.0, 1.0)
        self.points = torch.nn.Parameter(points.to(device))  # [N, 4, 2] (x, y) in [0, 1]
        widths = torch.full((n,), options.width).clamp(*self.width_range)
        self.widths = torch.nn.Parameter(widths.to(device))  # [N] pixels
        low, high = options.opacity
        colours = torch.rand(n, 4)
        colours[:, 3] = low + (high - low) * colours[:, 3]
        self.colours = torch.nn.Parameter(colours.to(device))  # [N, 4] RGBA in [0, 1]
        self.register_buffer(
            "background", torch.tensor(parse_hex(options.background), device=device)
        )
        self.register_buffer("basis", bezier_basis(options.segments, device, torch.float32))
        self.register_buffer(
            "scale", torch.tensor([ctx.width, ctx.height], device=device, dtype=torch.float32)
        )
        self.register_buffer("xs", torch.arange(ctx.width, device=device) + 0.5)
        self.register_buffer("ys", torch.arange(ctx.height, device=device) + 0.5)

    def _max_width(self) -> float:
        """The widest a stroke may get, in pixels."""
        if self.options.max_width is not None:
            return self.options.max_width
        return max(self.options.min_width, 0.06 * min(self.ctx.width, self.ctx.height))

    def forward(self) -> torch.Tensor:
        device = self.ctx.device.type
        # Pixel coordinates need float32: under bf16 autocast (8 bits of mantissa) a point
        # at x = 200 could only sit on every other pixel.
        no_autocast = (
            torch.autocast(device, enabled=False)
            if device in ("cuda", "cpu", "mps")
            else contextlib.nullcontext()
        )
        with no_autocast:
            pixels = self.points.float() * self.scale  # [N, 4, 2]
            samples = torch.einsum("kc,ncd->nkd", self.basis, pixels)  # [N, S + 1, 2]
            dist = polyline_distance(samples, self.xs, self.ys)  # [N, H, W]
            # A sigmoid edge with the slope of a linear ramp `softness` pixels wide:
            # sigmoid'(0) is 1/4.
            edge = (self.widths.float().view(-1, 1, 1) / 2 - dist) * (4.0 / self.options.softness)
            colours = self.colours.float()
            alpha = torch.sigmoid(edge) * colours[:, 3].view(-1, 1, 1)
            image = composite(alpha, colours[:, :3], self.background)
        return image.clamp(0.0, 1.0)

    @torch.no_grad()
    def post_step(self) -> None:
        self.points.clamp_(0.0, 1.0)
        self.widths.clamp_(*self.width_range)
        self.colours[:, :3].clamp_(0.0, 1.0)
        self.colours[:, 3].clamp_(*self.options.opacity)

    def parameter_groups(self) -> list[dict[str, Any]]:
        lr = self.ctx.recipe.optimizer.lr
        return [
            # Points live in [0, 1]: dividing by the longer side makes the lr a step
            # in pixels, as CLIPDraw's points (1.0 there) are in pixels.
            {"params": [self.points], "lr": lr / max(self.ctx.width, self.ctx.height)},
            {"params": [self.widths], "lr": lr * WIDTH_LR},
            {"params": [self.colours], "lr": lr * COLOUR_LR},
        ]

    def to_svg(self) -> str:
        """The strokes as an SVG document of the run's size (waits for the device)."""
        w, h = self.ctx.width, self.ctx.height
        points = (self.points.detach().float() * self.scale).cpu().tolist()
        widths = self.widths.detach().float().cpu().tolist()
        colours = self.colours.detach().float().clamp(0.0, 1.0).cpu().tolist()
        bg = "#" + "".join(f"{round(c * 255):02x}" for c in parse_hex(self.options.background))
        lines = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}">',
            f'<rect width="{w}" height="{h}" fill="{bg}"/>',
        ]
        for (p0, p1, p2, p3), width, (r, g, b, a) in zip(points, widths, colours, strict=True):
            d = (
                f"M {p0[0]:.2f} {p0[1]:.2f} C {p1[0]:.2f} {p1[1]:.2f}, "
                f"{p2[0]:.2f} {p2[1]:.2f}, {p3[0]:.2f} {p3[1]:.2f}"
            )
            rgb = f"rgb({round(r * 255)},{round(g * 255)},{round(b * 255)})"
            lines.append(
                f'<path d="{d}" stroke="{rgb}" stroke-opacity="{a:.3f}" '
                f'stroke-width="{width:.2f}" fill="none" stroke-linecap="round" '
                'stroke-linejoin="round"/>'
            )
        lines.append("</svg>")
        return "\n".join(lines) + "\n"


@hookimpl
def register_generators(register):  # type: ignore[no-untyped-def]
    register(StrokesGenerator)
