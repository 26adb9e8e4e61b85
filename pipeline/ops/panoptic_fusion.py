"""Panoptic fusion: instance masks ("things") and a semantic class map ("stuff") into one
segment-id map, the Panoptic FPN way (Kirillov et al., CVPR 2019).

Every pixel gets at most one segment; segment ids count from 1 in the order segments are
placed, 0 is void (no segment). The rules:

1. instances in descending score order, those below ``score_threshold`` skipped; an
   instance whose mask is more than ``overlap_threshold`` already taken (by higher-scoring
   instances) is dropped, otherwise it takes its still-free pixels;
2. then each stuff class of the class map, in class order: its still-free pixels form one
   segment if there are at least ``stuff_min_area`` of them. Thing classes, background (0)
   and unlabeled (255) of the class map never become stuff: a thing is only ever an
   instance.

``stuff_min_area`` scales with the frame: :func:`stuff_area_for` gives the area that is
to a frame what 4096 px (Detectron2's default) is to a 640x480 COCO-size image.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PanopticSegment", "fuse_panoptic", "stuff_area_for"]

COCO_STUFF_AREA = 4096  # Detectron2's stuff minimum, at COCO scale
COCO_FRAME_PIXELS = 640 * 480
UNLABELED = 255


@dataclass(frozen=True)
class PanopticSegment:
    """One segment of a panoptic map: its id in the map, class, kind and extent."""

    id: int
    category_id: int
    isthing: bool
    area: int
    bbox: tuple[int, int, int, int]  # x, y, width, height (COCO), pixel-edge coordinates
    score: float | None = None  # things only
    instance: int | None = None  # things: index of the instance it came from


def stuff_area_for(height: int, width: int) -> int:
    """The minimum stuff area for a ``height`` x ``width`` frame (4096 px at 640x480)."""
    return max(1, int(round(COCO_STUFF_AREA * height * width / COCO_FRAME_PIXELS)))


def _bbox(mask: np.ndarray, x0: int = 0, y0: int = 0) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (x0 + int(cols[0]), y0 + int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


def _place_instances(segment_map: np.ndarray, crops: Sequence[tuple[int, int, np.ndarray]],
                     scores: Sequence[float], labels: Sequence[int], score_threshold: float,
                     overlap_threshold: float) -> list[PanopticSegment]:
    """Rule 1: instances into ``segment_map`` (in place), best first."""
    height, width = segment_map.shape
    segments: list[PanopticSegment] = []
    order = sorted(range(len(crops)), key=lambda i: (-float(scores[i]), i))
    for i in order:
        if float(scores[i]) < score_threshold:
            continue
        cx0, cy0, mask = crops[i]
        # the crop clipped to the frame (a mask may hang over the edge)
        x0, y0 = max(cx0, 0), max(cy0, 0)
        x1, y1 = min(cx0 + mask.shape[1], width), min(cy0 + mask.shape[0], height)
        if x1 <= x0 or y1 <= y0:
            continue
        m = mask[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
        area = int(np.count_nonzero(m))
        if area == 0:
            continue
        region = segment_map[y0:y1, x0:x1]
        taken = m & (region != 0)
        if np.count_nonzero(taken) / area > overlap_threshold:
            continue
        free = m & ~taken
        if not free.any():
            continue
        segment_id = len(segments) + 1
        region[free] = segment_id
        segments.append(PanopticSegment(segment_id, int(labels[i]), True, int(np.count_nonzero(free)),
                                        _bbox(free, x0, y0), float(scores[i]), i))
    return segments


def fuse_panoptic(
    frame_size: tuple[int, int],
    crops: Sequence[tuple[int, int, np.ndarray]],
    scores: Sequence[float],
    labels: Sequence[int],
    class_map: np.ndarray | None,
    thing_classes: Collection[int],
    *,
    score_threshold: float = 0.5,
    overlap_threshold: float = 0.5,
    stuff_min_area: int | None = None,
) -> tuple[np.ndarray, list[PanopticSegment]]:
    """The segment-id map [H, W] uint32 and its segments (see the module docstring).

    ``crops``: one ``(x0, y0, bool mask)`` per instance (box-local masks, as postprocess
    makes them); ``class_map``: the semantic model's [H, W] class ids, or None (things only).
    """
    height, width = frame_size
    if not (len(crops) == len(scores) == len(labels)):
        raise ValueError(f"{len(crops)} masks, {len(scores)} scores, {len(labels)} labels")
    segment_map = np.zeros((height, width), dtype=np.uint32)
    segments = _place_instances(segment_map, crops, scores, labels, score_threshold, overlap_threshold)
    if class_map is None:
        return segment_map, segments
    if class_map.shape != (height, width):
        raise ValueError(f"class map {class_map.shape} does not match the frame {frame_size}")
    min_area = stuff_area_for(height, width) if stuff_min_area is None else int(stuff_min_area)
    free = segment_map == 0
    excluded = {0, UNLABELED, *(int(c) for c in thing_classes)}
    for category in np.unique(class_map[free]).tolist():
        if category in excluded:
            continue
        mask = free & (class_map == category)
        area = int(np.count_nonzero(mask))
        if area < min_area:
            continue
        segment_id = len(segments) + 1
        segment_map[mask] = segment_id
        segments.append(PanopticSegment(segment_id, int(category), False, area, _bbox(mask)))
    return segment_map, segments
