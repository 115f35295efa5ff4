"""An offline, procedurally generated image-classification dataset for the CPU quickstart.

Every image is a composition of *parts* drawn from one bank of primitives (bars, blocks,
frames, gratings, discs, rings, arcs, Gabor-like patches) shared by all classes, so the
first layers of a network learn general edge, colour and texture detectors. A class is a
fixed spatial arrangement of a few parts with fixed shapes, orientations and colours, so the
top layers become class-specific. Classes fall into superclasses with different *styles*:
"geometric" (man-made-like: crisp edges, quantised orientations, saturated colours, flat
backgrounds, rectilinear parts) and "organic" (natural-like: soft edges, any orientation,
earthy colours, textured 1/f backgrounds, rounded and curved parts), which gives the
dissimilar split the paper builds from ImageNet's man-made and natural classes. Within a
class, position, scale, rotation, colour, part dropout, distractor clutter and pixel noise
vary. See docs/synthetic-data.md.

The data is rendered with vectorised numpy (the default 100 classes in a few seconds) and
cached on disk under a hash of the parameters; writes are atomic.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from transferbench import ClassInfo, DataError, DataSource, cached_dir, hookimpl

#: Bump whenever the rendering changes, so stale caches are never reused.
GENERATOR_VERSION = 1

#: Environment variable naming the root of transferbench's caches.
CACHE_ENV = "TRANSFERBENCH_CACHE"

_SPLIT_STREAM = {"train": 1, "eval": 2}
_OOD_STREAM = 3  # the out-of-distribution split's own stream: the other two are unchanged by it
_CLASS_STREAM = 0xC1A55
_STYLE_STREAM = 0x5791E


# --------------------------------------------------------------------------- parameters


class OodParams(BaseModel):
    """How the out-of-distribution evaluation split draws the same classes differently."""

    model_config = ConfigDict(extra="forbid")

    rotation: float = Field(
        30.0, ge=0.0, le=180.0, description="degrees added to every image's pose (the whole composition "
        "rotated by this much, clockwise or anticlockwise at random, on top of the usual jitter)")
    hue_shift: float = Field(
        0.25, ge=0.0, le=1.0, description="rotation of every colour (parts, clutter and background) around "
        "the grey axis, as a fraction of the colour wheel (1/3: red to green, green to blue, blue to red)")
    per_class: int | None = Field(None, ge=1, description="images per class (default: eval_per_class)")


class SyntheticParams(BaseModel):
    """Configuration of the ``synthetic`` data source."""

    model_config = ConfigDict(extra="forbid")

    num_classes: int = Field(100, ge=2, le=10_000, description="number of classes")
    num_superclasses: int = Field(
        2, ge=1, description="styles the classes are divided into (2: geometric / organic)"
    )
    image_size: int = Field(32, ge=8, le=256, description="images are image_size x image_size")
    train_per_class: int = Field(80, ge=1, description="training images per class")
    eval_per_class: int = Field(25, ge=1, description="held-out images per class")
    seed: int = Field(0, ge=0, description="seed of the class definitions and of both splits")
    parts_per_class: int = Field(4, ge=1, le=8, description="parts that make up one class")
    distractors: int = Field(1, ge=0, le=8, description="random clutter parts per image")
    jitter: float = Field(
        1.0, ge=0.0, le=3.0, description="scale of all within-class variation (0: none)"
    )
    noise: float = Field(
        0.04, ge=0.0, le=0.5, description="std of the pixel noise, in [0, 1] units"
    )
    ood: OodParams | None = Field(
        None, description="an out-of-distribution evaluation split (split `ood`): the same classes in other "
        "poses and colours; every trained network is also evaluated on it (its record's ood_top1). It changes "
        "no training, so it enters no job id")
    cache_dir: str | None = Field(
        None,
        description=f"cache root (default: ${CACHE_ENV} or ~/.cache/transferbench); "
        "data goes to <root>/synthetic/<hash of the other parameters>",
    )

    @model_validator(mode="after")
    def _superclasses_fit(self) -> SyntheticParams:
        if self.num_superclasses > self.num_classes:
            raise ValueError(
                f"num_superclasses ({self.num_superclasses}) exceeds num_classes "
                f"({self.num_classes})"
            )
        return self


# --------------------------------------------------------------------------- the part bank

Range = tuple[float, float]


class _Family(NamedTuple):
    """A kind of primitive. Sizes are half-extents in units of half the image side."""

    name: str
    rect: bool  # rectangle (max-norm) outline, else ellipse
    length: Range  # along the part's axis
    width: Range  # across it
    hollow: float  # inner outline as a fraction of the outer one (0: solid)
    curvature: Range  # bend of the axis (0: straight)
    stripes: Range  # grating frequency in cycles per half-image (0: none)


_NONE: Range = (0.0, 0.0)
_FAMILIES: tuple[_Family, ...] = (
    _Family("bar", True, (0.28, 0.50), (0.05, 0.09), 0.0, _NONE, _NONE),
    _Family("block", True, (0.14, 0.24), (0.10, 0.18), 0.0, _NONE, _NONE),
    _Family("frame", True, (0.18, 0.28), (0.14, 0.24), 0.55, _NONE, _NONE),
    _Family("grating", True, (0.18, 0.30), (0.12, 0.22), 0.0, _NONE, (2.5, 4.5)),
    _Family("disc", False, (0.12, 0.22), (0.10, 0.20), 0.0, _NONE, _NONE),
    _Family("ring", False, (0.16, 0.26), (0.15, 0.25), 0.55, _NONE, _NONE),
    _Family("arc", False, (0.28, 0.48), (0.05, 0.09), 0.0, (1.2, 2.8), _NONE),
    _Family("gabor", False, (0.18, 0.30), (0.14, 0.26), 0.0, (0.0, 0.8), (2.5, 4.5)),
)
_VARIANTS_PER_FAMILY = 4


@dataclass(frozen=True)
class _Bank:
    """The shared primitives, one entry per prototype (B = families x variants)."""

    family: np.ndarray  # (B,) int, index into _FAMILIES
    rect: np.ndarray  # (B,) bool
    length: np.ndarray  # (B,)
    width: np.ndarray  # (B,)
    hollow: np.ndarray  # (B,)
    curvature: np.ndarray  # (B,), signed
    stripes: np.ndarray  # (B,)


def _make_bank(seed: int) -> _Bank:
    """The prototypes: ``_VARIANTS_PER_FAMILY`` random variants of every family."""
    rng = np.random.default_rng([seed, _STYLE_STREAM, 0])
    rows = []
    for f, fam in enumerate(_FAMILIES):
        for _ in range(_VARIANTS_PER_FAMILY):
            curv = rng.uniform(*fam.curvature) * rng.choice([-1.0, 1.0])
            length, width = rng.uniform(*fam.length), rng.uniform(*fam.width)
            rows.append((f, fam.rect, length, width, fam.hollow, curv, rng.uniform(*fam.stripes)))
    cols = list(zip(*rows))
    return _Bank(
        family=np.array(cols[0]),
        rect=np.array(cols[1], dtype=bool),
        length=np.array(cols[2], dtype=np.float32),
        width=np.array(cols[3], dtype=np.float32),
        hollow=np.array(cols[4], dtype=np.float32),
        curvature=np.array(cols[5], dtype=np.float32),
        stripes=np.array(cols[6], dtype=np.float32),
    )


# --------------------------------------------------------------------------- styles


@dataclass(frozen=True)
class _Style:
    """How one superclass renders: t=0 is fully geometric, t=1 fully organic."""

    name: str
    t: float
    family_weights: np.ndarray  # (B,) probability of each bank prototype
    palette: np.ndarray  # (P, 3) foreground colours in [0, 1]
    background: np.ndarray  # (Q, 3) background colours
    edge_px: float  # width of the edge ramp, in pixels
    texture: float  # amplitude of the 1/f texture on background and parts
    quantise: float  # probability that an orientation snaps to a multiple of 45 degrees


def _superclass_names(num: int) -> list[str]:
    if num == 1:
        return ["mixed"]
    if num == 2:
        return ["geometric", "organic"]
    return ["geometric"] + [f"style{s}" for s in range(1, num - 1)] + ["organic"]


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(n,) hue, saturation, value in [0, 1] to (n, 3) RGB."""
    h6 = (h % 1.0) * 6.0
    i = np.floor(h6).astype(int) % 6
    f = h6 - np.floor(h6)
    p, q, r = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    sectors = ((v, r, p), (q, v, p), (p, v, r), (p, q, v), (r, p, v), (v, p, q))
    table = np.stack([np.stack(c, -1) for c in sectors])
    return table[i, np.arange(len(h))]


