"""Segmentation and Tracking Quality (``pipeline.evaluation.stq``): hand-computed tiny videos,
synthetic panoptic ground truth, and the ``stq`` object of panoptic records scoring."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from pipeline.evaluate import evaluate_dir
from pipeline.evaluation.panoptic import PanopticFrame, load_panoptic, read_id_png
from pipeline.evaluation.records import SCHEMA, EvaluationError
from pipeline.evaluation.stq import segmentation_and_tracking_quality as stq
from pipeline.sinks.panoptic_png import frame_png_name, panoptic_folder, write_id_png

REPO = Path(__file__).resolve().parent.parent
FRAMES = 6
CATS = {
    1: {"name": "person", "isthing": 1},
    2: {"name": "road", "isthing": 0},
    3: {"name": "sky", "isthing": 0},
    4: {"name": "car", "isthing": 1},
}
ROAD, SKY = {"id": 2, "category_id": 2}, {"id": 3, "category_id": 3}


def thing(sid: int, track: int | None, cat: int = 1) -> dict:
    return {"id": sid, "category_id": cat, "track_id": track}


def frame(ids: list[list[int]], *segments: dict) -> tuple[np.ndarray, list[dict]]:
    return np.array(ids, dtype=np.uint32), list(segments)


# Two 2x4 frames: object (segment 10) on the left half over road (2), sky (3) in frame 0.
LEFT = [[10, 10, 2, 2], [10, 10, 2, 2]]
GT = {
    0: frame([[10, 10, 3, 3], [10, 10, 2, 2]], thing(10, 7), ROAD, SKY),
    1: frame(LEFT, thing(10, 7), ROAD),
}


def test_perfect_prediction_scores_one():
    out = stq(GT, GT, categories=CATS)
    assert (out["stq"], out["aq"], out["sq"]) == (1.0, 1.0, 1.0)
    assert (out["gt_tracks"], out["pred_tracks"], out["frames"]) == (1, 1, 2)
    assert out["per_class_iou"] == {"person": 1.0, "road": 1.0, "sky": 1.0}


def test_one_track_split_in_two():
    pred = {0: GT[0], 1: frame(LEFT, thing(10, 8), ROAD)}
    # |g| = 8; p1 = track 7 (frame 0), p2 = track 8 (frame 1): TPA 4 each, |p| = 4,
    # IoU = 4 / (4 + 8 - 4) = 0.5; AQ = 1/8 (4 * 0.5 + 4 * 0.5) = 0.5; SQ = 1
    out = stq(GT, pred, categories=CATS)
    assert out["aq"] == pytest.approx(0.5) and out["sq"] == 1.0
    assert out["stq"] == pytest.approx(math.sqrt(0.5)) and out["pred_tracks"] == 2


def test_two_tracks_merged_into_one():
    two = frame([[10, 10, 11, 11], [10, 10, 11, 11]], thing(10, 1), thing(11, 2))
    merged = frame([[10, 10, 10, 10], [10, 10, 10, 10]], thing(10, 5))
    # |a| = |b| = 4, |p| = 8, TPA 4 each: IoU = 4 / (8 + 4 - 4) = 0.5; AQ_a = 1/4 * 4 * 0.5
    out = stq({0: two}, {0: merged}, categories=CATS)
    assert out["aq"] == pytest.approx(0.5) and out["sq"] == 1.0 and out["gt_tracks"] == 2


def test_stuff_error_lowers_sq_not_aq():
    pred = {0: frame([[10, 10, 2, 3], [10, 10, 2, 2]], thing(10, 7), ROAD, SKY), 1: GT[1]}
    # sky: TP 1, FN 1 -> 1/2; road: TP 6, FP 1 -> 6/7; person 1
    out = stq(GT, pred, categories=CATS)
    assert out["aq"] == 1.0
    assert out["sq"] == pytest.approx((1 + 6 / 7 + 0.5) / 3)
    assert out["per_class_iou"]["sky"] == pytest.approx(0.5)


def test_wrong_thing_class_lowers_sq_not_aq():
    pred = {i: frame(LEFT, thing(10, 7, cat=4), ROAD) for i in (0, 1)}
    pred[0] = frame([[10, 10, 3, 3], [10, 10, 2, 2]], thing(10, 7, cat=4), ROAD, SKY)
    out = stq(GT, pred, categories=CATS)
    assert out["aq"] == 1.0  # association is class-agnostic
    assert out["sq"] == pytest.approx(2 / 4) and out["per_class_iou"]["car"] == 0.0


def test_untracked_predictions_score_lower_aq():
    untracked = {i: (ids, [{**s, "track_id": None} for s in info]) for i, (ids, info) in GT.items()}
    out = stq(GT, untracked, categories=CATS)
    # each frame's segment is a track of its own: the split case, AQ 0.5
    assert out["aq"] == pytest.approx(0.5) and out["sq"] == 1.0 and out["pred_tracks"] == 2
    assert out["aq"] < stq(GT, GT, categories=CATS)["aq"]


def test_gt_void_pixels_ignored():
    gt = {0: frame([[0, 10, 0, 2], [10, 10, 2, 0]], thing(10, 7), ROAD)}
    pred = {0: frame([[10, 10, 3, 2], [10, 10, 2, 10]], thing(10, 7), ROAD, SKY)}
    out = stq(gt, pred, categories=CATS)
    assert (out["stq"], out["aq"], out["sq"]) == (1.0, 1.0, 1.0)
    assert "sky" not in out["per_class_iou"]  # only predicted on void


def test_predicted_void_is_a_miss():
    pred = {0: frame([[10, 10, 0, 0], [10, 10, 2, 2]], thing(10, 7), ROAD), 1: GT[1]}
    out = stq(GT, pred, categories=CATS)
    assert out["aq"] == 1.0 and out["per_class_iou"]["sky"] == 0.0
    assert out["sq"] == pytest.approx(2 / 3)


def test_shift():
    moved = {1: GT[0], 2: GT[1]}
    assert stq(GT, moved, categories=CATS, shift=1)["stq"] == 1.0
    plain = stq(GT, moved, categories=CATS)
    assert plain["frames"] == 2 and plain["stq"] < 1.0  # GT frame 0 has no prediction
    only = stq(GT, moved, categories=CATS, only_predicted=True)
    assert only["frames"] == 1 and only["stq"] < 1.0  # GT frame 1 vs GT frame 0's content
    assert stq(GT, moved, categories=CATS, shift=1, only_predicted=True)["frames"] == 2


def test_missing_gt_track_id_and_bad_shape_rejected():
    with pytest.raises(EvaluationError, match="no track_id"):
        stq({0: frame(LEFT, {"id": 10, "category_id": 1}, ROAD)}, GT, categories=CATS)
    with pytest.raises(EvaluationError, match="prediction is"):
        stq(GT, {0: frame([[2]], ROAD), 1: GT[1]}, categories=CATS)


# ------------------------------------------------------------------ synthetic ground truth


@pytest.fixture(scope="module")
def gt_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stq_gt")
    cmd = [sys.executable, "-m", "pipeline.synthetic", "--kind", "panoptic", "--seed", "5"]
    cmd += ["--frames", str(FRAMES), "--size", "320x240", "--out", str(out), "--quiet"]
    subprocess.run(cmd, check=True, cwd=REPO, timeout=120, capture_output=True)
    return out


def _swapped(gt_dir: Path) -> dict[int, PanopticFrame]:
    """The ground truth with the track ids of two objects swapped from frame FRAMES // 2."""
    frames, _ = load_panoptic(gt_dir)
    a, b = [s["track_id"] for s in frames[0].segments_info if s.get("track_id") is not None][:2]
    swap = {a: b, b: a}
    out = {}
    for i, fr in frames.items():
        info = [dict(s) for s in fr.segments_info]
        for s in info if i >= FRAMES // 2 else []:
            s["track_id"] = swap.get(s.get("track_id"), s.get("track_id"))
        out[i] = PanopticFrame(info, png=fr.png)
    return out


