"""Colours for overlays (numpy only, so that processes without OpenCV can draw too)."""

from __future__ import annotations

import numpy as np

__all__ = ["class_palette", "track_colours"]

_GOLDEN = 0.6180339887498949  # hue step that keeps successive classes far apart


def class_palette(num_classes: int) -> np.ndarray:
    """Deterministic RGB colours [num_classes, 3] uint8; class 0 (background) is black.

    Hues advance by the golden ratio so neighbouring class ids get clearly different
    colours; saturation and value vary on their own cycles so classes whose hues come
    close again still differ. Colour i does not depend on ``num_classes``.
    """
    n = int(num_classes)
    if n <= 0:
        return np.zeros((0, 3), dtype=np.uint8)
    out = _colours(np.arange(n, dtype=np.int64))
    out[0] = 0
    return out


def _colours(indices: np.ndarray) -> np.ndarray:
    """Palette colour ``i`` for each index, computed on its own (RGB uint8 [N, 3])."""
    i = indices.astype(np.float64) - 1.0
    hue = (i * _GOLDEN) % 1.0
    sat = 0.55 + 0.4 * ((i * 0.3819660112501051) % 1.0)
    val = 0.7 + 0.3 * ((i * 0.7548776662466927) % 1.0)
    # HSV -> RGB, vectorised: sector k in 0..5 and position f inside it.
    h6 = hue * 6.0
    k = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p = val * (1.0 - sat)
    q = val * (1.0 - sat * f)
    t = val * (1.0 - sat * (1.0 - f))
    choices = [
        np.stack((val, t, p), 1),
        np.stack((q, val, p), 1),
        np.stack((p, val, t), 1),
        np.stack((p, q, val), 1),
        np.stack((t, p, val), 1),
        np.stack((val, p, q), 1),
    ]
    rgb = np.choose(k[:, None], choices)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def track_colours(track_ids: np.ndarray) -> np.ndarray:
    """RGB colours [N, 3] uint8 for track ids: colour ``i`` of :func:`class_palette` for id
    ``i`` (ids count from 1, so no track is black), whatever the largest id is."""
    ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
    return _colours(ids) if ids.size else np.zeros((0, 3), dtype=np.uint8)