def _make_styles(seed: int, num: int, bank: _Bank) -> list[_Style]:
    """One style per superclass, from geometric (t=0) to organic (t=1)."""
    names = _superclass_names(num)
    geometric = np.array([_FAMILIES[f].rect for f in bank.family])  # rectilinear families
    styles = []
    for s, name in enumerate(names):
        t = 0.5 if num == 1 else s / (num - 1)
        rng = np.random.default_rng([seed, _STYLE_STREAM, 1, s])
        # Every style may use every primitive (shared low-level structure), with a 5:1
        # preference for its own kind at the two ends (different mid-level statistics).
        w = np.where(geometric, 1.0 - 0.8 * t, 0.2 + 0.8 * t)
        # Hue: geometric palettes span the whole wheel; organic ones the warm-to-green
        # arc of foliage, fruit and earth; styles in between rotate away by the golden
        # angle. Palette hues are stratified so that its colours stay distinguishable.
        spread = 0.5 - 0.15 * t
        centre = 0.15 + 0.381966 * s if 0 < s < num - 1 else 0.15
        strata = (rng.permutation(8) + rng.uniform(0.2, 0.8, 8)) / 8
        hue = centre + spread * (2 * strata - 1)
        sat = rng.uniform(0.65 - 0.15 * t, 1.0 - 0.1 * t, 8)
        val = rng.uniform(0.7 - 0.2 * t, 1.0, 8)
        bg_spread = 0.5 - 0.35 * t
        bg_hue = centre + rng.uniform(-bg_spread, bg_spread, 6)
        bg_sat = rng.uniform(0.0 + 0.2 * t, 0.15 + 0.35 * t, 6)
        bg_val = rng.uniform(0.25 - 0.1 * t, 0.9 - 0.35 * t, 6)
        styles.append(
            _Style(
                name=name,
                t=t,
                family_weights=w / w.sum(),
                palette=_hsv_to_rgb(hue, sat, val).astype(np.float32),
                background=_hsv_to_rgb(bg_hue, bg_sat, bg_val).astype(np.float32),
                edge_px=0.6 + 0.8 * t,
                texture=0.02 + 0.10 * t,
                quantise=0.9 * (1.0 - t),
            )
        )
    return styles


