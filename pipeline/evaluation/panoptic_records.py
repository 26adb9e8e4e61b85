"""Panoptic ``--save-results`` records: scoring against COCO panoptic ground truth, and export
as a standard COCO panoptic prediction (JSON + PNG folder).

A panoptic record (``"task": "panoptic"``) carries ``panoptic``: ``{height, width,
file_name, segments_info}``; ``file_name`` is relative to the results file's PNG folder
(``pipeline.sinks.panoptic_png.panoptic_folder``, e.g. ``out/results.panoptic`` for
``out/results.jsonl``), and each segment has ``id``, ``category_id`` and usually
``class_name``, ``isthing``, ``area``, ``bbox``, ``score``, ``track_id``. A segment's
category is the ground-truth category of its class name (``class_name``, else the record's
``class_names[category_id]``), as for instance results; without a name its id is kept.
When a thing segment carries a ``track_id``, the scores add ``stq``: Segmentation and
Tracking Quality (``pipeline.evaluation.stq``) on the same frames.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from pipeline.evaluation.panoptic import PanopticFrame, evaluate_panoptic, load_panoptic
from pipeline.evaluation.records import EvaluationError
from pipeline.evaluation.stq import segmentation_and_tracking_quality
from pipeline.sinks.panoptic_png import panoptic_folder

__all__ = [
    "PanopticRecords",
    "evaluate_panoptic_records",
    "panoptic_records",
    "write_coco_panoptic",
]

GT_HINT = "write it with python -m pipeline.synthetic --kind panoptic"


@dataclass
class PanopticRecords:
    """Panoptic predictions read from records: frame seq -> ``PanopticFrame`` (segments with
    the ground-truth ``category_id``, a ``class_name`` and an ``isthing`` flag), frame sizes
    (seq -> (width, height)) and how many records repeated a seq (the last one counts)."""

    frames: dict[int, PanopticFrame] = field(default_factory=dict)
    sizes: dict[int, tuple[int, int]] = field(default_factory=dict)
    duplicates: int = 0


def _gt_json(gt_dir: str | Path) -> Path:
    path = Path(gt_dir) / "panoptic.json"
    if not path.is_file():
        raise EvaluationError(
            f"{gt_dir} is not panoptic ground truth (no panoptic.json): {GT_HINT}"
        )
    return path


def _png_path(folder: Path, name: Any, where: str) -> Path:
    rel = PurePosixPath(str(name)) if isinstance(name, str) and name else None
    if rel is None or rel.is_absolute() or ".." in rel.parts or "\\" in str(name):
        raise EvaluationError(f"{where}: bad panoptic file_name {name!r} (a relative path)")
    png = folder / rel
    if not png.is_file():
        raise EvaluationError(f"{where}: panoptic PNG not found: {png}")
    return png


def _segment(
    seg: Any, rec: Mapping[str, Any], cats: Mapping[int, Mapping[str, Any]], where: str
) -> dict[str, Any]:
    """``seg`` with the ground-truth ``category_id``, its ``class_name`` and ``isthing``."""
    if not isinstance(seg, Mapping) or "id" not in seg or "category_id" not in seg:
        raise EvaluationError(f"{where}: a segment needs 'id' and 'category_id': {seg!r}")
    cid = int(seg["category_id"])
    names = rec.get("class_names") or []
    name = seg.get("class_name") or (names[cid] if 0 <= cid < len(names) else None)
    if name is not None:
        by_name = [k for k, c in cats.items() if str(c["name"]) == str(name)]
        if not by_name:
            raise EvaluationError(f"{where}: class {name!r} is not a ground-truth category")
        cid = by_name[0]
    elif cid not in cats:
        raise EvaluationError(f"{where}: category_id {cid} is not a ground-truth category")
    thing = seg.get("isthing", cats[cid]["isthing"])
    return {**seg, "category_id": cid, "class_name": str(cats[cid]["name"]), "isthing": bool(thing)}


def panoptic_records(
    records: Sequence[Mapping[str, Any]],
    pred_path: str | Path,
    categories: Mapping[int, Mapping[str, Any]],
) -> PanopticRecords:
    """Read the panoptic part of ``records`` (one stream) of the results file ``pred_path``;
    ``categories``: the ground truth's (id -> ``{"name", "isthing"}``). Every PNG must exist."""
    streams = sorted({str(r.get("stream", "0")) for r in records})
    if len(streams) > 1:
        raise EvaluationError(
            f"{pred_path}: records of several streams ({', '.join(streams)}); panoptic "
            "evaluation reads one stream: keep one stream's records"
        )
    folder = panoptic_folder(pred_path)
    out = PanopticRecords()
    for rec in records:
        seq = int(rec["seq"])
        where = f"{pred_path}: seq {seq}"
        pan = rec.get("panoptic")
        if not isinstance(pan, Mapping):
            raise EvaluationError(f"{where}: record has no 'panoptic' result (not panoptic)")
        info = pan.get("segments_info")
        if not isinstance(info, list):
            raise EvaluationError(f"{where}: 'panoptic' has no 'segments_info' list")
        png = _png_path(folder, pan.get("file_name"), where)
        segments = [_segment(s, rec, categories, where) for s in info]
        out.duplicates += seq in out.frames
        out.frames[seq] = PanopticFrame(segments, png=png)
        out.sizes[seq] = (
            int(pan.get("width", rec["width"])),
            int(pan.get("height", rec["height"])),
        )
    return out


