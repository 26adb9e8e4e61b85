"""Association costs between tracks and detections, and the optimal assignment.

Similarity of a track and a detection is a weighted mean of two IoUs:

* **box IoU** of the track's predicted box and the detection's box;
* **mask IoU** of the track's last mask, moved by the predicted displacement, and the
  detection's mask. Masks are box-local crops, so the intersection is counted on the
  overlap of the two crop rectangles only: the cost grows with the overlap, not the frame.

Classes play no part (the tracker votes a track's class); pairs below the stage's minimum
similarity cannot match. The
assignment maximises the total similarity (Hungarian method, ``scipy``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["Crop", "assign", "box_iou_matrix", "crop_iou", "similarity_matrix"]


@dataclass(frozen=True)
class Crop:
    """A binary mask restricted to a rectangle of the frame: pixel (0, 0) of ``mask`` is
    frame column ``x0``, row ``y0``. ``area`` is cached because every pair needs it."""

    x0: int
    y0: int
    mask: np.ndarray  # [h, w] bool
    area: int

    @classmethod
    def of(cls, x0: int, y0: int, mask: np.ndarray) -> Crop:
        mask = np.asarray(mask, dtype=bool)
        return cls(int(x0), int(y0), mask, int(np.count_nonzero(mask)))

    def moved(self, dx: int, dy: int) -> Crop:
        """The same mask ``dx`` columns right and ``dy`` rows down (no copy)."""
        return Crop(self.x0 + dx, self.y0 + dy, self.mask, self.area)


def crop_iou(a: Crop, b: Crop) -> float:
    """IoU of two cropped masks, computed on the overlap of their rectangles only."""
    union_base = a.area + b.area
    if union_base == 0:
        return 0.0
    x0, y0 = max(a.x0, b.x0), max(a.y0, b.y0)
    x1 = min(a.x0 + a.mask.shape[1], b.x0 + b.mask.shape[1])
    y1 = min(a.y0 + a.mask.shape[0], b.y0 + b.mask.shape[0])
    if x1 <= x0 or y1 <= y0:
        return 0.0
    pa = a.mask[y0 - a.y0 : y1 - a.y0, x0 - a.x0 : x1 - a.x0]
    pb = b.mask[y0 - b.y0 : y1 - b.y0, x0 - b.x0 : x1 - b.x0]
    inter = int(np.count_nonzero(pa & pb))
    return inter / (union_base - inter)


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [N, 4] with every box in ``b`` [M, 4] (x0, y0, x1, y1)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    # np.maximum with 0 instead of np.clip: the same numbers, a fraction of the overhead on
    # the small arrays a frame has (this runs a few times per frame)
    area_a = np.maximum(a[:, 2] - a[:, 0], 0) * np.maximum(a[:, 3] - a[:, 1], 0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def similarity_matrix(
    track_boxes: np.ndarray,
    track_crops: Sequence[Crop | None],
    det_boxes: np.ndarray,
    det_crops: Sequence[Crop | None],
    mask_weight: float,
) -> np.ndarray:
    """[T, D] similarity in [0, 1]. ``track_crops`` are the tracks' masks already moved to
    their predicted place; a missing mask on either side leaves that pair to box IoU."""
    sim = box_iou_matrix(track_boxes, det_boxes)
    if mask_weight > 0:
        # only pairs whose boxes touch can have mask overlap; the rest stay at 0
        for t, d in zip(*np.nonzero(sim > 0), strict=True):
            tc, dc = track_crops[t], det_crops[d]
            if tc is not None and dc is not None:
                sim[t, d] = mask_weight * crop_iou(tc, dc) + (1.0 - mask_weight) * sim[t, d]
    return sim


def assign(similarity: np.ndarray, min_similarity: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Optimal one-to-one matching maximising total similarity; pairs below
    ``min_similarity`` never match. Returns (matches, unmatched rows, unmatched columns),
    each sorted, so the result is deterministic."""
    rows, cols = similarity.shape
    if rows == 0 or cols == 0:
        return [], list(range(rows)), list(range(cols))
    feasible = similarity >= min_similarity
    # infeasible pairs cost more than any feasible total, so they are chosen only when
    # nothing else is left; they are then dropped from the matches
    cost = np.where(feasible, 1.0 - similarity, 1.0 + rows + cols)
    r, c = linear_sum_assignment(cost)
    matches = sorted((int(i), int(j)) for i, j in zip(r, c, strict=True) if feasible[i, j])
    matched_r = {i for i, _ in matches}
    matched_c = {j for _, j in matches}
    return matches, [i for i in range(rows) if i not in matched_r], [j for j in range(cols) if j not in matched_c]
