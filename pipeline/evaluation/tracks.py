"""Tracked instance predictions against ground-truth tracks (HOTA, CLEAR MOT, Identity on
mask IoU; the metrics are :mod:`pipeline.evaluation.tracking`'s).

* Ground truth: COCO annotations with an integer ``track_id`` (as ``python -m
  pipeline.synthetic`` writes them); a GT track is one (``category_id``, ``track_id``).
  ``iscrowd`` annotations are ignore regions, as in TrackEval's KITTI-MOTS evaluation: a
  prediction that is not matched (IoU >= 0.5, same class) and lies more than half inside
  one (intersection over its own area > 0.5) is removed.
* Predictions: every instance carries ``track_id`` (an integer >= 0, unique in its frame)
  and a ``mask``. Classes map to GT categories by name, as for COCO AP; predictions of other
  classes are left out (``pred_dets_unknown_class``). Masks are first made non-overlapping
  (each pixel to the higher score, see :mod:`pipeline.evaluation.mots`), as the MOTS
  benchmarks require and ``--save-mots`` writes them; an instance left empty is dropped.

Frames: every ground-truth frame (a frame without a record has no prediction), or with
``only_predicted`` those with a record; ``shift`` as for COCO AP.

Reported (:func:`evaluate_tracking`): the top-level figures combine the classes weighted by
detections (TrackEval's ``cls_comb_det_av``: counts summed, AssA / LocA weighted by true
positives); ``class_averaged`` is the mean over the classes with any GT or predicted
detection (``cls_comb_cls_av``, empty classes ignored; its counts are sums);
``class_agnostic`` scores all objects as one class; ``per_class`` by category name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.evaluation.mots import exclusive_masks
from pipeline.evaluation.records import (
    CategoryMap,
    EvaluationError,
    _index_records,
    check_frame_size,
    check_mask_size,
    has_track_ids,
    record_track_ids,
)
from pipeline.evaluation.tracking import (
    EPS,
    TrackingSequence,
    class_average,
    combine,
    evaluate_sequence,
    make_sequence,
    mask_iou,
    summary,
)

__all__ = ["evaluate_tracking", "has_track_ids"]

_TRACK_KEY = 1 << 32  # GT track key = category_id * _TRACK_KEY + track_id


@dataclass
class _Objects:
    """Objects of one frame: track keys, category ids, RLE masks."""

    ids: list[int] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)
    masks: list[dict[str, Any]] = field(default_factory=list)

    def select(self, cls: int | None) -> np.ndarray:
        idx = np.arange(len(self.ids))
        return idx if cls is None else idx[np.asarray(self.classes, dtype=np.int64) == cls]


def _gt_rle(seg: Any, height: int, width: int) -> dict[str, Any]:
    """COCO segmentation (polygons, uncompressed or compressed RLE) as a compressed RLE."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg.get("counts"), list):
        return mask_utils.frPyObjects(seg, height, width)
    return seg


def _gt_objects(coco: Mapping[str, Any], shift: int, source: str):
    """Per frame: GT objects, and the merged ignore region of its crowd annotations."""
    from pycocotools import mask as mask_utils

    images = {int(img["id"]) + shift: img for img in coco["images"]}
    frames: dict[int, _Objects] = {}
    crowds: dict[int, list[dict[str, Any]]] = {}
    for ann in coco["annotations"]:
        t = int(ann["image_id"]) + shift
        if t not in images:
            continue
        rle = _gt_rle(ann["segmentation"], int(images[t]["height"]), int(images[t]["width"]))
        if ann.get("iscrowd"):
            crowds.setdefault(t, []).append(rle)
            continue
        tid, cat = ann.get("track_id"), int(ann["category_id"])
        if isinstance(tid, bool) or not isinstance(tid, int) or not 0 <= tid < 2**31:
            raise EvaluationError(
                f"{source}: annotation {ann.get('id')} (image {ann['image_id']}) has no "
                f"integer 'track_id' (got {tid!r}; tracking needs ground-truth track ids)"
            )
        objs = frames.setdefault(t, _Objects())
        if cat * _TRACK_KEY + tid in objs.ids:
            raise EvaluationError(
                f"{source}: image {ann['image_id']}: 'track_id' {tid} of category {cat} "
                "appears twice"
            )
        objs.ids.append(cat * _TRACK_KEY + tid)
        objs.classes.append(cat)
        objs.masks.append(rle)
    ignore = {t: mask_utils.merge(rles, intersect=0) for t, rles in crowds.items()}
    return frames, ignore