def _superclass_of(num_classes: int, num_superclasses: int) -> np.ndarray:
    """Contiguous, near-equal blocks of classes (as ImageNet's natural classes are)."""
    return np.arange(num_classes) * num_superclasses // num_classes


def _orientations(
    rng: np.random.Generator, quantise: float | np.ndarray, size: Any
) -> np.ndarray:
    free = rng.uniform(0.0, np.pi, size)
    snapped = rng.integers(0, 4, size) * (np.pi / 4) + rng.normal(0.0, 0.03, size)
    return np.where(rng.random(size) < quantise, snapped, free)


# --------------------------------------------------------------------------- classes


@dataclass(frozen=True)
class _Classes:
    """Class definitions: K parts per class, each a prototype at a pose with a colour."""

    superclass: np.ndarray  # (C,)
    proto: np.ndarray  # (C, K) index into the bank
    pos: np.ndarray  # (C, K, 2) offsets from the composition's centre
    angle: np.ndarray  # (C, K)
    size: np.ndarray  # (C, K) scale of the prototype
    colour: np.ndarray  # (C, K, 3)


def _make_classes(p: SyntheticParams, bank: _Bank, styles: list[_Style]) -> _Classes:
    """Draw every class's composition from the bank, in its superclass's style."""
    sup = _superclass_of(p.num_classes, p.num_superclasses)
    k = p.parts_per_class
    proto = np.empty((p.num_classes, k), dtype=int)
    pos = np.empty((p.num_classes, k, 2), dtype=np.float32)
    angle = np.empty((p.num_classes, k), dtype=np.float32)
    size = np.empty((p.num_classes, k), dtype=np.float32)
    colour = np.empty((p.num_classes, k, 3), dtype=np.float32)
    for c in range(p.num_classes):
        # One stream per class: a class's definition does not depend on the split sizes.
        rng = np.random.default_rng([p.seed, _CLASS_STREAM, c])
        style = styles[sup[c]]
        proto[c] = rng.choice(len(bank.family), k, p=style.family_weights)
        radius = 0.55 * np.sqrt(rng.random(k))
        phi = rng.uniform(0, 2 * np.pi, k)
        pos[c] = np.stack([radius * np.cos(phi), radius * np.sin(phi)], -1)
        angle[c] = _orientations(rng, style.quantise, k)
        size[c] = rng.uniform(0.8, 1.25, k)
        # Colours come from the superclass palette, so colour alone rarely names a class.
        colour[c] = style.palette[rng.integers(0, len(style.palette), k)]
    return _Classes(sup, proto, pos, angle, size, colour)


