"""Amorphous background *stuff* of the ``panoptic`` scene kind: where it is and how it looks.

The background of a panoptic scene is cut into three to five stuff classes (``STUFF_NAMES``:
sky, wall, grass, road, water), each drawn in a colour family and a texture of its own, so
a model can tell them apart by appearance rather than by position:

* **where**: every class in the scene owns a horizontal band (random order and heights per
  seed) and a smooth random field (a sum of plane waves); a pixel belongs to the class whose
  field plus band prior is largest. The prior is ``-ALPHA`` times the distance to the band,
  so boundaries wander irregularly about the band edges (by ~1 / ``ALPHA``), bulge and pinch
  off islands, instead of running straight.
* **over time**: the camera pans sideways at a constant speed (the whole layout and its
  textures slide) and every wave's phase drifts, so the boundaries also change shape.
* **efficiently**: a sum of plane waves is a low-rank matrix over (row, column), since
  ``sin(u + v) = sin u cos v + cos u sin v``; every field and texture is therefore one small
  matrix product (rows x rank times rank x columns), not a per-pixel sum of sines.

Everything is in canvas units (``pipeline.synthetic.scene``), so a 640x480 and a 1280x720
render show the same layout. Stuff class ids follow the thing (shape) classes:
``FIRST_STUFF_ID + k`` for ``STUFF_NAMES[k]``, so models trained on the shapes keep their ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engines.models.demo_classes import DEMO_STUFF_NAMES
from pipeline.synthetic.shapes import CLASS_NAMES, NUM_CLASSES
from pipeline.synthetic.style import seed_entropy

__all__ = [
    "FIRST_STUFF_ID",
    "PANOPTIC_CLASS_NAMES",
    "STUFF_IDS",
    "STUFF_NAMES",
    "StuffLayout",
    "stuff_labels",
    "stuff_picture",
]

STUFF_NAMES: tuple[str, ...] = DEMO_STUFF_NAMES  # named next to the shapes, for both layers
FIRST_STUFF_ID = NUM_CLASSES  # appended after the shapes (and background 0)
STUFF_IDS: tuple[int, ...] = tuple(range(FIRST_STUFF_ID, FIRST_STUFF_ID + len(STUFF_NAMES)))
PANOPTIC_CLASS_NAMES: tuple[str, ...] = CLASS_NAMES + STUFF_NAMES
SKY, WALL, GRASS, ROAD, WATER = range(len(STUFF_NAMES))  # indices into STUFF_NAMES

ALPHA = 12.0  # band prior slope: boundaries stray ~1/ALPHA canvas units from the band edges
MIN_BAND = 0.12  # the thinnest band (canvas heights), so every class keeps a real share
STREAM = -5  # the layout's random stream (see ``seed_entropy``)

# Colour family (RGB in [0, 1]) and texture tint (what one unit of texture adds) per class.
_BASE = np.array(
    [[0.55, 0.72, 0.92], [0.58, 0.30, 0.24], [0.26, 0.52, 0.20], [0.30, 0.30, 0.32],
     [0.12, 0.32, 0.55]]
)  # fmt: skip
_TINT = np.array(
    [[0.40, 0.28, 0.08], [0.14, 0.26, 0.28], [0.07, 0.15, 0.05], [0.07, 0.07, 0.07],
     [0.10, 0.14, 0.17]]
)  # fmt: skip


class Waves(NamedTuple):
    """Plane waves ``sum amp * sin(2 pi (fx x + fy y) + phase + drift t)`` (arrays [J])."""

    fx: np.ndarray
    fy: np.ndarray
    phase: np.ndarray
    drift: np.ndarray  # radians per second
    amp: np.ndarray

    def factors(
        self, xs: np.ndarray, ys: np.ndarray, t: float, dtype: type = np.float64
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(A [H, 2J], B [2J, W])`` with ``A @ B`` the waves at the pixel centres."""
        u = (2.0 * np.pi) * np.multiply.outer(xs, self.fx)  # [W, J]
        v = (2.0 * np.pi) * np.multiply.outer(ys, self.fy) + (self.phase + self.drift * t)
        a = np.concatenate([self.amp * np.cos(v), self.amp * np.sin(v)], axis=1)
        b = np.concatenate([np.sin(u), np.cos(u)], axis=1).T
        return a.astype(dtype), np.ascontiguousarray(b, dtype=dtype)


