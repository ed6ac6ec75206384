"""Procedurally drawn, captioned shapes: the training and held-out data of ``pixgen/shapes``.

Attributes are drawn on the CPU with a seeded :class:`torch.Generator` (so a seed gives the
same batch on any machine); images are rendered with torch from signed-distance formulas
on a coordinate grid, on whatever device is asked, so data never starves a GPU.

Each caption carries a *claim*: the attributes it names. An image matches a caption when
it has every attribute the caption names; training uses that relation as soft targets
(several images in a batch may fit "a red circle") and evaluation uses it to score
retrieval.

Only torch (and the standard library) is imported here: the training script must run from
a bare checkout on ``PYTHONPATH``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

# Colours chosen far apart in RGB so that a 64-pixel model can name them reliably.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.08, 0.08),
    "orange": (1.00, 0.55, 0.00),
    "yellow": (0.98, 0.90, 0.08),
    "green": (0.08, 0.66, 0.18),
    "cyan": (0.00, 0.82, 0.88),
    "blue": (0.10, 0.22, 0.92),
    "purple": (0.55, 0.12, 0.75),
    "pink": (1.00, 0.52, 0.78),
    "white": (0.97, 0.97, 0.97),
    "black": (0.05, 0.05, 0.05),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
    "diamond",
    "stripes",
)
# Row-major 3x3 grid; index = 3 * row + column.
POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "centre",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
SIZES: tuple[str, ...] = ("small", "medium", "large")
BACKGROUNDS: tuple[str, ...] = ("plain", "noise", "gradient", "checker")

# Half-extent of an object as a fraction of the image side, per size.
SIZE_RADIUS: tuple[float, ...] = (0.09, 0.14, 0.20)
# Centre of a grid cell along one axis, as a fraction of the side.
CELL_CENTRE: tuple[float, ...] = (0.22, 0.5, 0.78)
POS_JITTER = 0.05

UNSET = -1  # an attribute a caption does not name / an absent second object


def is_held_out(colour: int, shape: int) -> bool:
    """The held-out rule: these (colour, shape) pairs never appear in the training split.

    About one pair in seven, spread so that every colour and every shape is still seen in
    training with several partners (the test asks for composition, not new words).
    """
    return (colour + 3 * shape) % 7 == 4


HELD_OUT_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES)) if is_held_out(c, s)
)
TRAIN_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES)) if not is_held_out(c, s)
)


def position_phrase(pos: int) -> str:
    """'at the top left', 'in the centre', ..."""
    name = POSITIONS[pos]
    return "in the centre" if name == "centre" else f"at the {name}"


def noun_phrase(colour: int, shape: int, size: int = UNSET) -> str:
    """'a small red circle', 'an orange star', 'red stripes', 'a red shape', 'a circle'."""
    words = []
    if size != UNSET:
        words.append(SIZES[size])
    if colour != UNSET:
        words.append(COLOUR_NAMES[colour])
    plural = shape != UNSET and SHAPES[shape] == "stripes"
    words.append(SHAPES[shape] if shape != UNSET else "shape")
    if plural:
        return " ".join(words)
    article = "an" if words[0][0] in "aeiou" else "a"
    return f"{article} {' '.join(words)}"


def background_phrase(colour: int) -> str:
    """'on a blue background', 'on an orange background'."""
    name = COLOUR_NAMES[colour]
    return f"on {'an' if name[0] in 'aeiou' else 'a'} {name} background"


def describe(
    colour: int = UNSET, shape: int = UNSET, size: int = UNSET, pos: int = UNSET, bg: int = UNSET
) -> str:
    """The canonical caption for the attributes given (the templates evaluation uses)."""
    parts = [noun_phrase(colour, shape, size)]
    if pos != UNSET:
        parts.append(position_phrase(pos))
    if bg != UNSET:
        parts.append(background_phrase(bg))
    return " ".join(parts)


@dataclass
class Attributes:
    """What a batch of images shows. Object tensors are ``[B, 2]``; slot 1 may be absent."""

    colour: torch.Tensor  # [B, 2] long, UNSET where absent
    shape: torch.Tensor
    size: torch.Tensor
    pos: torch.Tensor
    bg_colour: torch.Tensor  # [B] long
    bg_texture: torch.Tensor  # [B] long, index into BACKGROUNDS
    # Continuous layout, in fractions of the side: centre x, centre y, half-extent; radians.
    cx: torch.Tensor  # [B, 2] float
    cy: torch.Tensor
    radius: torch.Tensor
    angle: torch.Tensor

    def __len__(self) -> int:
        return self.colour.shape[0]

    def to(self, device: torch.device | str) -> Attributes:
        """A copy with every tensor on ``device``."""
        return Attributes(**{k: v.to(device, non_blocking=True) for k, v in vars(self).items()})

    def records(self) -> list[dict]:
        """Plain-Python description of every image (for people and tests)."""
        out = []
        for i in range(len(self)):
            objects = []
            for k in range(2):
                if int(self.colour[i, k]) == UNSET:
                    continue
                objects.append(
                    {
                        "colour": COLOUR_NAMES[int(self.colour[i, k])],
                        "shape": SHAPES[int(self.shape[i, k])],
                        "size": SIZES[int(self.size[i, k])],
                        "position": POSITIONS[int(self.pos[i, k])],
                        "cx": float(self.cx[i, k]),
                        "cy": float(self.cy[i, k]),
                    }
                )
            out.append(
                {
                    "objects": objects,
                    "background": COLOUR_NAMES[int(self.bg_colour[i])],
                    "texture": BACKGROUNDS[int(self.bg_texture[i])],
                }
            )
        return out


@dataclass
class Claims:
    """What each caption names: ``obj`` is ``[N, 2, 4]`` (colour, shape, size, pos), UNSET
    where not named; a claim row that is all UNSET names no object. ``bg`` is ``[N]``."""

    obj: torch.Tensor
    bg: torch.Tensor

    @staticmethod
    def stack(rows: list[tuple[list[list[int]], int]]) -> Claims:
        none = [UNSET] * 4
        obj = [[*objs, *[none] * (2 - len(objs))] for objs, _ in rows]
        bg = [b for _, b in rows]
        return Claims(
            torch.tensor(obj, dtype=torch.long).reshape(len(rows), 2, 4),
            torch.tensor(bg, dtype=torch.long),
        )


def match_matrix(attrs: Attributes, claims: Claims) -> torch.Tensor:
    """``[B_images, N_claims]`` bool: image has every attribute the claim names.

    Each named object must be matched by some object of the image (all its named attributes
    on the same object); a named background colour must be the image's background colour.
    """
    img = torch.stack([attrs.colour, attrs.shape, attrs.size, attrs.pos], dim=-1)  # [B,2,4]
    present = attrs.colour != UNSET  # [B,2]
    cl = claims.obj.to(img.device, non_blocking=True)  # [N,2,4]
    present = present.to(img.device, non_blocking=True)
    # [B, 1, 1, 2, 4] vs [1, N, 2, 1, 4] -> per (image, claim, claimed obj, image obj, attr)
    ok = (cl[None, :, :, None, :] == UNSET) | (cl[None, :, :, None, :] == img[:, None, None])
    obj_ok = ok.all(-1) & present[:, None, None, :]  # [B,N,2claims,2objs]
    claimed = (cl != UNSET).any(-1)  # [N,2]
    claim_ok = obj_ok.any(-1) | ~claimed[None]  # [B,N,2]
    bg = claims.bg.to(img.device, non_blocking=True)
    bg_ok = (bg[None] == UNSET) | (bg[None] == attrs.bg_colour[:, None])
    return claim_ok.all(-1) & bg_ok


# --------------------------------------------------------------------------- sampling


def _choice(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, k, (n,), generator=g)


def _not_adjacent() -> list[list[int]]:
    """For each grid cell, the cells at Chebyshev distance >= 2 (two objects never touch)."""
    out = []
    for p in range(9):
        r, c = divmod(p, 3)
        out.append([q for q in range(9) if max(abs(q // 3 - r), abs(q % 3 - c)) >= 2])
    return out


_FAR_CELLS = _not_adjacent()


def _group_pairs(
    p0: torch.Tensor, pair_list: tuple[tuple[int, int], ...], group_size: int, g: torch.Generator
) -> torch.Tensor:
    """Make consecutive groups of ``group_size`` first objects share their colour (three
    groups in four) or their shape, the other attribute drawn among allowed pairs."""
    n = len(p0)
    by_colour: dict[int, list[int]] = {}
    by_shape: dict[int, list[int]] = {}
    for c, s in pair_list:
        by_colour.setdefault(c, []).append(s)
        by_shape.setdefault(s, []).append(c)
    share_shape = (torch.rand((n + group_size - 1) // group_size, generator=g) < 0.25).tolist()
    picks = torch.randint(0, 1 << 20, (n,), generator=g).tolist()
    out = p0.tolist()
    for i in range(n):
        lead = i - i % group_size
        if i == lead:
            continue
        c, s = out[lead]
        if share_shape[i // group_size]:
            options = by_shape[s]
            out[i] = [options[picks[i] % len(options)], s]
        else:
            options = by_colour[c]
            out[i] = [c, options[picks[i] % len(options)]]
    return torch.tensor(out, dtype=torch.long)


def sample_attributes(
    n: int, split: str, g: torch.Generator, two_object_prob: float = 0.3, group_size: int = 1
) -> Attributes:
    """Draw the attributes of ``n`` images from the CPU generator ``g``.

    ``split="train"`` never uses a held-out (colour, shape) pair; ``split="test"`` uses only
    held-out pairs, so every test object is a combination the model never saw.

    ``group_size > 1`` makes hard negatives for contrastive training: consecutive groups
    of images share the background and the first object's colour (or shape) and differ in
    the rest, so that colour words alone cannot tell a batch's captions apart and shape,
    position and size words must be learnt.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    pair_list = TRAIN_PAIRS if split == "train" else HELD_OUT_PAIRS
    pairs = torch.tensor(pair_list)
    n_col = len(COLOURS)

    colour = torch.full((n, 2), UNSET, dtype=torch.long)
    shape = torch.full((n, 2), UNSET, dtype=torch.long)
    size = torch.full((n, 2), UNSET, dtype=torch.long)
    pos = torch.full((n, 2), UNSET, dtype=torch.long)

    p0 = pairs[_choice(n, len(pairs), g)]
    if group_size > 1:
        p0 = _group_pairs(p0, pair_list, group_size, g)
    colour[:, 0], shape[:, 0] = p0[:, 0], p0[:, 1]
    two = torch.rand(n, generator=g) < two_object_prob
    p1 = pairs[_choice(n, len(pairs), g)]
    # Redraw second objects whose colour repeats the first (captions must tell them apart).
    for _ in range(50):
        clash = p1[:, 0] == p0[:, 0]
        if not clash.any():
            break
        p1[clash] = pairs[_choice(int(clash.sum()), len(pairs), g)]
    colour[two, 1], shape[two, 1] = p1[two, 0], p1[two, 1]

    size[:, 0] = _choice(n, len(SIZES), g)
    # Two objects are small or medium, so they fit apart on the grid.
    size[two, 1] = _choice(n, 2, g)[two]
    size[two, 0] = torch.minimum(size[two, 0], torch.ones_like(size[two, 0]))
    pos[:, 0] = _choice(n, 9, g)
    # The centre cell touches every other cell: with two objects, the first sits elsewhere.
    off_centre = torch.tensor([0, 1, 2, 3, 5, 6, 7, 8])[_choice(n, 8, g)]
    pos[two, 0] = off_centre[two]
    far_pick = _choice(n, 1 << 20, g)
    for i in torch.nonzero(two).flatten().tolist():
        far = _FAR_CELLS[int(pos[i, 0])]
        pos[i, 1] = far[int(far_pick[i]) % len(far)]

    # Background colour differs from every object colour.
    bg = _choice(n, n_col, g)
    texture = _choice(n, len(BACKGROUNDS), g)
    if group_size > 1:  # a group shares its background where the colours allow
        lead = torch.arange(n) - torch.arange(n) % group_size
        bg, texture = bg[lead], texture[lead]
    for _ in range(100):
        clash = (bg[:, None] == colour).any(-1)
        if not clash.any():
            break
        bg[clash] = _choice(int(clash.sum()), n_col, g)

    radius_table = torch.tensor(SIZE_RADIUS)
    cell = torch.tensor(CELL_CENTRE)
    pos_c = pos.clamp(min=0)
    jitter = (torch.rand(n, 2, 2, generator=g) * 2 - 1) * POS_JITTER
    cx = cell[pos_c % 3] + jitter[..., 0]
    cy = cell[pos_c // 3] + jitter[..., 1]
    radius = radius_table[size.clamp(min=0)] * (0.9 + 0.2 * torch.rand(n, 2, generator=g))
    angle = (torch.rand(n, 2, generator=g) * 2 - 1) * math.radians(12)
    return Attributes(colour, shape, size, pos, bg, texture, cx, cy, radius, angle)


# --------------------------------------------------------------------------- captions


def _object_claim(obj: list[int], u: list[float], pos_on: bool) -> tuple[list[int], str]:
    """Pick which attributes of ``obj`` (colour, shape, size, position) the caption names."""
    c, s, z, p = obj
    # Many captions name one attribute alone ("a circle", "a red shape", "a shape at the
    # left"): each word must carry its meaning by itself, not only as part of a
    # colour-shape pair (the held-out pairs test exactly that).
    mode = u[0]
    name_colour = mode < 0.6 or 0.6 <= mode < 0.8
    name_shape = mode < 0.6 or mode >= 0.8
    if mode >= 0.9 and pos_on:  # "a shape at the left"
        name_shape = False
    name_size = u[2] < 0.3
    claim = [
        c if name_colour else UNSET,
        s if name_shape else UNSET,
        z if name_size else UNSET,
        p if pos_on else UNSET,
    ]
    phrase = noun_phrase(claim[0], claim[1], claim[2])
    if pos_on:
        words = position_phrase(p)
        # Accept the American spelling too: prompts will be written both ways.
        if POSITIONS[p] == "centre" and u[3] < 0.3:
            words = "in the center"
        phrase = f"{phrase} {words}"
    return claim, phrase


_PREFIXES = ("a picture of", "a drawing of", "an image of", "pixel art of")


def make_captions(attrs: Attributes, g: torch.Generator) -> tuple[list[str], Claims]:
    """Caption every image from templates, naming a random subset of what it shows."""
    n = len(attrs)
    u = torch.rand(n, 16, generator=g).tolist()
    # Plain lists: indexing tensors element by element would cost more than the GPU step.
    objects = torch.stack([attrs.colour, attrs.shape, attrs.size, attrs.pos], -1).tolist()
    bgs = attrs.bg_colour.tolist()
    captions, rows = [], []
    for i in range(n):
        ui = u[i]
        two = objects[i][1][0] != UNSET
        pos_on = ui[0] < (0.5 if two else 0.55)
        claims, phrases = [], []
        claim, phrase = _object_claim(objects[i][0], ui[1:5], pos_on)
        claims.append(claim)
        phrases.append(phrase)
        # Sometimes a two-object image is described by one object only (partial captions
        # are still true, and match what prompts look like).
        if two and ui[5] > 0.15:
            claim, phrase = _object_claim(objects[i][1], ui[6:10], pos_on)
            claims.append(claim)
            phrases.append(phrase)
            if ui[10] < 0.5:  # order of mention must not matter
                claims.reverse()
                phrases.reverse()
        text = " and ".join(phrases)
        bg = UNSET
        if ui[11] < 0.45:
            bg = bgs[i]
            text = f"{text} {background_phrase(bg)}"
        if ui[12] < 0.2:
            text = f"{_PREFIXES[int(ui[13] * len(_PREFIXES))]} {text}"
        captions.append(text)
        rows.append((claims, bg))
    return captions, Claims.stack(rows)


def caption_words() -> tuple[str, ...]:
    """Every word a caption of :func:`make_captions` can contain, sorted.

    Only these words' tokens are ever trained; the rest of the vocabulary keeps its random
    start, so the saved weights store only these rows of the token embedding
    (:func:`pixgen.models.clip.expand_row_subsets` rebuilds the rest as zeros).
    """
    phrases = [
        *COLOUR_NAMES,
        *SHAPES,
        *SIZES,
        *(position_phrase(p) for p in range(len(POSITIONS))),
        "in the center",  # the American spelling _object_claim also writes
        *_PREFIXES,
        # the glue of noun_phrase, background_phrase and make_captions
        "a an shape on background and",
    ]
    return tuple(sorted({word for phrase in phrases for word in phrase.split()}))


# --------------------------------------------------------------------------- rendering


_RGB_CACHE: dict[torch.device, torch.Tensor] = {}


def _rgb_table(device: torch.device) -> torch.Tensor:
    # Cached: building it on a GPU each batch would stall the stream (a synced copy).
    if device not in _RGB_CACHE:
        _RGB_CACHE[device] = torch.tensor(list(COLOURS.values()), device=device)
    return _RGB_CACHE[device]


def _shape_sdf(
    shape: int, x: torch.Tensor, y: torch.Tensor, stripe_dir: torch.Tensor
) -> torch.Tensor:
    """Signed distance (negative inside) of shape ``shape`` at local coordinates ``x, y``
    (units of the object's half-extent, y pointing up)."""
    name = SHAPES[shape]
    ax, ay = x.abs(), y.abs()
    rho = torch.sqrt(x * x + y * y + 1e-12)
    if name == "circle":
        return rho - 1.0
    if name == "square":
        return torch.maximum(ax, ay) - 0.85
    if name == "triangle":
        # Equilateral, pointing up, circumradius 1.2, bounding box centred.
        yt = y + 0.3
        c30, s30 = math.cos(math.radians(30)), math.sin(math.radians(30))
        edges = torch.maximum(x * c30 + yt * s30, -x * c30 + yt * s30)
        return torch.maximum(-yt, edges) - 0.6
    if name == "star":
        # Five points: signed distance to the edge line inside the point's half-sector.
        sector = 2 * math.pi / 5
        a = ((torch.atan2(x, y) + sector / 2) % sector - sector / 2).abs()
        qx, qy = rho * torch.sin(a), rho * torch.cos(a)
        r_out, r_in = 1.15, 0.5
        ex = r_in * math.sin(sector / 2)
        ey = r_in * math.cos(sector / 2) - r_out
        norm = math.hypot(ex, ey)
        # (-ey, ex) points away from the origin, which lies inside.
        return (-ey * qx + ex * (qy - r_out)) / norm
    if name == "ring":
        return (rho - 0.75).abs() - 0.22
    if name == "cross":
        return torch.minimum(torch.maximum(ax - 0.3, ay - 0.95), torch.maximum(ax - 0.95, ay - 0.3))
    if name == "diamond":
        return (ax + ay - 1.15) / math.sqrt(2)
    if name == "stripes":
        # Three stripes across a square patch, vertical or horizontal.
        u = torch.where(stripe_dir, x, y)
        period = 0.6
        stripe = ((u / period + 0.25) % 1.0 - 0.5).abs() * period - period / 4
        return torch.maximum(torch.maximum(ax, ay) - 0.9, stripe)
    raise ValueError(name)


def render(
    attrs: Attributes,
    size: int = 64,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> torch.Tensor:
    """Draw ``attrs`` as ``[B, 3, size, size]`` images in [0, 1] on ``device``.

    Per-pixel texture noise comes from a device generator seeded with ``seed``.
    """
    device = torch.device(device)
    n = len(attrs)
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    rgb = _rgb_table(device)
    lin = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")  # [H, W], y down

    # Background: a named colour, modulated by a texture that keeps its hue.
    base = rgb[attrs.bg_colour.to(device, non_blocking=True)][:, :, None, None]  # [B,3,1,1]
    tex = attrs.bg_texture.to(device, non_blocking=True)[:, None, None]
    noise_lo = F.interpolate(
        torch.randn(n, 1, 6, 6, generator=g, device=device),
        size=(size, size),
        mode="bicubic",
        align_corners=False,
    )[:, 0]
    noise_hi = torch.randn(n, size, size, generator=g, device=device)
    params = torch.rand(n, 3, generator=g, device=device)
    ang = params[:, 0, None, None] * 2 * math.pi
    ramp = gx * torch.cos(ang) + gy * torch.sin(ang)
    ramp = ramp - ramp.amin((1, 2), keepdim=True)
    ramp = ramp / ramp.amax((1, 2), keepdim=True).clamp(min=1e-6)
    period = (4 + 12 * params[:, 1, None, None]).round() / size
    checker = ((gx / period).floor() + (gy / period).floor()) % 2
    mod = torch.ones(n, size, size, device=device)
    mod = torch.where(tex == 1, 1.0 + 0.08 * noise_lo + 0.03 * noise_hi, mod)
    mod = torch.where(tex == 2, 0.8 + 0.3 * ramp, mod)
    mod = torch.where(tex == 3, 1.0 - 0.15 * checker, mod)
    # Modulation is multiplicative (keeps the hue); a little additive part shows on black.
    img = base * mod[:, None] + 0.04 * (mod[:, None] - 1.0)

    cx, cy = attrs.cx.to(device, non_blocking=True), attrs.cy.to(device, non_blocking=True)
    rad, angle = (
        attrs.radius.to(device, non_blocking=True),
        attrs.angle.to(device, non_blocking=True),
    )
    stripe_dir = torch.rand(n, 2, generator=g, device=device) < 0.5
    for k in range(2):
        present = attrs.colour[:, k] != UNSET
        if not present.any():
            continue
        r = rad[:, k, None, None]
        dx = (gx - cx[:, k, None, None]) / r
        dy = -(gy - cy[:, k, None, None]) / r  # y up for the shape formulas
        ca, sa = torch.cos(angle[:, k, None, None]), torch.sin(angle[:, k, None, None])
        lx, ly = ca * dx + sa * dy, -sa * dx + ca * dy
        # Each shape's formula only on the images that show it.
        d = torch.ones_like(lx)
        shape_k = attrs.shape[:, k]
        for s in range(len(SHAPES)):
            sel = torch.nonzero(shape_k == s).flatten().to(device, non_blocking=True)
            if sel.numel():
                d[sel] = _shape_sdf(s, lx[sel], ly[sel], stripe_dir[sel, k, None, None])
        # Anti-aliased coverage: one pixel of soft edge.
        mask = (0.5 - d * r * size).clamp(0.0, 1.0)
        mask = mask * present.to(device, non_blocking=True)[:, None, None]
        colour = rgb[attrs.colour[:, k].clamp(min=0).to(device, non_blocking=True)]
        colour = colour + 0.04 * (torch.rand(n, 3, generator=g, device=device) * 2 - 1)
        img = img * (1 - mask[:, None]) + colour[:, :, None, None] * mask[:, None]
    return img.clamp(0.0, 1.0)


# --------------------------------------------------------------------------- augmentation


def augment(
    images: torch.Tensor,
    g: torch.Generator,
    seed: int = 0,
    min_scale: float = 0.8,
    pixelate_prob: float = 0.4,
    noise_std: float = 0.03,
) -> torch.Tensor:
    """What the optimiser's cutouts look like: sometimes blocky (pixel art upscaled with
    nearest neighbour), then a random crop keeping ``min_scale``..1 of the side (so
    position words stay true), resized back, plus a little noise.

    Crop geometry is drawn from the CPU generator ``g``; pixel noise from a device
    generator seeded with ``seed``.
    """
    n, _, h, w = images.shape
    device = images.device
    u = torch.rand(n, 6, generator=g)
    out = images
    # Pixelation: a few grid sizes, applied to random subsets.
    grids = (20, 24, 32, 48)
    which = (u[:, 0] * len(grids)).long().clamp(max=len(grids) - 1)
    pix = u[:, 1] < pixelate_prob
    for j, grid in enumerate(grids):
        sel = torch.nonzero(pix & (which == j)).flatten().to(device, non_blocking=True)
        if sel.numel() == 0:
            continue
        small = F.interpolate(out[sel], size=(grid, grid), mode="area")
        out = out.index_copy(0, sel, F.interpolate(small, size=(h, w), mode="nearest"))
    # Random resized crop (square-ish), via an affine sampling grid.
    scale = min_scale + (1 - min_scale) * u[:, 2]
    aspect = 1.0 + 0.06 * (u[:, 3] * 2 - 1)
    sx = (scale * aspect.sqrt()).clamp(max=1.0)
    sy = (scale / aspect.sqrt()).clamp(max=1.0)
    tx = (1 - sx) * (u[:, 4] * 2 - 1)
    ty = (1 - sy) * (u[:, 5] * 2 - 1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sx, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    grid = F.affine_grid(theta.to(device, non_blocking=True), [n, 3, h, w], align_corners=False)
    out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gd = torch.Generator(device=device)
    gd.manual_seed(seed)
    sigma = noise_std * torch.rand(n, 1, 1, 1, generator=gd, device=device)
    out = out + sigma * torch.randn(out.shape, generator=gd, device=device)
    return out.clamp(0.0, 1.0)


# --------------------------------------------------------------------------- batches


@dataclass
class Batch:
    """Images ``[B, 3, H, W]`` in [0, 1], their captions, what they show and what each
    caption names."""

    images: torch.Tensor
    captions: list[str]
    attrs: Attributes
    claims: Claims
    extra: dict = field(default_factory=dict)


def sample_batch(
    n: int,
    split: str = "train",
    seed: int | torch.Generator = 0,
    device: torch.device | str = "cpu",
    size: int = 64,
    two_object_prob: float = 0.3,
    augment_images: bool = False,
    group_size: int = 1,
) -> Batch:
    """A batch of captioned images, fully determined by ``seed`` (an int, or a CPU
    generator whose state advances).

    Host-to-device copies are ``non_blocking`` so that drawing the next batch overlaps
    the GPU's work on the previous step instead of waiting for it.
    """
    if isinstance(seed, torch.Generator):
        g = seed
    else:
        g = torch.Generator()
        g.manual_seed(seed)
    attrs = sample_attributes(n, split, g, two_object_prob, group_size)
    captions, claims = make_captions(attrs, g)
    render_seed, aug_seed = torch.randint(0, 2**62, (2,), generator=g).tolist()
    images = render(attrs, size=size, device=device, seed=render_seed)
    if augment_images:
        images = augment(images, g, seed=aug_seed)
    return Batch(images, captions, attrs, claims)


class CaptionTokenizer:
    """Fast, exact tokenisation of our captions with open_clip's SimpleTokenizer.

    Captions are lowercase words separated by spaces, for which the BPE of the whole text
    is the concatenation of each word's BPE; caching per word keeps the GPU fed.
    """

    def __init__(self, context_length: int = 32) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.tok = SimpleTokenizer(context_length=context_length)
        self.context_length = context_length
        self._words: dict[str, list[int]] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        sot, eot = self.tok.sot_token_id, self.tok.eot_token_id
        for i, text in enumerate(texts):
            ids = [sot]
            for word in text.split():
                enc = self._words.get(word)
                if enc is None:
                    enc = self._words[word] = self.tok.encode(word)
                ids.extend(enc)
            ids = [*ids[: self.context_length - 1], eot]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def vocabulary_ids(self) -> list[int]:
        """Sorted token ids any caption can hold: its words, start, end and padding (0)."""
        ids = {0, self.tok.sot_token_id, self.tok.eot_token_id}
        for word in caption_words():
            ids.update(self.tok.encode(word))
        return sorted(ids)


# --------------------------------------------------------------------------- samples on disk


def write_samples(
    folder: str | Path,
    n: int,
    split: str = "test",
    seed: int = 0,
    size: int = 96,
    two_object_prob: float = 0.25,
) -> tuple[list[Path], Batch]:
    """Save ``n`` captioned pictures as ``NNN.png`` plus ``captions.txt`` (``file<TAB>caption``
    per line): something to try ``pixgen classify`` and ``pixgen search`` on. Returns the
    files and the batch they show."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    batch = sample_batch(n, split, seed=seed, size=size, two_object_prob=two_object_prob)
    pixels = (batch.images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    paths, lines = [], []
    for i, (image, caption) in enumerate(zip(pixels, batch.captions, strict=True)):
        path = folder / f"{i:03d}.png"
        Image.fromarray(image, "RGB").save(path)
        paths.append(path)
        lines.append(f"{path.name}\t{caption}")
    (folder / "captions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths, batch


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tools.shapes.data",
        description="Write captioned pictures of shapes (the data pixgen/shapes learns from).",
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("--n", type=int, default=40, help="how many pictures")
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=96, help="side in pixels")
    args = parser.parse_args(argv)
    paths, _ = write_samples(args.folder, args.n, args.split, args.seed, args.size)
    print(f"wrote {len(paths)} pictures and captions.txt to {args.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
