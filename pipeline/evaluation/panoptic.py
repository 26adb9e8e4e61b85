"""Panoptic Quality (PQ, SQ, RQ) by the rules of COCO's panopticapi (``pq_compute``).

A frame is a segment-id map (uint32, ``0`` = VOID) plus its ``segments_info``: entries
``{id, category_id, iscrowd?, isthing?}``. Per frame and category:

* a ground-truth and a predicted segment of the same category *match* when their IoU is
  **strictly** above 0.5 (so a segment matches at most one other); the union leaves out the
  predicted segment's pixels on VOID ground truth. Crowd ground truth is never matched;
* an unmatched ground-truth segment is a false negative (crowd segments are not);
* an unmatched predicted segment is a false positive unless more than half of it lies on
  VOID ground truth or on the crowd region of its category (panopticapi keeps one crowd
  segment per category and frame: the last listed, as here);
* ``PQ = sum IoU / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP``, ``RQ = TP / (TP + FP/2 +
  FN/2)`` per category over all frames; averages over the categories with TP + FP + FN > 0,
  for all, things and stuff (``isthing`` of the categories).

Departures from panopticapi, none of which changes a score of well-formed input: ground-truth
areas are counted from the map (panopticapi reads the JSON ``area``); a ground-truth pixel
whose id is not listed is an error (panopticapi ignores it) as in predictions; a frame
without a prediction counts as an empty one (panopticapi stops), unless ``only_predicted``;
an average over no category is NaN (panopticapi divides by zero).

On disk (``load_panoptic``): COCO panoptic, a JSON (``annotations``: ``image_id``,
``file_name``, ``segments_info``; ``categories`` with ``isthing``) and a folder of RGB PNGs
with ``id = R + 256 G + 256^2 B``: a directory holding ``panoptic.json`` + ``panoptic/``
(what ``python -m pipeline.synthetic --kind panoptic`` writes), or ``X.json`` + folder ``X/``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.records import EvaluationError

__all__ = [
    "VOID",
    "PanopticFrame",
    "evaluate_panoptic",
    "frame_pq_stats",
    "load_panoptic",
    "panoptic_quality",
    "pq_summary",
    "read_id_png",
    "rgb_to_id_map",
]

VOID = 0
Categories = Mapping[int, Mapping[str, Any]]  # id -> {"name", "isthing"}


@dataclass(frozen=True)
class PanopticFrame:
    """One frame's panoptic segmentation: its ``segments_info`` and either the [H, W]
    segment-id map or the PNG it is read from (when needed: a clip is not kept in memory)."""

    segments_info: Sequence[Mapping[str, Any]]
    id_map: np.ndarray | None = None
    png: Path | None = None

    def ids(self) -> np.ndarray:
        """The [H, W] uint32 segment-id map."""
        if self.id_map is not None:
            return np.asarray(self.id_map, dtype=np.uint32)
        if self.png is None:
            raise EvaluationError("panoptic frame has neither an id map nor a PNG")
        return read_id_png(self.png)


FrameLike = PanopticFrame | tuple[np.ndarray, Sequence[Mapping[str, Any]]]


def rgb_to_id_map(rgb: np.ndarray) -> np.ndarray:
    """[H, W] uint32 segment ids of a COCO panoptic [H, W, 3] RGB image (panopticapi's
    ``rgb2id``: ``R + 256 G + 256^2 B``)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise EvaluationError(f"a panoptic PNG must be RGB, got an array of shape {rgb.shape}")
    c = rgb[..., :3].astype(np.uint32)
    return c[..., 0] + (c[..., 1] << np.uint32(8)) + (c[..., 2] << np.uint32(16))


def read_id_png(path: str | Path) -> np.ndarray:
    """The segment-id map stored in a COCO panoptic PNG."""
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise EvaluationError(f"panoptic PNG not found: {p}")
    with Image.open(p) as im:
        return rgb_to_id_map(np.asarray(im.convert("RGB")))


# ------------------------------------------------------------------------- one frame