def _waves(
    rng: np.random.Generator,
    count: int,
    freq: tuple[float, float],
    drift: float,
    squash: tuple[float, float] = (1.0, 1.0),
) -> Waves:
    """``count`` waves of random direction and ``freq`` (cycles per canvas unit), the x and
    y frequencies scaled by ``squash`` (anisotropic textures), amplitudes ~ 1/f (smooth
    fields are dominated by their low frequencies), total variance 1."""
    theta = rng.uniform(0.0, 2.0 * np.pi, count)
    f = rng.uniform(*freq, count)
    amp = 1.0 / f
    amp *= math.sqrt(2.0 / float(np.sum(amp * amp)))  # variance of the sum = 1
    return Waves(
        fx=f * np.cos(theta) * squash[0],
        fy=f * np.sin(theta) * squash[1],
        phase=rng.uniform(0.0, 2.0 * np.pi, count),
        drift=rng.uniform(-drift, drift, count),
        amp=amp,
    )


def _texture(rng: np.random.Generator, cls: int) -> Waves:
    """The texture waves of stuff class ``cls`` (the wall's bricks are added separately)."""
    if cls == SKY:  # soft clouds, stretched sideways
        return _waves(rng, 4, (1.5, 4.0), 0.3, squash=(0.5, 1.5))
    if cls == GRASS:  # blades: fine vertical streaks
        return _waves(rng, 8, (25.0, 60.0), 0.5, squash=(1.0, 0.15))
    if cls == ROAD:  # fine isotropic speckle
        return _waves(rng, 8, (40.0, 90.0), 0.0)
    if cls == WATER:  # ripples moving along, mostly horizontal crests
        return _waves(rng, 6, (12.0, 30.0), 4.0, squash=(0.15, 1.0))
    return _waves(rng, 3, (2.0, 6.0), 0.2)  # wall: stains across the bricks


@dataclass(frozen=True)
class StuffLayout:
    """A panoptic scene's stuff: its classes, bands, fields, looks and camera pan."""

    classes: np.ndarray  # [n] indices into STUFF_NAMES, top band first
    class_ids: np.ndarray  # [n] uint8 class ids (FIRST_STUFF_ID + classes)
    bands: np.ndarray  # [n, 2] (top, bottom) of each band in canvas units
    fields: tuple[Waves, ...]  # [n] where-fields
    textures: tuple[Waves, ...]  # [n]
    base: np.ndarray  # [n, 3] colour
    tint: np.ndarray  # [n, 3]
    pan: float  # camera speed, canvas units per second (the scene slides by -pan * t)
    brick: tuple[float, float]  # brick width and height in canvas units

    @classmethod
    def from_seed(cls, seed: int) -> StuffLayout:
        """The stuff of panoptic scene ``seed`` (stream ``STREAM``)."""
        rng = np.random.default_rng(seed_entropy(seed, STREAM))
        n = int(rng.integers(3, len(STUFF_NAMES) + 1))
        classes = rng.permutation(len(STUFF_NAMES))[:n]
        share = MIN_BAND + rng.dirichlet(np.full(n, 2.0)) * (1.0 - n * MIN_BAND)
        edges = np.concatenate([[0.0], np.cumsum(share)])
        edges[0], edges[-1] = -1.0, 2.0  # the outer bands reach beyond the frame
        fields = tuple(_waves(rng, 8, (1.0, 6.0), 0.35) for _ in range(n))
        textures = tuple(_texture(rng, int(c)) for c in classes)
        jitter = rng.uniform(-0.06, 0.06, (n, 3))
        pan = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.03, 0.08))
        return cls(
            classes=classes,
            class_ids=(FIRST_STUFF_ID + classes).astype(np.uint8),
            bands=np.stack([edges[:-1], edges[1:]], axis=1),
            fields=fields,
            textures=textures,
            base=np.clip(_BASE[classes] + jitter, 0.0, 1.0),
            tint=_TINT[classes],
            pan=pan,
            brick=(float(rng.uniform(0.07, 0.1)), float(rng.uniform(0.025, 0.035))),
        )


