"""Signed distance functions of the synthetic shape classes.

Every shape is defined in its own local frame (centre at the origin, not rotated) in
*canvas units* (see ``pipeline.synthetic.scene``), with ``r`` its circumradius-like size.
A function returns the signed distance (negative inside) for arrays of local points, so a
mask is exactly ``sdf < 0`` sampled at pixel centres (resolution independent), and an
antialiased coverage follows from the distance in pixels.
"""

from __future__ import annotations

import math

import numpy as np

from engines.models.demo_classes import DEMO_CLASS_NAMES

# Class ids 1..K, index 0 is background. Classes differ by SHAPE only. The names are the demo
# models' (defined in engines, the lower layer, which labels their outputs with them).
CLASS_NAMES: tuple[str, ...] = DEMO_CLASS_NAMES
NUM_CLASSES = len(CLASS_NAMES)  # including background

CIRCLE, SQUARE, TRIANGLE, STAR, RING, CROSS = range(1, 7)

RING_INNER = 0.55  # inner radius / outer radius of the annulus
STAR_INNER = 0.45  # inner vertex radius / outer vertex radius of the 5-point star
CROSS_ARM = 0.34  # half arm width / half arm length

# Radius of the bounding circle relative to r (for the pixel region to evaluate).
BOUND_FACTOR = {
    CIRCLE: 1.0,
    SQUARE: 1.0,
    TRIANGLE: 1.0,
    STAR: 1.0,
    RING: 1.0,
    CROSS: math.hypot(1.0, CROSS_ARM),
}


def _sdf_box(x: np.ndarray, y: np.ndarray, bx: float, by: float) -> np.ndarray:
    qx = np.abs(x) - bx
    qy = np.abs(y) - by
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    return outside + inside


def _sdf_polygon(x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Exact signed distance to a simple polygon (negative inside), vectorised over points."""
    n = len(vx)
    d2 = np.full(x.shape, np.inf)
    sign = np.ones(x.shape)
    for i in range(n):
        j = i - 1
        ex, ey = vx[j] - vx[i], vy[j] - vy[i]
        wx, wy = x - vx[i], y - vy[i]
        h = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        bx, by = wx - ex * h, wy - ey * h
        np.minimum(d2, bx * bx + by * by, out=d2)
        c1 = y >= vy[i]
        c2 = y < vy[j]
        c3 = ex * wy > ey * wx
        flip = (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
        sign[flip] *= -1.0
    return sign * np.sqrt(d2)


def _regular_vertices(count: int, radii: list[float]) -> tuple[np.ndarray, np.ndarray]:
    ang = -np.pi / 2 + np.arange(count) * (2 * np.pi / count)
    rad = np.array([radii[k % len(radii)] for k in range(count)], dtype=np.float64)
    return rad * np.cos(ang), rad * np.sin(ang)


def shape_sdf(cls: int, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Signed distance of local points ``(x, y)`` to shape class ``cls`` of size ``r``."""
    if cls == CIRCLE:
        return np.hypot(x, y) - r
    if cls == SQUARE:
        h = r / math.sqrt(2.0)
        return _sdf_box(x, y, h, h)
    if cls == TRIANGLE:
        vx, vy = _regular_vertices(3, [r])
        return _sdf_polygon(x, y, vx, vy)
    if cls == STAR:
        vx, vy = _regular_vertices(10, [r, r * STAR_INNER])
        return _sdf_polygon(x, y, vx, vy)
    if cls == RING:
        ri = r * RING_INNER
        return np.abs(np.hypot(x, y) - 0.5 * (r + ri)) - 0.5 * (r - ri)
    if cls == CROSS:
        w = r * CROSS_ARM
        return np.minimum(_sdf_box(x, y, r, w), _sdf_box(x, y, w, r))
    raise ValueError(f"unknown shape class {cls}")