def evaluate_panoptic_records(
    gt_dir: str | Path,
    records: Sequence[Mapping[str, Any]],
    pred_path: str | Path,
    *,
    shift: int = 0,
    only_predicted: bool = False,
    save_coco: str | Path | None = None,
) -> dict[str, Any]:
    """PQ / SQ / RQ (all, things, stuff, per class) of panoptic records against the COCO
    panoptic ground truth in ``gt_dir`` (``panoptic.json`` + ``panoptic/``); ``save_coco``:
    also write the predictions as COCO panoptic (``write_coco_panoptic``). Predictions with
    track ids add ``stq`` (``pipeline.evaluation.stq``; the ground truth's things need theirs)."""
    gt_frames, cats = load_panoptic(_gt_json(gt_dir).parent)
    if not cats:
        raise EvaluationError(f"{gt_dir}/panoptic.json has no categories: {GT_HINT}")
    preds = panoptic_records(records, pred_path, cats)
    if preds.duplicates:
        warnings.warn(
            f"{preds.duplicates} duplicate record(s) for the same frame; the last one counts",
            stacklevel=2,
        )
    saved = write_coco_panoptic(preds, save_coco) if save_coco is not None else None
    out = evaluate_panoptic(gt_dir, preds.frames, shift=shift, only_predicted=only_predicted)
    if out["unknown_frames"]:
        warnings.warn(
            f"{out['unknown_frames']} prediction record(s) for frames not in the ground truth; "
            "skipped",
            stacklevel=2,
        )
    out["duplicate_records"] = preds.duplicates
    if _tracked(preds.frames.values(), cats, gt=False):
        if _tracked(gt_frames.values(), cats, gt=True):
            out["stq"] = segmentation_and_tracking_quality(
                gt_frames, preds.frames, categories=cats, shift=shift,
                only_predicted=only_predicted,
            )  # fmt: skip
        else:
            warnings.warn(
                f"{gt_dir}: ground-truth things have no track_id; no STQ (tracking) score",
                stacklevel=2,
            )
    if saved is not None:
        out["coco_panoptic"] = str(saved)
    return out


def _tracked(
    frames: Iterable[PanopticFrame], cats: Mapping[int, Mapping[str, Any]], *, gt: bool
) -> bool:
    """Predictions: any thing segment has a ``track_id``; ground truth: every non-crowd one."""
    has = [
        s.get("track_id") is not None
        for fr in frames
        for s in fr.segments_info
        if s.get("isthing", cats[int(s["category_id"])]["isthing"]) and not s.get("iscrowd", 0)
    ]
    return all(has) if gt else any(has)


def _area_bbox(seg: Mapping[str, Any], ids: np.ndarray) -> tuple[int, list[int]]:
    mask = ids == int(seg["id"])
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return 0, [0, 0, 0, 0]
    x0, y0 = int(xs.min()), int(ys.min())
    return int(mask.sum()), [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def write_coco_panoptic(preds: PanopticRecords, path: str | Path) -> Path:
    """Write ``preds`` as a COCO panoptic prediction: ``path`` (``.json``; ``images``,
    ``annotations`` with image_id = seq, ``categories`` of the segments) and the PNGs copied
    to the folder ``path`` without ``.json`` (``<seq:06d>.png``), panopticapi's layout, so
    ``evaluate_panoptic(gt, path)`` reads it back."""
    out = Path(path)
    if out.suffix != ".json":
        raise EvaluationError(f"COCO panoptic output must be a .json path, got {out}")
    folder = out.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    images, anns, cats = [], [], {}
    for seq in sorted(preds.frames):
        frame, name = preds.frames[seq], f"{seq:06d}.png"
        shutil.copyfile(frame.png, folder / name)
        ids = None
        segs = []
        for s in frame.segments_info:
            area, bbox = s.get("area"), s.get("bbox")
            if area is None or bbox is None:
                ids = frame.ids() if ids is None else ids
                area, bbox = _area_bbox(s, ids)
            segs.append({"id": int(s["id"]), "category_id": int(s["category_id"]), "iscrowd": 0,
                         "area": int(area), "bbox": [int(v) for v in bbox]})  # fmt: skip
            cat = cats.setdefault(int(s["category_id"]), {"name": s["class_name"], "isthing": 0})
            cat["isthing"] |= int(bool(s["isthing"]))
        w, h = preds.sizes[seq]
        images.append({"id": seq, "file_name": name, "width": w, "height": h})
        anns.append({"image_id": seq, "file_name": name, "segments_info": segs})
    categories = [{"id": k, **cats[k]} for k in sorted(cats)]
    data = {"images": images, "annotations": anns, "categories": categories}
    out.write_text(json.dumps(data), encoding="utf-8")
    return out
