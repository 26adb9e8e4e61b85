"""Panoptic mode: one instance model and one semantic model, fused into one segmentation.

The two models name their classes on their own; the published result needs one list.
``PanopticLabels`` decides it once, from the two model specs: the semantic model's classes
keep their ids (so its class map needs no remapping), and an instance class the semantic
model does not know is appended. Every instance class (but background) is a *thing*; a
semantic class is *stuff* unless it is also a thing (``pipeline.ops.panoptic_fusion`` never
makes a thing class into stuff).

``panoptic_frame`` is the step the postprocess stage and the in-process reference both run:
instances (already thresholded, NMS'd and pasted back) and the frame-size class map in, the
segment-id map and its segments out, the Panoptic FPN way (``fuse_panoptic``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.backends.base import ModelSpec
from pipeline.ops.panoptic_fusion import PanopticSegment, fuse_panoptic

__all__ = ["PanopticLabels", "PanopticParams", "panoptic_frame", "segment_record"]


@dataclass(frozen=True)
class PanopticParams:
    """The fusion's thresholds (config ``model``: ``score_threshold``, ``panoptic_overlap``,
    ``stuff_min_area``)."""

    score_threshold: float = 0.5
    overlap_threshold: float = 0.5
    stuff_min_area: int | None = None  # None: scaled with the frame (stuff_area_for)


@dataclass(frozen=True)
class PanopticLabels:
    """The published class list of a panoptic run and how both models' ids map into it."""

    class_names: tuple[str, ...]  # index = published class id; 0 is background
    thing_ids: tuple[int, ...]  # instance model class id -> published class id
    model_id: str  # "<instance model id>+<semantic model id>"
    untrained: bool  # either model has random weights

    @classmethod
    def of(cls, instance: ModelSpec, semantic: ModelSpec) -> PanopticLabels:
        """Labels for ``instance`` (things) fused with ``semantic`` (stuff, by class map)."""
        names = list(semantic.class_names)
        index = {name: k for k, name in enumerate(names)}
        thing_ids = [0]
        for name in instance.class_names[1:]:
            if name not in index:
                index[name] = len(names)
                names.append(name)
            thing_ids.append(index[name])
        return cls(tuple(names), tuple(thing_ids), f"{instance.model_id}+{semantic.model_id}",
                   instance.untrained or semantic.untrained)

    @property
    def thing_classes(self) -> frozenset[int]:
        """Published ids of the thing classes (they are never stuff)."""
        return frozenset(self.thing_ids[1:])

    def published_labels(self, labels: np.ndarray) -> np.ndarray:
        """Instance-model class ids -> published ids (ids past the model's list stay)."""
        table = np.asarray(self.thing_ids, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        inside = (labels >= 0) & (labels < len(table))
        return np.where(inside, table[np.clip(labels, 0, len(table) - 1)], labels)


def panoptic_frame(
    frame_size: tuple[int, int],
    crops: list[tuple[int, int, np.ndarray]],
    scores: np.ndarray,
    labels: np.ndarray,
    class_map: np.ndarray,
    panoptic: PanopticLabels,
    params: PanopticParams,
) -> tuple[np.ndarray, list[PanopticSegment]]:
    """The frame's segment-id map [H, W] uint32 and segments. ``labels``: published ids
    (``PanopticLabels.published_labels``); ``class_map``: the semantic model's, frame size."""
    return fuse_panoptic(
        frame_size, crops, [float(s) for s in scores], [int(v) for v in labels], class_map,
        panoptic.thing_classes, score_threshold=params.score_threshold,
        overlap_threshold=params.overlap_threshold, stuff_min_area=params.stuff_min_area,
    )  # fmt: skip


def segment_record(segment: PanopticSegment) -> dict[str, Any]:
    """A segment as it travels from postprocess to publish (plain types, msgpack-safe):
    ``instance`` is the index of the instance it came from (things), for its track id."""
    return {
        "id": segment.id,
        "category_id": segment.category_id,
        "isthing": segment.isthing,
        "score": segment.score,
        "area": segment.area,
        "bbox": list(segment.bbox),
        "instance": segment.instance,
    }