class _Segments:
    """A frame's segments as arrays, in ``segments_info`` order, plus a pixel index map."""

    def __init__(self, info: Sequence[Mapping[str, Any]], cat_index: Mapping[int, int], what: str):
        ids = [int(s["id"]) for s in info]
        if len(set(ids)) != len(ids) or min(ids, default=1) <= VOID:
            raise EvaluationError(f"{what}: segment ids must be unique and positive: {ids}")
        unknown = [int(s["category_id"]) for s in info if int(s["category_id"]) not in cat_index]
        if unknown:
            raise EvaluationError(f"{what}: unknown category_id {unknown[0]}")
        self.ids = np.array(ids, dtype=np.int64)
        self.cat = np.array([cat_index[int(s["category_id"])] for s in info], dtype=np.int64)
        self.crowd = np.array([bool(s.get("iscrowd", 0)) for s in info], dtype=bool)

    def index(self, id_map: np.ndarray, what: str) -> np.ndarray:
        """Per pixel: 0 for VOID, else 1 + the segment's position in ``segments_info``."""
        order = np.argsort(self.ids)
        keys = np.concatenate([[VOID], self.ids[order]])
        pos = np.searchsorted(keys, id_map)
        np.minimum(pos, len(keys) - 1, out=pos)
        bad = keys[pos] != id_map
        if bad.any():
            raise EvaluationError(
                f"{what}: segment id {int(id_map[bad][0])} is in the map but not in segments_info"
            )
        return np.concatenate([[0], order + 1])[pos]


def frame_pq_stats(
    gt: FrameLike, pred: FrameLike | None, cat_index: Mapping[int, int], what: str = "frame"
) -> np.ndarray:
    """[K, 4] float64 per-category ``(TP, FP, FN, sum IoU)`` of one frame (``cat_index``:
    category id -> row 0..K-1; ``pred`` None: nothing predicted), by panopticapi's rules
    (module docstring)."""
    gt = _as_frame(gt)
    gt_map = gt.ids()
    pred = _as_frame(pred) if pred is not None else PanopticFrame([], np.zeros_like(gt_map))
    pred_map = pred.ids()
    if gt_map.shape != pred_map.shape:
        raise EvaluationError(
            f"{what}: prediction is {pred_map.shape[1]}x{pred_map.shape[0]}, the ground truth "
            f"{gt_map.shape[1]}x{gt_map.shape[0]}"
        )
    g = _Segments(gt.segments_info, cat_index, f"{what} ground truth")
    p = _Segments(pred.segments_info, cat_index, f"{what} prediction")
    gi, pi = g.index(gt_map, f"{what} ground truth"), p.index(pred_map, f"{what} prediction")
    ng, npr = len(g.ids) + 1, len(p.ids) + 1
    # joint histogram: row = GT segment (0 VOID), column = predicted segment (0 VOID)
    joint = np.bincount((gi * npr + pi).ravel(), minlength=ng * npr).reshape(ng, npr)
    g_area, p_area = joint.sum(axis=1), joint.sum(axis=0)
    if (p_area[1:] == 0).any():  # panopticapi: "presented in JSON and not presented in PNG"
        missing = int(p.ids[np.flatnonzero(p_area[1:] == 0)[0]])
        raise EvaluationError(f"{what}: predicted segment {missing} is not in the map")
    return _tally(joint, g, p, g_area, p_area, len(cat_index))


def _tally(
    joint: np.ndarray, g: _Segments, p: _Segments, g_area: np.ndarray, p_area: np.ndarray, k: int
) -> np.ndarray:
    """Matches, false negatives and false positives from the joint histogram."""
    out = np.zeros((k, 4), dtype=np.float64)
    r, c = np.nonzero(joint[1:, 1:])
    inter = joint[1:, 1:][r, c]
    # the union leaves out the predicted pixels on VOID ground truth (row 0)
    union = p_area[1:][c] + g_area[1:][r] - inter - joint[0, 1:][c]
    iou = inter / union
    hit = (g.cat[r] == p.cat[c]) & ~g.crowd[r] & (iou > 0.5)
    r, c, iou = r[hit], c[hit], iou[hit]
    np.add.at(out[:, 0], g.cat[r], 1.0)
    np.add.at(out[:, 3], g.cat[r], iou)
    g_matched = np.zeros(len(g.ids), dtype=bool)
    g_matched[r] = True
    p_matched = np.zeros(len(p.ids), dtype=bool)
    p_matched[c] = True
    crowd_row = np.full(k, -1, dtype=np.int64)  # per category: its (last) crowd segment
    for s in np.flatnonzero(g.crowd):
        crowd_row[g.cat[s]] = s
    np.add.at(out[:, 2], g.cat[~g_matched & ~g.crowd], 1.0)
    cand = np.flatnonzero(~p_matched)
    crowd = crowd_row[p.cat[cand]]
    ignored = joint[0, 1:][cand] + np.where(crowd >= 0, joint[crowd + 1, cand + 1], 0)
    fp = cand[ignored / p_area[1:][cand] <= 0.5]
    np.add.at(out[:, 1], p.cat[fp], 1.0)
    return out


