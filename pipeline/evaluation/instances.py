"""COCO mask and box AP of instance predictions (pycocotools' ``COCOeval``).

Reported: AP, AP50, AP75, AP small/medium/large, AR@100 and per-class AP (IoU 0.5:0.95,
all areas, 100 detections), for masks (``segm``) and boxes (``bbox``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.evaluation.records import (
    CategoryMap,
    _index_records,
    check_frame_size,
    check_mask_size,
)

__all__ = ["evaluate_instances"]

_STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


def _shifted_coco(gt_coco: Mapping[str, Any], shift: int) -> dict[str, Any]:
    coco = copy.deepcopy(dict(gt_coco))
    if shift:
        for img in coco["images"]:
            img["id"] = int(img["id"]) + shift
        for ann in coco["annotations"]:
            ann["image_id"] = int(ann["image_id"]) + shift
    return coco


def _quiet_coco(dataset: dict[str, Any]):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def _run_cocoeval(gt, dets: list[dict[str, Any]], iou_type: str, img_ids, cat_ids, cat_names):
    from pycocotools.cocoeval import COCOeval

    if not dets:
        out = {k: 0.0 for k in _STAT_NAMES}
        out["AR100"] = 0.0
        out["per_class_AP"] = {cat_names[c]: 0.0 for c in cat_ids}
        return out
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = sorted(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) for s in ev.stats]
    out = {name: stats[i] for i, name in enumerate(_STAT_NAMES)}
    out["AR100"] = stats[8]
    # Per-class AP over IoU 0.5:0.95, all areas, maxDets 100 (COCO's -1 = no GT: None).
    prec = ev.eval["precision"]  # [T, R, K, A, M]
    per_class = {}
    for k, cid in enumerate(ev.params.catIds):
        p = prec[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[cat_names[cid]] = float(p.mean()) if p.size else float("nan")
    out["per_class_AP"] = per_class
    # COCO reports -1 where nothing could be measured (e.g. no small objects).
    for name in (*_STAT_NAMES, "AR100"):
        if out[name] < 0:
            out[name] = float("nan")
    return out


def _detections(
    by_seq: Mapping[int, Mapping[str, Any]],
    images: Mapping[int, Mapping[str, Any]],
    categories: CategoryMap,
) -> tuple[list[dict[str, Any]], dict[str, int], int]:
    """COCO detections of the records; unknown classes (counted) and masks missing."""
    dets: list[dict[str, Any]] = []
    unknown_classes: dict[str, int] = {}
    masks_missing = 0  # instances without a mask count as misses in mask AP
    for seq, rec in by_seq.items():
        img = images[seq]
        check_frame_size(rec, img)
        for inst in rec.get("instances") or []:
            cat = categories.category(inst, rec)
            if isinstance(cat, str):
                unknown_classes[cat] = unknown_classes.get(cat, 0) + 1
                continue
            rle = inst.get("mask")
            if rle is None:
                masks_missing += 1
            else:
                check_mask_size(rle, seq, int(img["height"]), int(img["width"]))
            x0, y0, x1, y1 = (float(v) for v in inst["box"])
            det = {
                "image_id": seq,
                "category_id": cat,
                "score": float(inst.get("score", 1.0)),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
            }
            if rle is not None:
                det["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"]}
            dets.append(det)
    return dets, unknown_classes, masks_missing


def evaluate_instances(
    gt_coco: Mapping[str, Any],
    predictions: Iterable[Mapping[str, Any]],
    *,
    shift: int = 0,
    only_predicted: bool = False,
) -> dict[str, Any]:
    """COCO mask and box AP of instance predictions (``segstream.frame`` records).

    ``gt_coco``: COCO dict (image id = frame index). Predicted classes are matched to GT
    categories by name when the record carries ``class_names`` (else by id).
    """
    coco = _shifted_coco(gt_coco, int(shift))
    images = {int(img["id"]): img for img in coco["images"]}
    categories = CategoryMap(coco["categories"])
    cat_names = categories.names
    by_seq, unknown, duplicates = _index_records(predictions, set(images))
    dets, unknown_classes, masks_missing = _detections(by_seq, images, categories)
    if unknown_classes:
        warnings.warn(
            f"predicted classes not in the ground truth, skipped: {unknown_classes}", stacklevel=2
        )

    img_ids = set(by_seq) if only_predicted else set(images)
    gt = _quiet_coco(coco)
    cat_ids = sorted(cat_names)
    segm = [dict(d) for d in dets if "segmentation" in d]
    boxes = [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
    result: dict[str, Any] = {
        "task": "instance",
        "frames": len(img_ids),
        "frames_predicted": len(by_seq),
        "frames_missing": len(set(images) - set(by_seq)),
        "unknown_frames": len(unknown),
        "duplicate_records": duplicates,
        "gt_instances": sum(1 for a in coco["annotations"] if int(a["image_id"]) in img_ids),
        "pred_instances": sum(1 for d in dets if d["image_id"] in img_ids),
        "shift": int(shift),
        "segm": _run_cocoeval(gt, segm, "segm", img_ids, cat_ids, cat_names),
        "bbox": _run_cocoeval(gt, boxes, "bbox", img_ids, cat_ids, cat_names),
    }
    if unknown_classes:
        result["unknown_classes"] = unknown_classes
    if masks_missing:
        result["instances_without_mask"] = masks_missing
    return result