def test_synthetic_ground_truth_scores_one(gt_dir):
    out = stq(gt_dir, gt_dir)
    assert (out["stq"], out["aq"], out["sq"]) == (1.0, 1.0, 1.0)
    assert out["frames"] == FRAMES and out["gt_tracks"] == out["pred_tracks"] >= 2
    assert len(out["per_class_iou"]) >= 5


def test_swapped_track_ids_lower_aq_only(gt_dir):
    out = stq(gt_dir, _swapped(gt_dir))
    assert 0.5 < out["aq"] < 1.0 and out["sq"] == 1.0 and out["stq"] < 1.0


# --------------------------------------------------------------------------- records


def _write_results(gt_dir: Path, results: Path, *, tracks: bool = True) -> Path:
    """The ground truth as panoptic records + PNGs (as the publish stage writes them)."""
    gt = json.loads((gt_dir / "panoptic.json").read_text())
    names = ["background"] * (max(c["id"] for c in gt["categories"]) + 1)
    for c in gt["categories"]:
        names[c["id"]] = c["name"]
    lines = []
    for ann in gt["annotations"]:
        seq = ann["image_id"]
        ids = read_id_png(gt_dir / "panoptic" / ann["file_name"])
        segments = []
        for s in ann["segments_info"]:
            seg = {"id": s["id"], "category_id": s["category_id"], "isthing": bool(s["isthing"])}
            seg |= {"class_name": names[s["category_id"]], "score": 1.0}
            seg |= {"track_id": s.get("track_id") if tracks else None}
            segments.append(seg)
        name = frame_png_name("0", seq)
        write_id_png(panoptic_folder(results) / name, ids)
        h, w = ids.shape
        pan = {"height": h, "width": w, "file_name": name, "segments_info": segments}
        lines.append({
            "schema": SCHEMA, "version": {"major": 1, "minor": 0}, "stream": "0",
            "seq": seq, "width": w, "height": h, "model": "gt@0+gt@0", "task": "panoptic",
            "class_names": names, "instances": [], "semantic": None, "panoptic": pan,
        })  # fmt: skip
    results.write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    return results