def _as_frame(frame: FrameLike) -> PanopticFrame:
    if isinstance(frame, PanopticFrame):
        return frame
    id_map, info = frame
    return PanopticFrame(segments_info=list(info), id_map=np.asarray(id_map))


# ---------------------------------------------------------------------------- scores


def pq_summary(stats: np.ndarray, categories: Categories) -> dict[str, Any]:
    """PQ, SQ, RQ for all, things and stuff (and per class) from per-category ``stats``
    ([K, 4] TP, FP, FN, sum IoU, rows in the order of ``categories``): panopticapi's
    ``pq_average``, NaN where no category counts."""
    per_class: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[tuple[float, float, float]]] = {"all": [], "things": [], "stuff": []}
    for row, (cid, cat) in enumerate(categories.items()):
        tp, fp, fn, iou = (float(v) for v in stats[row])
        scores = (0.0, 0.0, 0.0)  # no segment of it anywhere: listed, not averaged
        if tp + fp + fn > 0:
            denom = tp + 0.5 * fp + 0.5 * fn
            scores = (iou / denom, iou / tp if tp else 0.0, tp / denom)
            groups["all"].append(scores)
            groups["things" if cat["isthing"] else "stuff"].append(scores)
        per_class[str(cat.get("name", cid))] = {
            "id": int(cid),
            "isthing": bool(cat["isthing"]),
            "pq": scores[0],
            "sq": scores[1],
            "rq": scores[2],
            "tp": int(tp),
            "fp": int(fp),
            "fn": int(fn),
        }
    out: dict[str, Any] = {}
    for name, rows in groups.items():
        n = len(rows)
        # summed in category order, as panopticapi does (the same float result)
        sums = [sum(col) for col in zip(*rows, strict=True)] if n else [math.nan] * 3
        out[name] = {"pq": sums[0] / max(n, 1), "sq": sums[1] / max(n, 1)}
        out[name].update({"rq": sums[2] / max(n, 1), "n": n})
    out["per_class"] = per_class
    return out


def panoptic_quality(
    pairs: Iterable[tuple[FrameLike, FrameLike | None]], categories: Categories
) -> dict[str, Any]:
    """PQ / SQ / RQ (all, things, stuff, per class) of ``(ground truth, prediction)`` frame
    pairs (prediction None: nothing predicted); ``categories``: id -> ``{"name",
    "isthing"}``, every category used must be there."""
    return _score(((f"frame {k}", gt, pred) for k, (gt, pred) in enumerate(pairs)), categories)


def _score(
    frames: Iterable[tuple[str, FrameLike, FrameLike | None]], categories: Categories
) -> dict[str, Any]:
    cats = {int(k): v for k, v in categories.items()}
    cat_index = {cid: row for row, cid in enumerate(cats)}
    stats = np.zeros((len(cats), 4), dtype=np.float64)
    count = 0
    for what, gt, pred in frames:
        stats += frame_pq_stats(gt, pred, cat_index, what)
        count += 1
    return {"frames": count, **pq_summary(stats, cats)}


# ----------------------------------------------------------------------------- files


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"{path}: cannot read panoptic JSON ({exc})") from exc


