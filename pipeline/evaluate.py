"""Accuracy of saved pipeline results against synthetic (or any COCO-style) ground truth.

``python -m pipeline.evaluate --gt DIR --pred RESULTS.jsonl`` prints one JSON object.

* ``DIR`` is what ``python -m pipeline.synthetic`` writes: ``instances.json`` (COCO, image
  id = frame index) and ``semantic/<frame:06d>.png`` (uint8 class ids).
* ``RESULTS.jsonl`` is the pipeline's ``--save-results`` file: one ``segstream.frame``
  record per line; its ``seq`` is the frame index, i.e. the COCO image id.

Instance results are scored with pycocotools' ``COCOeval`` (mask and box AP, AP50, AP75,
AP small/medium/large, AR@100 and per-class AP). Semantic results are scored from one
dataset-level confusion matrix with the FCN paper's pixel accuracy, mean accuracy, mean IoU
and frequency-weighted IoU (``pipeline.ops.metrics``), per class too.

By default every ground-truth frame counts: a frame without a prediction record counts as
"nothing detected" / "all background" (``frames_missing`` says how many);
``--only-predicted`` scores just the frames that have records. Records whose frame is not in
the ground truth are counted (``unknown_frames``) and skipped with a warning. ``--shift K``
moves the ground truth by K frames (GT frame i is compared with record seq i + K): a
pipeline that is off by one frame shows up as a drop in every score.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.ops.rle import decode as decode_rle
from pipeline.ops.rle import encode_mask

__all__ = [
    "EvaluationError",
    "evaluate_instances",
    "evaluate_semantic",
    "frame_record",
    "load_ground_truth",
    "load_predictions",
    "main",
]

SCHEMA = "segstream.frame"
SUPPORTED_MAJOR = 1


class EvaluationError(PipelineError):
    """Ground truth or predictions cannot be read or do not fit together."""


# ------------------------------------------------------------------------------ helpers


def _finite(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _version_major(version: Any) -> int | None:
    if isinstance(version, Mapping):
        return int(version.get("major")) if "major" in version else None
    if isinstance(version, list | tuple) and version:
        return int(version[0])
    return None


def frame_record(
    seq: int,
    width: int,
    height: int,
    class_names: list[str] | tuple[str, ...],
    *,
    instances: Iterable[Mapping[str, Any]] | None = None,
    class_map: np.ndarray | None = None,
    model: str = "ground-truth",
    stream: str = "0",
) -> dict[str, Any]:
    """Build one ``segstream.frame`` JSON record (the ``--save-results`` line format).

    ``instances``: dicts with ``class_id``, ``score``, ``box`` (x0, y0, x1, y1) and either
    ``mask`` (COCO RLE) or ``mask_array`` (bool [H, W], encoded here); ``id`` optional.
    ``class_map``: [H, W] uint8 for the semantic task (one RLE per present class != 0).
    """
    insts = []
    for k, inst in enumerate(instances or []):
        rle = inst.get("mask")
        if rle is None:
            rle = encode_mask(np.asarray(inst["mask_array"], dtype=bool))
        cid = int(inst["class_id"])
        insts.append(
            {
                "id": int(inst.get("id", k)),
                "class_id": cid,
                "class_name": class_names[cid] if 0 <= cid < len(class_names) else str(cid),
                "score": float(inst.get("score", 1.0)),
                "box": [float(v) for v in inst["box"]],
                "mask": rle,
            }
        )
    semantic = None
    if class_map is not None:
        cm = np.asarray(class_map)
        semantic = {
            "height": int(cm.shape[0]),
            "width": int(cm.shape[1]),
            "classes": [
                {"class_id": int(k), "mask": encode_mask(cm == k)}
                for k in np.unique(cm)
                if k != 0 and k != 255
            ],
        }
    return {
        "schema": SCHEMA,
        "version": {"major": 1, "minor": 0},
        "stream": stream,
        "seq": int(seq),
        "width": int(width),
        "height": int(height),
        "model": model,
        "task": "semantic" if class_map is not None else "instance",
        "class_names": list(class_names),
        "instances": insts,
        "semantic": semantic,
    }


# -------------------------------------------------------------------------------- loading


def load_predictions(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``--save-results`` JSON-lines file (blank lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise EvaluationError(f"prediction file not found: {p}")
    records = []
    with p.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvaluationError(f"{p}:{lineno}: not valid JSON ({exc.msg})") from exc
            _check_record(rec, f"{p}:{lineno}")
            records.append(rec)
    return records


def _check_record(rec: Any, where: str) -> None:
    if not isinstance(rec, dict):
        raise EvaluationError(f"{where}: a record must be a JSON object")
    if rec.get("schema", SCHEMA) != SCHEMA:
        raise EvaluationError(f"{where}: unknown schema {rec.get('schema')!r} (want {SCHEMA!r})")
    major = _version_major(rec.get("version"))
    if major is not None and major != SUPPORTED_MAJOR:
        raise EvaluationError(
            f"{where}: unsupported record version {major}.x (this evaluator reads {SUPPORTED_MAJOR}.x)"
        )
    for key in ("seq", "width", "height"):
        if not isinstance(rec.get(key), int):
            raise EvaluationError(f"{where}: missing or non-integer {key!r}")


def load_ground_truth(gt_dir: str | Path) -> dict[str, Any]:
    """Load ``DIR/instances.json`` (COCO dict); raises ``EvaluationError`` when missing."""
    d = Path(gt_dir)
    if not d.is_dir():
        raise EvaluationError(f"ground-truth directory not found: {d}")
    path = d / "instances.json"
    if not path.is_file():
        raise EvaluationError(
            f"ground truth {path} not found (write it with python -m pipeline.synthetic)"
        )
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EvaluationError(f"{path}: not valid JSON ({exc.msg})") from exc
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise EvaluationError(f"{path}: not a COCO file (no {key!r})")
    return coco


def load_semantic_maps(gt_dir: str | Path, frame_ids: Iterable[int]) -> dict[int, np.ndarray]:
    """Load ``DIR/semantic/<id:06d>.png`` for each frame id."""
    from PIL import Image

    d = Path(gt_dir) / "semantic"
    if not d.is_dir():
        raise EvaluationError(f"semantic ground truth {d} not found")
    maps = {}
    for i in frame_ids:
        p = d / f"{int(i):06d}.png"
        if not p.is_file():
            raise EvaluationError(f"semantic ground truth for frame {i} missing: {p}")
        with Image.open(p) as im:
            maps[int(i)] = np.asarray(im, dtype=np.uint8)
    return maps


# -------------------------------------------------------------------------- instances


def _index_records(
    predictions: Iterable[Mapping[str, Any]], known_ids: set[int]
) -> tuple[dict[int, Mapping[str, Any]], list[int], int]:
    """Latest record per seq among the known ids; unknown seqs and duplicate count."""
    by_seq: dict[int, Mapping[str, Any]] = {}
    unknown: list[int] = []
    duplicates = 0
    for rec in predictions:
        _check_record(rec, f"record seq={rec.get('seq') if isinstance(rec, dict) else '?'}")
        seq = int(rec["seq"])
        if seq not in known_ids:
            unknown.append(seq)
            continue
        if seq in by_seq:
            duplicates += 1
        by_seq[seq] = rec
    if unknown:
        warnings.warn(
            f"{len(unknown)} prediction record(s) for frames not in the ground truth "
            f"(e.g. seq {unknown[0]}); skipped",
            stacklevel=3,
        )
    if duplicates:
        warnings.warn(
            f"{duplicates} duplicate record(s) for the same frame; the last one counts",
            stacklevel=3,
        )
    return by_seq, unknown, duplicates


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


_STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


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
    cat_names = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
    name_to_cat = {v: k for k, v in cat_names.items()}
    by_seq, unknown, duplicates = _index_records(predictions, set(images))

    dets: list[dict[str, Any]] = []
    unknown_classes: dict[str, int] = {}
    masks_missing = 0  # instances without a mask count as misses in mask AP
    for seq, rec in by_seq.items():
        img = images[seq]
        if (int(rec["width"]), int(rec["height"])) != (int(img["width"]), int(img["height"])):
            raise EvaluationError(
                f"frame {seq}: prediction is {rec['width']}x{rec['height']} but the ground truth "
                f"is {img['width']}x{img['height']}"
            )
        names = rec.get("class_names") or []
        for inst in rec.get("instances") or []:
            cid = int(inst["class_id"])
            name = inst.get("class_name") or (names[cid] if 0 <= cid < len(names) else None)
            if name is not None and name in name_to_cat:
                cat = name_to_cat[name]
            elif name is None and cid in cat_names:
                cat = cid
            else:
                key = str(name if name is not None else cid)
                unknown_classes[key] = unknown_classes.get(key, 0) + 1
                continue
            rle = inst.get("mask")
            if rle is not None and [int(v) for v in rle["size"]] != [
                int(img["height"]),
                int(img["width"]),
            ]:
                raise EvaluationError(
                    f"frame {seq}: mask size {rle['size']} does not match the frame "
                    f"{img['height']}x{img['width']} (size is [H, W])"
                )
            if rle is None:
                masks_missing += 1
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
    if unknown_classes:
        warnings.warn(
            f"predicted classes not in the ground truth, skipped: {unknown_classes}", stacklevel=2
        )

    img_ids = set(by_seq) if only_predicted else set(images)
    gt = _quiet_coco(coco)
    cat_ids = sorted(cat_names)
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
        "segm": _run_cocoeval(
            gt, [dict(d) for d in dets if "segmentation" in d], "segm", img_ids, cat_ids, cat_names
        ),
        "bbox": _run_cocoeval(
            gt,
            [{k: v for k, v in d.items() if k != "segmentation"} for d in dets],
            "bbox",
            img_ids,
            cat_ids,
            cat_names,
        ),
    }
    if unknown_classes:
        result["unknown_classes"] = unknown_classes
    if masks_missing:
        result["instances_without_mask"] = masks_missing
    return result


# --------------------------------------------------------------------------- semantic


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
        top = max((int(m[m != 255].max(initial=0)) for m in maps.values()), default=0)
        for rec in by_seq.values():
            if rec.get("class_names"):
                top = max(top, len(rec["class_names"]) - 1)
        num_classes = top + 1
    k = int(num_classes)
    conf = np.zeros((k, k), dtype=np.int64)
    img_ids = set(by_seq) if only_predicted else set(maps)
    for i in sorted(img_ids):
        gt = maps[i]
        rec = by_seq.get(i)
        if rec is None:
            pred = np.zeros_like(gt, dtype=np.uint8)
        else:
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
            pred = np.where(pred == 255, 0, pred)  # unlabeled counts as background
        conf += confusion_matrix(gt, pred, k)
    scores = semantic_scores(conf)
    names = list(class_names) if class_names is not None else [str(c) for c in range(k)]
    result = {
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
    return result


# -------------------------------------------------------------------------------- CLI


def evaluate_dir(
    gt_dir: str | Path,
    pred_path: str | Path,
    *,
    task: str = "auto",
    shift: int = 0,
    only_predicted: bool = False,
) -> dict[str, Any]:
    """Evaluate a results file against a ground-truth directory (what the CLI prints)."""
    coco = load_ground_truth(gt_dir)
    records = load_predictions(pred_path)
    if not records:
        raise EvaluationError(f"{pred_path}: no prediction records")
    if task == "auto":
        tasks = {
            str(r.get("task") or ("semantic" if r.get("semantic") else "instance")) for r in records
        }
        if len(tasks) > 1:
            raise EvaluationError(f"{pred_path}: mixed tasks {sorted(tasks)}; pass --task")
        task = tasks.pop()
    models = sorted({str(r.get("model")) for r in records if r.get("model") is not None})
    out: dict[str, Any] = {"gt": str(gt_dir), "pred": str(pred_path), "model": models}
    if task == "instance":
        out.update(evaluate_instances(coco, records, shift=shift, only_predicted=only_predicted))
    elif task == "semantic":
        cats = sorted(coco["categories"], key=lambda c: int(c["id"]))
        names = ["background"] * (max(int(c["id"]) for c in cats) + 1)
        for c in cats:
            names[int(c["id"])] = str(c["name"])
        frame_ids = [int(img["id"]) for img in coco["images"]]
        maps = load_semantic_maps(gt_dir, frame_ids)
        out.update(
            evaluate_semantic(
                maps, records, class_names=names, shift=shift, only_predicted=only_predicted
            )
        )
    else:
        raise EvaluationError(f"unknown task {task!r} (instance, semantic or auto)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.evaluate",
        description="Score saved pipeline results (--save-results JSON lines) against ground truth.",
    )
    parser.add_argument(
        "--gt", required=True, help="ground-truth directory (instances.json, semantic/)"
    )
    parser.add_argument(
        "--pred", required=True, help="results file (JSON lines, one record per frame)"
    )
    parser.add_argument("--task", default="auto", choices=("auto", "instance", "semantic"))
    parser.add_argument(
        "--shift", type=int, default=0, help="compare GT frame i with record seq i + SHIFT"
    )
    parser.add_argument(
        "--only-predicted", action="store_true", help="score only frames that have a record"
    )
    parser.add_argument("--indent", type=int, default=2, help="JSON indent (0 = one line)")
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = evaluate_dir(
                args.gt,
                args.pred,
                task=args.task,
                shift=args.shift,
                only_predicted=args.only_predicted,
            )
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(_finite(result), indent=args.indent or None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