def test_records_with_track_ids_get_stq(gt_dir, tmp_path):
    out = evaluate_dir(gt_dir, _write_results(gt_dir, tmp_path / "r.jsonl"))
    assert out["pq"] == pytest.approx(1.0)
    assert out["stq"]["stq"] == 1.0 and out["stq"]["frames"] == FRAMES
    with pytest.warns(UserWarning, match="not in the ground truth"):
        shifted = evaluate_dir(gt_dir, tmp_path / "r.jsonl", shift=1, only_predicted=True)
    assert shifted["stq"]["frames"] == FRAMES - 1 and shifted["stq"]["sq"] < 1.0


def test_records_without_track_ids_have_no_stq(gt_dir, tmp_path):
    out = evaluate_dir(gt_dir, _write_results(gt_dir, tmp_path / "r.jsonl", tracks=False))
    assert out["pq"] == pytest.approx(1.0) and "stq" not in out


def test_untracked_ground_truth_warns(gt_dir, tmp_path):
    bare = tmp_path / "gt"
    shutil.copytree(gt_dir, bare)
    data = json.loads((bare / "panoptic.json").read_text())
    for ann in data["annotations"]:
        for s in ann["segments_info"]:
            s.pop("track_id", None)
    (bare / "panoptic.json").write_text(json.dumps(data))
    results = _write_results(gt_dir, tmp_path / "r.jsonl")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = evaluate_dir(bare, results)
    assert "stq" not in out and out["pq"] == pytest.approx(1.0)
    assert any("no track_id" in str(w.message) for w in caught)
