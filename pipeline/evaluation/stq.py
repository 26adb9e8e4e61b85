"""Segmentation and Tracking Quality (STQ) of panoptic video predictions with track ids
(Weber et al., "STEP: Segmenting and Tracking Every Pixel", NeurIPS 2021 Datasets track).

Why STQ rather than VPQ: VPQ matches segment *tubes* inside windows of k frames with PQ's
IoU > 0.5 rule, so it needs a window size (averaged over several) and a threshold, and one
wrong match costs a whole segment. STQ scores association pixel by pixel over the whole
video, with no window or threshold, and splits into two readable factors: association (AQ,
tracking only) and segmentation (SQ, semantic only); ``STQ = sqrt(AQ * SQ)``.

Per pixel, the ground-truth class is its GT segment's category (GT id 0 = VOID: the pixel
is ignored everywhere) and the predicted class its predicted segment's (predicted VOID = a
miss). All frames are one video (one stream); GT frame ``i`` meets prediction ``i + shift``.

* SQ: one confusion matrix over all frames (non-void GT pixels); per category ``IoU = TP /
  (TP + FP + FN)``; SQ the mean over the categories, things and stuff, with TP + FP + FN > 0.
* AQ (class-agnostic, as STEP's: a predicted track overlapping a GT track scores whatever
  the classes): a GT track is the ``track_id`` of the non-crowd GT thing segments, a
  predicted track the ``track_id`` of the predicted thing segments; a predicted thing
  segment whose ``track_id`` is None is a track of its own (that frame, that segment). For
  GT track g and predicted track p: ``TPA = |p & g|``, ``|g|`` its pixels, ``|p|`` its pixels
  on non-void GT, ``IoU = TPA / (|p| + |g| - TPA)``; ``AQ = 1/|G| sum_g 1/|g| sum_p TPA IoU``.

Departures from deeplab2's reference (``STQuality``): a track key is the track id alone
(deeplab2's includes the class, so a track whose class flips splits); ``|p|`` leaves out
predicted pixels on VOID GT (deeplab2 counts them), and, as there, on GT crowd; predicted VOID
on non-void GT is a miss of the GT class, not an extra zero-IoU class in the mean (deeplab2's
quirk); untracked thing pixels are one-frame tracks (deeplab2 lumps instance 0 of a class into
one track); with no GT track AQ is NaN, with no class SQ is NaN (deeplab2 gives 0).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.panoptic import (
    Categories,
    FrameLike,
    PanopticFrame,
    _as_frame,
    _categories,
    _frames,
    _infer_categories,
    _Segments,
)
from pipeline.evaluation.records import EvaluationError

__all__ = ["segmentation_and_tracking_quality"]

_PAIR = 1 << 32  # pair key = g * _PAIR + p


class _Accumulator:
    """Confusion matrix and track areas, frame by frame."""

    def __init__(self, cats: Mapping[int, Mapping[str, Any]]) -> None:
        self.cats = cats
        self.cat_index = {cid: row for row, cid in enumerate(cats)}
        k = len(cats)
        self.confusion = np.zeros((k, k + 1), dtype=np.int64)  # column k: predicted VOID
        self.gt_keys: dict[Any, int] = {}
        self.pred_keys: dict[Any, int] = {}
        self.g_area: Counter[int] = Counter()
        self.p_area: Counter[int] = Counter()
        self.tpa: Counter[int] = Counter()
        self.frames = 0

    def _thing(self, seg: Mapping[str, Any]) -> bool:
        return bool(seg.get("isthing", self.cats[int(seg["category_id"])]["isthing"]))

    def _tracks(self, info: Any, what: str, frame: int, gt: bool) -> np.ndarray:
        """Per segment: its global track index, -1 for none (stuff; GT crowd)."""
        out = np.full(len(info), -1, dtype=np.int64)
        keys = self.gt_keys if gt else self.pred_keys
        for n, seg in enumerate(info):
            if not self._thing(seg) or (gt and seg.get("iscrowd", 0)):
                continue
            tid = seg.get("track_id")
            if tid is None and gt:
                raise EvaluationError(f"{what}: thing segment {seg['id']} has no track_id")
            key = int(tid) if tid is not None else (frame, int(seg["id"]))
            out[n] = keys.setdefault(key, len(keys))
        return out

    def add(self, what: str, gt: PanopticFrame, pred: PanopticFrame | None, frame: int) -> None:
        gt_map = gt.ids()
        pred = pred if pred is not None else PanopticFrame([], np.zeros_like(gt_map))
        pred_map = pred.ids()
        if gt_map.shape != pred_map.shape:
            raise EvaluationError(
                f"{what}: prediction is {pred_map.shape[::-1]}, the ground truth "
                f"{gt_map.shape[::-1]} (width, height)"
            )
        g = _Segments(gt.segments_info, self.cat_index, f"{what} ground truth")
        p = _Segments(pred.segments_info, self.cat_index, f"{what} prediction")
        gi = g.index(gt_map, f"{what} ground truth").ravel()
        pi = p.index(pred_map, f"{what} prediction").ravel()
        k = len(self.cats)
        valid = gi > 0
        g_cls = np.concatenate([[-1], g.cat])[gi[valid]]
        p_cls = np.concatenate([[k], p.cat])[pi[valid]]
        counts = np.bincount(g_cls * (k + 1) + p_cls, minlength=k * (k + 1))
        self.confusion += counts.reshape(k, k + 1)
        g_track = np.concatenate(
            [[-1], self._tracks(gt.segments_info, f"{what} ground truth", frame, True)]
        )[gi]
        p_track = np.concatenate(
            [[-1], self._tracks(pred.segments_info, f"{what} prediction", frame, False)]
        )[pi]
        crowd_seg = [self._thing(s) and bool(s.get("iscrowd", 0)) for s in gt.segments_info]
        crowd = np.concatenate([[False], np.array(crowd_seg, dtype=bool)])[gi]
        p_mask = valid & ~crowd & (p_track >= 0)
        g_mask = g_track >= 0
        both = g_mask & p_mask
        _count(self.g_area, g_track[g_mask])
        _count(self.p_area, p_track[p_mask])
        _count(self.tpa, g_track[both] * _PAIR + p_track[both])
        self.frames += 1

    def result(self) -> dict[str, Any]:
        k = len(self.cats)
        tp = np.diag(self.confusion[:, :k]).astype(np.float64)
        union = self.confusion.sum(axis=1) + self.confusion[:, :k].sum(axis=0) - tp
        counted = union > 0
        ious = np.divide(tp, union, out=np.zeros(k), where=counted)
        sq = float(ious[counted].mean()) if counted.any() else math.nan
        per_gt: Counter[int] = Counter()
        for key, tpa in self.tpa.items():
            gk, pk = divmod(key, _PAIR)
            per_gt[gk] += tpa * tpa / (self.p_area[pk] + self.g_area[gk] - tpa)
        n_gt = len(self.g_area)
        aq = math.nan
        if n_gt:
            aq = sum(per_gt[gk] / area for gk, area in self.g_area.items()) / n_gt
        names = [str(c.get("name", cid)) for cid, c in self.cats.items()]
        return {
            "stq": math.sqrt(aq * sq),
            "aq": aq,
            "sq": sq,
            "gt_tracks": n_gt,
            "pred_tracks": len(self.p_area),
            "frames": self.frames,
            "per_class_iou": {names[r]: float(ious[r]) for r in np.flatnonzero(counted)},
        }


def _count(counter: Counter[int], keys: np.ndarray) -> None:
    ids, counts = np.unique(keys, return_counts=True)
    counter.update(dict(zip(ids.tolist(), counts.tolist(), strict=True)))


def segmentation_and_tracking_quality(
    gt: str | Path | Mapping[int, FrameLike],
    predictions: str | Path | Mapping[int, FrameLike],
    *,
    categories: Categories | Iterable[Mapping[str, Any]] | None = None,
    shift: int = 0,
    only_predicted: bool = False,
) -> dict[str, Any]:
    """STQ, AQ, SQ (module docstring) of one video's panoptic predictions with track ids.
    ``gt`` and ``predictions`` as for ``evaluate_panoptic``: a COCO panoptic path or a
    mapping frame index -> ``PanopticFrame`` or ``(id_map, segments_info)``; GT frame ``i``
    is compared with prediction ``i + shift``, a missing prediction is an empty frame unless
    ``only_predicted``. Returns ``stq``, ``aq``, ``sq``, ``gt_tracks``, ``pred_tracks``,
    ``frames`` and ``per_class_iou`` (category name -> IoU, the categories SQ averages)."""
    gt_frames, gt_cats = _frames(gt)
    pred_frames, _ = _frames(predictions)
    if categories is not None:
        cats = categories if isinstance(categories, Mapping) else _categories(categories)
    else:
        cats = gt_cats or _infer_categories([*gt_frames.values(), *pred_frames.values()])
    acc = _Accumulator({int(c): v for c, v in cats.items()})
    for i in sorted(gt_frames):
        j = i + int(shift)
        if only_predicted and j not in pred_frames:
            continue
        pred = pred_frames.get(j)
        pred_frame = _as_frame(pred) if pred is not None else None
        acc.add(f"frame {i}", _as_frame(gt_frames[i]), pred_frame, j)
    return acc.result()
