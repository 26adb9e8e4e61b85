"""Semantic segmentation scores: the FCN paper's pixel accuracy, mean accuracy, mean IoU and
frequency-weighted IoU (``pipeline.ops.metrics``), from one dataset-level confusion matrix,
per class too."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from pipeline.evaluation.records import EvaluationError, _index_records
from pipeline.ops.rle import decode as decode_rle

__all__ = ["evaluate_semantic", "record_class_map"]


def record_class_map(rec: Mapping[str, Any]) -> np.ndarray:
    """Class map [H, W] uint8 of a semantic record (pixels in no class RLE = 0)."""
    sem = rec.get("semantic")
    if sem is None:
        raise EvaluationError(f"frame {rec.get('seq')}: record has no semantic result")
    h, w = int(sem.get("height", rec["height"])), int(sem.get("width", rec["width"]))
    out = np.zeros((h, w), dtype=np.uint8)
    for entry in sem.get("classes") or []:
        m = decode_rle(entry["mask"])
        if m.shape != (h, w):
            raise EvaluationError(
                f"frame {rec.get('seq')}: class {entry.get('class_id')} mask is "
                f"{m.shape[1]}x{m.shape[0]}, the class map is {w}x{h}"
            )
        out[m] = int(entry["class_id"])
    return out


def _predicted_map(i: int, gt: np.ndarray, rec: Mapping[str, Any] | None) -> np.ndarray:
    """Prediction of frame ``i`` (all background without a record), checked against ``gt``."""
    if rec is None:
        return np.zeros_like(gt, dtype=np.uint8)
    if (int(rec["height"]), int(rec["width"])) != gt.shape:
        raise EvaluationError(
            f"frame {i}: prediction is {rec['width']}x{rec['height']} but the ground truth "
            f"is {gt.shape[1]}x{gt.shape[0]}"
        )
    pred = record_class_map(rec)
    if pred.shape != gt.shape:
        raise EvaluationError(
            f"frame {i}: class map is {pred.shape[1]}x{pred.shape[0]} but the ground truth "
            f"is {gt.shape[1]}x{gt.shape[0]}"
        )
    return np.where(pred == 255, 0, pred)  # unlabeled counts as background


def _num_classes(maps: Mapping[int, np.ndarray], records: Iterable[Mapping[str, Any]]) -> int:
    top = max((int(m[m != 255].max(initial=0)) for m in maps.values()), default=0)
    for rec in records:
        if rec.get("class_names"):
            top = max(top, len(rec["class_names"]) - 1)
    return top + 1


def evaluate_semantic(
    gt_maps: Mapping[int, np.ndarray],
    predictions: Iterable[Mapping[str, Any]],
    *,
    num_classes: int | None = None,
    class_names: list[str] | tuple[str, ...] | None = None,
    shift: int = 0,
    only_predicted: bool = False,
) -> dict[str, Any]:
    """FCN-paper scores of semantic predictions against ground-truth class maps.

    ``gt_maps``: frame index -> [H, W] uint8 class map (255 = ignore).
    """
    from pipeline.ops.metrics import confusion_matrix, semantic_scores

    maps = {int(k) + int(shift): np.asarray(v) for k, v in gt_maps.items()}
    if class_names is not None and num_classes is None:
        num_classes = len(class_names)
    by_seq, unknown, duplicates = _index_records(predictions, set(maps))
    if num_classes is None:
        num_classes = _num_classes(maps, by_seq.values())
    k = int(num_classes)
    conf = np.zeros((k, k), dtype=np.int64)
    img_ids = set(by_seq) if only_predicted else set(maps)
    for i in sorted(img_ids):
        conf += confusion_matrix(maps[i], _predicted_map(i, maps[i], by_seq.get(i)), k)
    scores = semantic_scores(conf)
    names = list(class_names) if class_names is not None else [str(c) for c in range(k)]
    return {
        "task": "semantic",
        "frames": len(img_ids),
        "frames_predicted": len(by_seq),
        "frames_missing": len(set(maps) - set(by_seq)),
        "unknown_frames": len(unknown),
        "duplicate_records": duplicates,
        "shift": int(shift),
        "pixel_accuracy": scores["pixel_accuracy"],
        "mean_accuracy": scores["mean_accuracy"],
        "mean_iou": scores["mean_iou"],
        "frequency_weighted_iou": scores["frequency_weighted_iou"],
        "per_class_iou": dict(zip(names, scores["per_class_iou"], strict=False)),
        "per_class_accuracy": dict(zip(names, scores["per_class_accuracy"], strict=False)),
    }