def _categories(raw: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    return {
        int(c["id"]): {"name": str(c.get("name", c["id"])), "isthing": int(c.get("isthing", 1))}
        for c in raw
    }


def load_panoptic(
    path: str | Path, folder: str | Path | None = None
) -> tuple[dict[int, PanopticFrame], dict[int, dict[str, Any]] | None]:
    """Frames (image id -> ``PanopticFrame``, PNGs read when scored) and categories (None
    when the file has none) of a COCO panoptic JSON: ``path`` is a directory with
    ``panoptic.json`` and ``panoptic/``, or a JSON file whose PNGs are in ``folder``
    (default: the JSON's path without ``.json``, panopticapi's convention). The JSON is a
    COCO panoptic dict or just its list of annotations."""
    p = Path(path)
    if p.is_dir():
        p, folder = p / "panoptic.json", folder or p / "panoptic"
    if not p.is_file():
        raise EvaluationError(f"panoptic JSON not found: {p}")
    pngs = Path(folder) if folder is not None else p.with_suffix("")
    data = _read_json(p)
    anns = data.get("annotations") if isinstance(data, dict) else data
    if not isinstance(anns, list):
        raise EvaluationError(f"{p}: not COCO panoptic (no 'annotations' list)")
    frames: dict[int, PanopticFrame] = {}
    for ann in anns:
        image_id = int(ann["image_id"])
        if image_id in frames:
            raise EvaluationError(f"{p}: image {image_id} annotated twice")
        name = ann.get("file_name") or f"{image_id:06d}.png"
        frames[image_id] = PanopticFrame(list(ann.get("segments_info") or []), png=pngs / name)
    cats = data.get("categories") if isinstance(data, dict) else None
    return frames, (_categories(cats) if cats else None)


def _infer_categories(frames: Iterable[PanopticFrame]) -> dict[int, dict[str, Any]]:
    """Categories from the ``isthing`` flags of the segments (when no categories are given)."""
    cats: dict[int, dict[str, Any]] = {}
    for fr in frames:
        for seg in fr.segments_info:
            cid = int(seg["category_id"])
            if "isthing" not in seg:
                raise EvaluationError(f"category {cid}: no categories given and no isthing flag")
            flag = int(bool(seg["isthing"]))
            if cats.setdefault(cid, {"name": str(cid), "isthing": flag})["isthing"] != flag:
                raise EvaluationError(f"category {cid} is marked both thing and stuff")
    return dict(sorted(cats.items()))


def _frames(source: Any) -> tuple[dict[int, PanopticFrame], dict[int, dict[str, Any]] | None]:
    if isinstance(source, str | Path):
        return load_panoptic(source)
    if isinstance(source, Mapping):
        return {int(k): _as_frame(v) for k, v in source.items()}, None
    raise EvaluationError(f"expected a path or a mapping frame -> frame, got {type(source)}")


def evaluate_panoptic(
    gt: str | Path | Mapping[int, FrameLike],
    predictions: str | Path | Mapping[int, FrameLike],
    *,
    categories: Categories | Iterable[Mapping[str, Any]] | None = None,
    shift: int = 0,
    only_predicted: bool = False,
) -> dict[str, Any]:
    """PQ / SQ / RQ of panoptic predictions against ground truth, each a COCO panoptic path
    (see ``load_panoptic``) or a mapping frame index -> ``PanopticFrame`` or ``(id_map,
    segments_info)``. GT frame ``i`` is compared with prediction ``i + shift``; a frame
    without a prediction counts as empty (every segment missed) unless ``only_predicted``.
    ``categories`` (id -> ``{"name", "isthing"}``, or a COCO list) defaults to the ground
    truth's, else to the ``isthing`` flags of the segments."""
    gt_frames, gt_cats = _frames(gt)
    pred_frames, _ = _frames(predictions)
    if categories is not None:
        cats = categories if isinstance(categories, Mapping) else _categories(categories)
    else:
        cats = gt_cats or _infer_categories([*gt_frames.values(), *pred_frames.values()])
    wanted = {i + int(shift) for i in gt_frames}
    scored = (
        (f"frame {i}", gt_frames[i], pred_frames.get(i + int(shift)))
        for i in sorted(gt_frames)
        if not only_predicted or i + int(shift) in pred_frames
    )
    out = _score(scored, cats)
    return {
        "task": "panoptic",
        "frames": out.pop("frames"),
        "frames_predicted": len(wanted & set(pred_frames)),
        "frames_missing": len(wanted - set(pred_frames)),
        "unknown_frames": len(set(pred_frames) - wanted),
        "shift": int(shift),
        "pq": out["all"]["pq"],
        "sq": out["all"]["sq"],
        "rq": out["all"]["rq"],
        **out,
    }