def _class_infos(p: SyntheticParams, bank: _Bank, classes: _Classes) -> list[ClassInfo]:
    names = _superclass_names(p.num_superclasses)
    infos = []
    for c in range(p.num_classes):
        parts = "+".join(_FAMILIES[bank.family[j]].name for j in classes.proto[c])
        infos.append(
            ClassInfo(
                index=c,
                id=f"syn{c:03d}",
                name=f"{parts} #{c}",
                superclass=names[classes.superclass[c]],
            )
        )
    return infos


# --------------------------------------------------------------------------- rendering


@dataclass
class _Slots:
    """Per-image, per-slot pose of every part to draw (N, S), slots drawn in order."""

    proto: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    angle: np.ndarray
    size: np.ndarray
    colour: np.ndarray  # (N, S, 3)
    visible: np.ndarray


def _pink_noise(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Unit-variance smooth noise fields whose amplitude falls as 1/f^1.5 (natural-ish texture)."""
    f = np.fft.fftfreq(size)
    fr = np.fft.rfftfreq(size)
    radius = np.sqrt(f[:, None] ** 2 + fr[None, :] ** 2).astype(np.float32)
    spectrum = np.fft.rfft2(rng.standard_normal((n, size, size), dtype=np.float32))
    field = np.fft.irfft2(spectrum / np.maximum(radius, 1.0 / size) ** 1.5, s=(size, size))
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-6
    return field.astype(np.float32)


def _instances(
    p: SyntheticParams, labels: np.ndarray, rng: np.random.Generator,
    bank: _Bank, styles: list[_Style], classes: _Classes, turn: float = 0.0,
) -> _Slots:
    """Sample every image's pose: a jittered copy of its class's parts plus distractors;
    ``turn`` (radians) is added to every composition's rotation, with a random sign."""
    n, k, d, j = len(labels), p.parts_per_class, p.distractors, p.jitter
    sup = classes.superclass[labels]
    quantise = np.array([s.quantise for s in styles])[sup]

    # The composition as a whole: shift, scale and rotate.
    shift = rng.uniform(-0.45 * j, 0.45 * j, (n, 1, 2)).astype(np.float32)
    scale = np.exp(rng.normal(0.0, 0.09 * j, (n, 1))).astype(np.float32)
    rot = rng.normal(0.0, 0.15 * j, (n, 1)).astype(np.float32)
    if turn:  # drawn only for the OOD split, so the other splits' streams are as before
        rot = rot + (turn * rng.choice([-1.0, 1.0], (n, 1))).astype(np.float32)
    cos, sin = np.cos(rot), np.sin(rot)
    rel = classes.pos[labels] + rng.normal(0.0, 0.04 * j, (n, k, 2)).astype(np.float32)
    px = (rel[..., 0] * cos - rel[..., 1] * sin) * scale + shift[..., 0]
    py = (rel[..., 0] * sin + rel[..., 1] * cos) * scale + shift[..., 1]
    part_angle = classes.angle[labels] + rot + rng.normal(0.0, 0.09 * j, (n, k))
    part_size = classes.size[labels] * scale * np.exp(rng.normal(0.0, 0.075 * j, (n, k)))
    part_colour = classes.colour[labels] + rng.normal(0.0, 0.05 * j, (n, k, 3))
    visible = rng.random((n, k)) >= min(0.5, 0.075 * j)

    # Clutter: random prototypes of the image's own style, anywhere.
    weights = np.stack([s.family_weights for s in styles])[sup]
    cdf = np.cumsum(weights, axis=1)
    dproto = (rng.random((n, d, 1)) > cdf[:, None, :]).sum(-1).clip(0, len(bank.family) - 1)
    dpos = rng.uniform(-0.9, 0.9, (n, d, 2))
    dangle = _orientations(rng, quantise[:, None], (n, d))
    dsize = rng.uniform(0.55, 1.0, (n, d))
    palettes = np.stack([s.palette for s in styles])  # (S, P, 3)
    dcolour = palettes[sup[:, None], rng.integers(0, palettes.shape[1], (n, d))]
    dcolour = dcolour + rng.normal(0.0, 0.05 * j, (n, d, 3))

    # Slot order (painter's algorithm): half the clutter behind the class parts, half in front.
    back = d - d // 2
    def cat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([b[:, :back], a, b[:, back:]], axis=1)

    return _Slots(
        proto=cat(classes.proto[labels], dproto),
        cx=cat(px, dpos[..., 0]).astype(np.float32),
        cy=cat(py, dpos[..., 1]).astype(np.float32),
        angle=cat(part_angle, dangle).astype(np.float32),
        size=cat(part_size, dsize).astype(np.float32),
        colour=cat(part_colour, dcolour).astype(np.float32),
        visible=cat(visible, np.ones((n, d), dtype=bool)),
    )


def _render_chunk(
    slots: _Slots, sl: slice, bank: _Bank, style_idx: np.ndarray, styles: list[_Style],
    background: np.ndarray, texture_field: np.ndarray, size: int,
) -> np.ndarray:
    """Composite the parts of images ``sl`` over their backgrounds; float (n, 3, H, W)."""
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    gx, gy = grid[None, None, :], grid[None, :, None]
    px_per_unit = size / 2.0
    edge_px = np.array([s.edge_px for s in styles], dtype=np.float32)[style_idx]
    texture = np.array([s.texture for s in styles], dtype=np.float32)[style_idx]
    img = background
    for s in range(slots.proto.shape[1]):
        proto = slots.proto[sl, s]
        length = (bank.length[proto] * slots.size[sl, s])[:, None, None]
        width = (bank.width[proto] * slots.size[sl, s])[:, None, None]
        cos = np.cos(slots.angle[sl, s])[:, None, None]
        sin = np.sin(slots.angle[sl, s])[:, None, None]
        dx, dy = gx - slots.cx[sl, s, None, None], gy - slots.cy[sl, s, None, None]
        u = dx * cos + dy * sin
        v = dy * cos - dx * sin - bank.curvature[proto][:, None, None] * u * u
        ue, ve = np.abs(u / length), np.abs(v / width)
        rect = bank.rect[proto][:, None, None]
        r = np.where(rect, np.maximum(ue, ve), np.sqrt(ue * ue + ve * ve))
        # A linear ramp of edge_px pixels across the boundary: crisp or soft edges by style.
        ramp = (np.minimum(length, width) * px_per_unit / edge_px[:, None, None])
        alpha = np.clip((1.0 - r) * ramp + 0.5, 0.0, 1.0)
        hollow = bank.hollow[proto][:, None, None]
        alpha *= np.where(hollow > 0, np.clip((r - hollow) * ramp + 0.5, 0.0, 1.0), 1.0)
        # Gratings: stripes across the part's axis, letting what is behind show through.
        freq = np.minimum(bank.stripes[proto], size / 6.0)[:, None, None]
        alpha *= np.where(freq > 0, 0.5 + 0.5 * np.cos(2 * np.pi * freq * u), 1.0)
        alpha *= slots.visible[sl, s][:, None, None]
        # Parts carry half the background's texture: natural-looking, yet still visible.
        shade = 1.0 + 0.5 * texture[:, None, None, None] * texture_field[:, None]
        paint = slots.colour[sl, s][:, :, None, None] * shade
        img = img + alpha[:, None] * (paint - img)
    return img


def hue_rotation(fraction: float) -> np.ndarray:
    """The 3x3 matrix that rotates RGB colours around the grey axis by ``fraction`` of the
    colour wheel (greys stay grey; 1/3 maps red to green, green to blue, blue to red)."""
    a = 2 * np.pi * fraction
    c, s, third = np.cos(a), np.sin(a) / np.sqrt(3.0), (1 - np.cos(a)) / 3
    return np.array([[c + third, third - s, third + s],
                     [third + s, c + third, third - s],
                     [third - s, third + s, c + third]], dtype=np.float32)


def render_split(p: SyntheticParams, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Generate one split: uint8 images (N, 3, H, W) and int64 labels (N,).

    Pure and deterministic: the same parameters always give the same arrays. The class
    definitions come from the seed alone; each split draws its images from its own stream.
    ``ood`` (with ``p.ood`` set) draws the eval split's classes from a third stream, every
    composition turned by ``p.ood.rotation`` and every colour rotated by ``p.ood.hue_shift``.
    """
    if split not in _SPLIT_STREAM and not (split == "ood" and p.ood is not None):
        raise DataError(f"synthetic: unknown split {split!r}; expected 'train' or 'eval'"
                        + (" (or 'ood', with the setting ood)" if split == "ood" else ""))
    bank = _make_bank(p.seed)
    styles = _make_styles(p.seed, p.num_superclasses, bank)
    classes = _make_classes(p, bank, styles)
    ood = p.ood if split == "ood" else None
    per_class = p.train_per_class if split == "train" else p.eval_per_class
    if ood is not None and ood.per_class:
        per_class = ood.per_class
    labels = np.repeat(np.arange(p.num_classes), per_class)
    rng = np.random.default_rng([p.seed, _OOD_STREAM if ood else _SPLIT_STREAM[split]])
    slots = _instances(p, labels, rng, bank, styles, classes, np.radians(ood.rotation) if ood else 0.0)
    hue = hue_rotation(ood.hue_shift) if ood and ood.hue_shift else None
    if hue is not None:
        slots.colour = slots.colour @ hue.T

    n, size, j = len(labels), p.image_size, p.jitter
    style_idx = classes.superclass[labels]
    # Background: a colour of the style's background palette (not of the class), a linear
    # gradient, and 1/f texture whose strength is a style property.
    backgrounds = np.stack([s.background for s in styles])
    bg = backgrounds[style_idx, rng.integers(0, backgrounds.shape[1], n)]
    bg = bg + rng.normal(0.0, 0.04 * j, (n, 3))
    if hue is not None:
        bg = bg @ hue.T
    grad_dir = rng.uniform(0, 2 * np.pi, n)
    grad_amp = rng.uniform(0.0, 0.15, n)
    field = _pink_noise(rng, n, size)
    tint = 1.0 + rng.normal(0.0, 0.15, (n, 3))
    contrast = np.exp(rng.normal(0.0, 0.075 * j, n))
    brightness = rng.normal(0.0, 0.04 * j, n)
    texture = np.array([s.texture for s in styles])[style_idx]

    grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    chunk = max(1, 2_000_000 // (size * size))  # bounds the temporaries to a few tens of MB
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        cos, sin = np.cos(grad_dir[sl]), np.sin(grad_dir[sl])
        ramp = cos[:, None, None] * grid[None, None, :] + sin[:, None, None] * grid[None, :, None]
        ramp *= grad_amp[sl, None, None]
        base = bg[sl, :, None, None] + ramp[:, None]
        base += texture[sl, None, None, None] * field[sl, None] * tint[sl, :, None, None]
        img = _render_chunk(
            slots, sl, bank, style_idx[sl], styles, base.astype(np.float32), field[sl], size
        )
        img = (img - 0.5) * contrast[sl, None, None, None] + 0.5 + brightness[sl, None, None, None]
        img += p.noise * rng.standard_normal(img.shape, dtype=np.float32)
        out[sl] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out, labels.astype(np.int64)


# --------------------------------------------------------------------------- cache


def cache_key(p: SyntheticParams) -> str:
    """A short hash of everything that changes the generated data (not the cache root)."""
    payload = json.dumps(
        {"version": GENERATOR_VERSION, **p.model_dump(exclude={"cache_dir", "ood"})}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_path(p: SyntheticParams) -> Path:
    """Where the dataset of ``p`` lives: ``<root>/synthetic/<cache_key>``."""
    root = p.cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "transferbench"
    return Path(root).expanduser() / "synthetic" / cache_key(p)


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence ``datasets``' progress bars for one block, restoring the user's setting."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _to_dataset(images: np.ndarray, labels: np.ndarray) -> Any:
    import datasets

    features = datasets.Features(
        {
            "input": datasets.Array3D(shape=images.shape[1:], dtype="uint8"),
            "label": datasets.Value("int64"),
        }
    )
    return datasets.Dataset.from_dict({"input": images, "label": labels}, features=features)


def _cache_is_whole(folder: Path, p: SyntheticParams) -> bool:
    """Whether ``folder`` holds both splits of ``p``, readable, with the rows they should have."""
    import datasets

    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("generator_version") != GENERATOR_VERSION:
            return False
        with _quiet_datasets():
            rows = {split: datasets.load_from_disk(str(folder / split)).num_rows for split in _SPLIT_STREAM}
    except Exception:  # noqa: BLE001 - missing, truncated or foreign files all mean "not whole"
        return False
    per_class = {"train": p.train_per_class, "eval": p.eval_per_class}
    return all(rows[s] == per_class[s] * p.num_classes for s in _SPLIT_STREAM)


def build_cache(p: SyntheticParams) -> Path:
    """Generate both splits into the cache unless they are already there; return the folder.

    Built with :func:`transferbench.cached_dir`: in a temporary folder renamed into place
    (no reader sees half a cache), one builder at a time, temporary folders of killed builds
    removed, and a damaged cache moved aside (never deleted) and built again.
    """

    def build(tmp: Path) -> None:
        stats: dict[str, Any] = {}
        with _quiet_datasets():
            for split in _SPLIT_STREAM:
                images, labels = render_split(p, split)
                if split == "train":
                    x = images.astype(np.float32) / 255.0
                    stats = {"mean": x.mean(axis=(0, 2, 3)).tolist(), "std": x.std(axis=(0, 2, 3)).tolist()}
                _to_dataset(images, labels).save_to_disk(str(tmp / split))
        meta = {"generator_version": GENERATOR_VERSION, "params": p.model_dump(exclude={"cache_dir", "ood"}),
                "normalization": stats}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))

    target = cache_path(p)
    try:
        return cached_dir(target, build, valid=lambda folder: _cache_is_whole(folder, p))
    except OSError as e:
        raise DataError(f"synthetic: cannot write the cache under {target.parent}: {e}") from e


# --------------------------------------------------------------------------- the plugin


class SyntheticDataSource(DataSource[SyntheticParams]):
    """Procedural offline dataset: compositions of shared parts, in geometric and organic styles."""

    description = "procedurally generated offline image classes (geometric vs organic styles)"
    Params = SyntheticParams
    params: SyntheticParams
    location_params = ("cache_dir",)

    def identity(self) -> dict[str, Any]:
        """The params that shape the training and eval images, and the generator's version (not
        the cache folder). ``ood`` is left out: a job id names the network (what trained it, on
        what, and its in-distribution evaluation); the OOD split is one more evaluation of that
        same network, which changes nothing it learns."""
        ident = {**super().identity(), "generator_version": GENERATOR_VERSION}
        ident.pop("ood", None)
        return ident

    def has_ood(self) -> bool:
        return self.params.ood is not None

    def __init__(self, params: SyntheticParams | None = None) -> None:
        super().__init__(params)
        self._datasets: dict[str, Any] = {}
        self._meta: dict[str, Any] | None = None

    @classmethod
    def example_params(cls, workdir: Path) -> dict[str, Any]:
        return {
            "num_classes": 10,
            "num_superclasses": 2,
            "image_size": 16,
            "train_per_class": 8,
            "eval_per_class": 4,
            "cache_dir": str(Path(workdir) / "cache"),
        }

    def classes(self) -> Sequence[ClassInfo]:
        p = self.params
        bank = _make_bank(p.seed)
        styles = _make_styles(p.seed, p.num_superclasses, bank)
        return _class_infos(p, bank, _make_classes(p, bank, styles))

    def input_shape(self) -> tuple[int, ...]:
        return (3, self.params.image_size, self.params.image_size)

    def to_tensor(self, value: Any) -> torch.Tensor:
        """One image as a uint8 tensor (3, H, W); ``datasets``' numpy format widens it to int64."""
        return torch.as_tensor(np.asarray(value, dtype=np.uint8))

    def cache_folder(self) -> Path:
        """The folder this source's data is (or will be) cached in."""
        return cache_path(self.params)

    def load(self, split: str) -> Any:
        if split == "ood" and self.params.ood is not None:
            if split not in self._datasets:  # small (eval-sized) and quick to draw: rendered in memory
                self._datasets[split] = _to_dataset(*render_split(self.params, split))
            return self._datasets[split]
        if split not in _SPLIT_STREAM:
            raise DataError(f"synthetic: unknown split {split!r}; expected 'train' or 'eval'")
        if split not in self._datasets:
            import datasets

            folder = build_cache(self.params)
            self._datasets[split] = datasets.load_from_disk(str(folder / split))
        return self._datasets[split]

    def normalization(self) -> tuple[Sequence[float], Sequence[float]]:
        if self._meta is None:
            folder = build_cache(self.params)
            self._meta = json.loads((folder / "meta.json").read_text())
        stats = self._meta["normalization"]
        return tuple(stats["mean"]), tuple(stats["std"])

    def check(self) -> None:
        folder = cache_path(self.params)
        if (folder / "meta.json").is_file():
            return
        probe = folder.parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not os.access(probe, os.W_OK):
            raise DataError(
                f"synthetic: the cache folder {folder.parent} cannot be created or written "
                f"(set cache_dir or ${CACHE_ENV} to a writable folder)"
            )


@hookimpl
def register_data_sources(register: Any) -> None:
    register("synthetic", SyntheticDataSource)