def stuff_labels(layout: StuffLayout, xs: np.ndarray, ys: np.ndarray, t: float) -> np.ndarray:
    """[H, W] uint8 index into ``layout.classes`` of the stuff at each pixel centre
    (``xs`` [W], ``ys`` [H] in canvas units) at time ``t``."""
    px = xs + layout.pan * t
    best = np.empty((len(ys), len(xs)), dtype=np.float64)
    field = np.empty_like(best)
    labels = np.zeros(best.shape, dtype=np.uint8)
    for k, waves in enumerate(layout.fields):
        a, b = waves.factors(px, ys, t)
        top, bottom = layout.bands[k]
        prior = -ALPHA * np.maximum(np.maximum(top - ys, ys - bottom), 0.0)
        # the prior rides in the product as one more rank (a column of A, a row of ones in B)
        a = np.concatenate([a, prior[:, None]], axis=1)
        b = np.concatenate([b, np.ones((1, len(xs)))], axis=0)
        np.matmul(a, b, out=best if k == 0 else field)
        if k:
            won = field > best  # ties keep the earlier class: deterministic
            np.copyto(labels, np.uint8(k), where=won)
            np.maximum(best, field, out=best)
    return labels


def _bricks(layout: StuffLayout, px: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brick courses as rank-3 factors: light mortar lines (+1) and a random shade per brick.

    A course's vertical joints are offset by half a brick on odd rows, so the picture is
    ``odd(y) * joints_odd(x) + even(y) * joints_even(x) + rows(y)``."""
    bw, bh = layout.brick
    mortar = 0.12  # of a brick's height
    row = np.floor(ys / bh)
    odd = (row % 2.0).astype(np.float64)
    rows = (ys / bh - row < mortar) + 0.25 * _hash(row)
    cols = []
    for shift in (0.0, 0.5):
        u = px / bw + shift
        cols.append((u - np.floor(u) < mortar * bh / bw) + 0.25 * _hash(np.floor(u) + 7.0 * shift))
    a = np.stack([odd, 1.0 - odd, rows], axis=1)
    b = np.stack([cols[1], cols[0], np.ones_like(px)], axis=0)
    return a, b


def _hash(v: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random value in [-0.5, 0.5) per integer ``v`` (a brick's shade)."""
    s = np.sin(v * 12.9898 + 4.1414) * 43758.5453
    return s - np.floor(s) - 0.5


def _shade(layout: StuffLayout, k: int, px: np.ndarray, ys: np.ndarray, t: float) -> np.ndarray:
    """[H, W] float32 texture of the layout's class ``k`` (in units of its tint)."""
    a, b = layout.textures[k].factors(px, ys, t, np.float32)
    cls = int(layout.classes[k])
    if cls == WALL:
        ab, bb = _bricks(layout, px, ys)
        a = np.concatenate([0.3 * a, ab.astype(np.float32)], axis=1)
        b = np.concatenate([b, bb.astype(np.float32)], axis=0)
    shade = a @ b
    if cls == WALL:  # where two mortar lines cross, not twice as light
        np.minimum(shade, 1.1, out=shade)
    elif cls == SKY:  # clouds only where the field is high: blue sky between them
        shade -= 0.3
        np.maximum(shade, 0.0, out=shade)
    return shade


def stuff_picture(
    layout: StuffLayout, labels: np.ndarray, xs: np.ndarray, ys: np.ndarray, t: float
) -> np.ndarray:
    """The [3, H, W] float32 background: each pixel in its stuff's colour and texture."""
    px = xs + layout.pan * t
    shade = _shade(layout, 0, px, ys, t)
    for k in range(1, len(layout.classes)):  # (np.choose was four times slower)
        np.copyto(shade, _shade(layout, k, px, ys, t), where=labels == k)
    img = np.empty((3, *labels.shape), dtype=np.float32)
    tint = np.empty(labels.shape, dtype=np.float32)
    index = labels.astype(np.intp)  # once: np.take would convert a uint8 index every time
    for c in range(3):  # colour and tint by table look-up of the class index
        np.take(layout.base[:, c].astype(np.float32), index, out=img[c])
        np.take(layout.tint[:, c].astype(np.float32), index, out=tint)
        tint *= shade
        img[c] += tint
    return img
