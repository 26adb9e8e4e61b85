"""Rasterising a synthetic frame: background, objects, visible masks, lighting and noise.

The demo checkpoints were trained on frames rendered by exactly this arithmetic (float64
here, float32 there, in this order): a change to any pixel, even float rounding, changes the
training data. Steps were only ever moved or made to allocate less, never re-ordered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np

from pipeline.synthetic.shapes import BOUND_FACTOR, shape_sdf
from pipeline.synthetic.style import SceneStyle, seed_entropy

__all__ = [
    "Drawn",
    "Grid",
    "RenderedTrack",
    "background",
    "column_terms",
    "composite",
    "evaluate_objects",
    "finish_image",
    "visible_masks",
]

Columns = list[tuple[np.ndarray, np.ndarray, np.ndarray]]


class RenderedTrack(Protocol):
    """What the renderer reads of a track (``motion.Track`` and ``motion.PathTrack``)."""

    track_id: int
    label: int
    r: float
    z: float
    color: tuple[float, float, float]
    shade_dir: float
    shade_amount: float
    stripe_period: float
    stripe_angle: float

    def pose(self, t: float) -> tuple[float, float, float]:
        """Centre (x, y) in canvas units and rotation angle at time ``t``."""
        ...


class Grid(NamedTuple):
    """Pixel-centre coordinates of a frame in canvas units, and one pixel's size."""

    xs: np.ndarray  # [W] float64
    ys: np.ndarray  # [H] float64
    pixel: float
    sx: float  # pixels per canvas unit, horizontally
    sy: float  # and vertically


class Drawn(NamedTuple):
    """An object evaluated on its pixel region ``(x0, x1, y0, y1)``."""

    track: RenderedTrack
    region: tuple[int, int, int, int]
    inside: np.ndarray  # bool: pixel centre strictly inside the shape (the exact mask)
    alpha: np.ndarray  # float32 antialiased coverage
    lx: np.ndarray  # pixel centres in the object's rotated local frame
    ly: np.ndarray


def column_terms(style: SceneStyle, xs: np.ndarray) -> Columns:
    """Per wave (the last one is the stripes): sin and cos of its x phase, and its colour
    amplitude as float32. They do not depend on time: computed once per scene."""
    two_pi = 2.0 * np.pi
    columns = []
    for fx, _fy, _phase, _drift, amp in (*style.bg_waves, style.stripes):
        ax = two_pi * fx * xs
        columns.append((np.sin(ax), np.cos(ax), amp.astype(np.float32)))
    return columns


def background(
    style: SceneStyle, columns: Columns, ys: np.ndarray, width: int, t: float
) -> np.ndarray:
    """The [3, H, W] float32 background at time ``t``."""
    # sin(a x + b y + c) = sin(a x) cos(b y + c) + cos(a x) sin(b y + c): separable. The
    # arithmetic (float64 outer products, cast, float32 colour sums in this order) is
    # what the demo models were trained on: only allocations are saved here, not steps.
    h, w = len(ys), width
    # channel-planar [3, H, W] while rendering: every per-channel step then runs over
    # contiguous rows (an [H, W, 3] broadcast of a [3] colour was ten times slower);
    # the steps are elementwise, so the layout does not change a single bit
    img = np.empty((3, h, w), dtype=np.float32)
    img[:] = style.bg_base.astype(np.float32)[:, None, None]
    two_pi = 2.0 * np.pi
    wave = np.empty((h, w), dtype=np.float64)
    other = np.empty((h, w), dtype=np.float64)
    wave32 = np.empty((h, w), dtype=np.float32)
    coloured = np.empty((3, h, w), dtype=np.float32)
    for k, (_fx, fy, phase, drift, _amp) in enumerate((*style.bg_waves, style.stripes)):
        sin_ax, cos_ax, amp32 = columns[k]
        by = two_pi * fy * ys + phase + drift * t
        np.multiply.outer(np.cos(by), sin_ax, out=wave)
        np.multiply.outer(np.sin(by), cos_ax, out=other)
        wave += other
        if k == len(style.bg_waves):  # the stripes: a squashed wave
            wave *= 2.5
            np.tanh(wave, out=wave)
        wave32[...] = wave
        np.multiply(amp32[:, None, None], wave32[None], out=coloured)
        img += coloured
    return img


def _object_region(
    trk: RenderedTrack, cx: float, cy: float, grid: Grid
) -> tuple[int, int, int, int] | None:
    """Pixel box around the object's bounding circle, clipped to the frame (None: outside)."""
    bound = trk.r * BOUND_FACTOR[trk.label]
    width, height = len(grid.xs), len(grid.ys)
    x0 = max(0, math.floor((cx - bound) * grid.sx - 1.0))
    x1 = min(width, math.ceil((cx + bound) * grid.sx + 1.0))
    y0 = max(0, math.floor((cy - bound) * grid.sy - 1.0))
    y1 = min(height, math.ceil((cy + bound) * grid.sy + 1.0))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, x1, y0, y1