def _pred_objects(
    by_seq: Mapping[int, Mapping[str, Any]],
    images: Mapping[int, Mapping[str, Any]],
    categories: CategoryMap,
    exclusive: bool,
    source: str,
) -> tuple[dict[int, _Objects], int]:
    """Per frame: predicted objects; and the count of predictions of unknown classes."""
    frames: dict[int, _Objects] = {}
    unknown = 0
    for seq, rec in by_seq.items():
        img = images[seq]
        check_frame_size(rec, img)
        # an instance with ``track_id`` null is a detection no confirmed track owns (the
        # pipeline publishes it, but it is not tracker output): not scored as a track
        tids_all = record_track_ids(rec, source, required=False)
        insts = [inst for inst, tid in zip(rec.get("instances") or [], tids_all, strict=True) if tid is not None]
        tids = [tid for tid in tids_all if tid is not None]
        for k, inst in enumerate(insts):
            if inst.get("mask") is None:
                raise EvaluationError(
                    f"{source}: seq {seq} instance {k} has no 'mask' (tracking uses mask IoU)"
                )
            check_mask_size(inst["mask"], seq, int(img["height"]), int(img["width"]))
        masks = [inst["mask"] for inst in insts]
        if exclusive:
            masks = exclusive_masks(masks, [inst.get("score", 1.0) for inst in insts])
        objs = frames.setdefault(seq, _Objects())
        for inst, tid, mask in zip(insts, tids, masks, strict=True):
            cat = categories.category(inst, rec)
            if isinstance(cat, str):
                unknown += 1
            elif mask is not None:
                objs.ids.append(int(tid))
                objs.classes.append(cat)
                objs.masks.append(mask)
    return frames, unknown


def _outside_ignore(sim: np.ndarray, masks: list[dict[str, Any]], region: dict[str, Any]):
    """Keep-mask of predictions: not (unmatched at IoU 0.5 and IoA > 0.5 with ``region``)."""
    from pycocotools import mask as mask_utils

    unmatched = np.ones(sim.shape[1], dtype=bool)
    if sim.size:
        score = np.where(sim < 0.5 - EPS, -10000.0, sim)
        rows, cols = linear_sum_assignment(-score)
        unmatched[cols[score[rows, cols] > 0 + EPS]] = False
    ioa = np.asarray(mask_utils.iou(masks, [region], [1]), dtype=float).reshape(len(masks))
    return ~(unmatched & (ioa > 0.5 + EPS))


def _sequence(frames, gt, pred, ious, ignore, cls: int | None) -> TrackingSequence:
    """The tracking sequence of category ``cls`` (None: all objects as one class)."""
    gt_ids, pred_ids, sims = [], [], []
    empty = _Objects()
    for t in frames:
        g, p = gt.get(t, empty), pred.get(t, empty)
        gi, pi = g.select(cls), p.select(cls)
        sim = ious[t][np.ix_(gi, pi)]
        if t in ignore and len(pi):
            keep = _outside_ignore(sim, [p.masks[j] for j in pi], ignore[t])
            pi, sim = pi[keep], sim[:, keep]
        gt_ids.append([g.ids[i] for i in gi])
        pred_ids.append([p.ids[j] for j in pi])
        sims.append(sim)
    return make_sequence(gt_ids, pred_ids, sims)


def _counts(seq: TrackingSequence) -> dict[str, int]:
    return {
        "gt_tracks": seq.num_gt_ids,
        "pred_tracks": seq.num_pred_ids,
        "gt_dets": seq.num_gt_dets,
        "pred_dets": seq.num_pred_dets,
    }


def evaluate_tracking(
    gt_coco: Mapping[str, Any],
    predictions: Iterable[Mapping[str, Any]],
    *,
    shift: int = 0,
    only_predicted: bool = False,
    exclusive: bool = True,
    threshold: float = 0.5,
    gt_source: str = "ground truth",
    pred_source: str = "predictions",
) -> dict[str, Any]:
    """HOTA, CLEAR MOT and Identity metrics of tracked instance predictions (see the module
    docstring). ``exclusive=False`` scores the masks as predicted (overlaps kept);
    ``threshold``: the IoU of a CLEAR / Identity match. ``*_source`` name inputs in errors.
    """
    shift = int(shift)
    images = {int(img["id"]) + shift: img for img in gt_coco["images"]}
    categories = CategoryMap(gt_coco["categories"])
    by_seq, _, _ = _index_records(predictions, set(images))
    gt, ignore = _gt_objects(gt_coco, shift, gt_source)
    pred, unknown = _pred_objects(by_seq, images, categories, exclusive, pred_source)
    frames = sorted(by_seq) if only_predicted else sorted(images)
    empty = _Objects()
    ious = {t: mask_iou(gt.get(t, empty).masks, pred.get(t, empty).masks) for t in frames}
    seqs = {c: _sequence(frames, gt, pred, ious, ignore, c) for c in sorted(categories.names)}
    agnostic = _sequence(frames, gt, pred, ious, ignore, None)
    results = {c: evaluate_sequence(s, threshold) for c, s in seqs.items()}
    out: dict[str, Any] = {
        "iou": "mask",
        "threshold": float(threshold),
        "masks": "non-overlapping (higher score wins)" if exclusive else "as predicted",
        "frames": len(frames),
        **_counts(agnostic),
        **summary(combine(list(results.values()))),
        "class_averaged": summary(class_average(list(results.values()))),
        "class_agnostic": summary(evaluate_sequence(agnostic, threshold)),
        "per_class": {
            categories.names[c]: {**summary(r), **_counts(seqs[c])} for c, r in results.items()
        },
    }
    if unknown:
        out["pred_dets_unknown_class"] = unknown
    return out