def evaluate_objects(tracks: Sequence[RenderedTrack], t: float, grid: Grid) -> list[Drawn]:
    """Every track's signed distance on its pixel region at time ``t``; objects with no
    coverage in the frame (outside it, or thinner than a pixel) are left out."""
    drawn = []
    for trk in tracks:
        cx, cy, ang = trk.pose(t)
        region = _object_region(trk, cx, cy, grid)
        if region is None:
            continue
        x0, x1, y0, y1 = region
        dx = grid.xs[None, x0:x1] - cx
        dy = grid.ys[y0:y1, None] - cy
        ca, sa = math.cos(ang), math.sin(ang)
        lx = ca * dx + sa * dy
        ly = -sa * dx + ca * dy
        sdf = shape_sdf(trk.label, lx, ly, trk.r)
        inside = sdf < 0.0
        alpha = np.clip(0.5 - sdf / grid.pixel, 0.0, 1.0).astype(np.float32)
        if not alpha.any():
            continue
        drawn.append(Drawn(trk, region, inside, alpha, lx, ly))
    return drawn


def _surface(trk: RenderedTrack, lx: np.ndarray, ly: np.ndarray) -> np.ndarray:
    """The object's [3, h, w] colour on its region: base colour, shading, stripes."""
    gain = (
        1.0
        + trk.shade_amount * (lx * math.cos(trk.shade_dir) + ly * math.sin(trk.shade_dir)) / trk.r
    )
    if trk.stripe_period > 0.0:
        u = lx * math.cos(trk.stripe_angle) + ly * math.sin(trk.stripe_angle)
        gain = gain * (
            1.0
            - 0.25
            * (0.5 + 0.5 * np.tanh(3.0 * np.sin(u * (2 * np.pi / (trk.stripe_period * trk.r)))))
        )
    return np.clip(np.asarray(trk.color)[:, None, None] * gain[None], 0.0, 1.0)


def composite(img: np.ndarray, drawn: list[Drawn]) -> None:
    """Blend the objects into the [3, H, W] image in place, back to front (ascending z)."""
    for d in sorted(drawn, key=lambda d: d.track.z):
        x0, x1, y0, y1 = d.region
        color = _surface(d.track, d.lx, d.ly)
        a = d.alpha[None]
        patch = img[:, y0:y1, x0:x1]
        patch *= 1.0 - a
        patch += a * color.astype(np.float32)


def visible_masks(
    drawn: list[Drawn], height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Class map, [N, H, W] visible masks, labels and track ids (ascending ids).

    Front to back, each object keeps the inside pixels no nearer object has taken: masks are
    disjoint, and an object hidden entirely (or outside the frame) gets no mask at all.
    """
    taken = np.zeros((height, width), dtype=bool)
    class_map = np.zeros((height, width), dtype=np.uint8)
    visible = {}
    for d in sorted(drawn, key=lambda d: -d.track.z):
        x0, x1, y0, y1 = d.region
        sub = taken[y0:y1, x0:x1]
        vis = d.inside & ~sub
        if not vis.any():
            continue
        sub |= vis
        class_map[y0:y1, x0:x1][vis] = d.track.label
        visible[d.track.track_id] = (d.track.label, d.region, vis)
    ids = sorted(visible)
    # Written into one array (not stacked from full-frame copies): the masks of a large
    # frame are most of the cost of its ground truth.
    masks = np.zeros((len(ids), height, width), dtype=bool)
    for k, tid in enumerate(ids):
        _label, (x0, x1, y0, y1), vis = visible[tid]
        masks[k, y0:y1, x0:x1] = vis
    labels = np.array([visible[i][0] for i in ids], dtype=np.int64)
    return class_map, masks, labels, np.array(ids, dtype=np.int64)


def finish_image(img: np.ndarray, style: SceneStyle, seed: int, index: int, t: float) -> np.ndarray:
    """Global lighting changes, then sensor noise (stream ``(-2, index)``), then uint8 H x W x 3.

    ``img`` ([3, H, W] float32) is used as scratch space."""
    _, h, w = img.shape
    light = 1.0 + style.light_amp * math.sin(2 * np.pi * t / style.light_period + style.light_phase)
    tint = 1.0 + style.tint_amp * np.sin(2 * np.pi * t / style.tint_period + style.tint_phase)
    img *= (light * tint).astype(np.float32)[:, None, None]
    rng = np.random.default_rng(seed_entropy(seed, -2, index))
    noise = rng.standard_normal((h, w, 3), dtype=np.float32)
    noise *= np.float32(style.noise_sigma)
    img += noise.transpose(2, 0, 1)
    np.clip(img, 0.0, 1.0, out=img)
    img *= 255.0
    img += 0.5
    image = np.empty((h, w, 3), dtype=np.uint8)
    np.copyto(image, img.transpose(1, 2, 0), casting="unsafe")  # truncation, as astype
    return image
