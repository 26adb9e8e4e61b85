"""Panoptic ground truth (the ``panoptic`` synthetic scene kind, COCO panoptic files) and
Panoptic Quality (``pipeline.evaluation.panoptic``): hand-computed cases, a restatement of
panopticapi's rules on random cases with void and crowd, and torchmetrics on random cases."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import pytest

from pipeline.evaluation.panoptic import (
    evaluate_panoptic,
    panoptic_quality,
    read_id_png,
    rgb_to_id_map,
)
from pipeline.evaluation.records import EvaluationError
from pipeline.synthetic import (
    CLASS_NAMES,
    FIRST_STUFF_ID,
    NUM_CLASSES,
    PANOPTIC_CLASS_NAMES,
    STUFF_IDS,
    SyntheticScene,
)
from pipeline.synthetic.panoptic import (
    THING_ID_BASE,
    PanopticWriter,
    frame_panoptic,
    id_map_to_rgb,
    panoptic_categories,
    write_id_png,
)
from pipeline.synthetic.stuff import stuff_labels

FPS = 30.0
CATS = {1: {"name": "a", "isthing": 1}, 2: {"name": "b", "isthing": 1}}
CATS |= {7: {"name": "s", "isthing": 0}, 8: {"name": "t", "isthing": 0}}


# --------------------------------------------------------------------------- helpers


def _seg(sid: int, cat: int, crowd: int = 0) -> dict:
    return {"id": sid, "category_id": cat, "iscrowd": crowd, "isthing": int(CATS[cat]["isthing"])}


def _pq(gt_map, gt_info, pred_map, pred_info, cats=CATS) -> dict:
    gt = (np.asarray(gt_map, dtype=np.uint32), gt_info)
    pred = (np.asarray(pred_map, dtype=np.uint32), pred_info)
    return panoptic_quality([(gt, pred)], cats)


def _scores(part: dict) -> tuple[float, float, float]:
    return part["pq"], part["sq"], part["rq"]


def _canvas() -> np.ndarray:
    """10 x 10: thing 1 (category a) in rows 0-1, cols 0-4 (10 px); stuff 7 elsewhere."""
    m = np.full((10, 10), 7, dtype=np.uint32)
    m[0:2, 0:5] = 1
    return m


# ------------------------------------------------------------------- hand-computed PQ


def test_perfect_prediction_scores_one():
    gt = _canvas()
    gt[5:8, 5:9] = 2  # a second thing of category a
    gt[9, :] = 8  # a second stuff class
    info = [_seg(1, 1), _seg(2, 1), _seg(7, 7), _seg(8, 8)]
    # the same segmentation under other ids is still perfect
    relabel = {1: 40, 2: 41, 7: 300, 8: 70000}
    pred = np.vectorize(relabel.get)(gt)
    pred_info = [{**s, "id": relabel[s["id"]]} for s in info]
    out = _pq(gt, info, pred, pred_info)
    for part in ("all", "things", "stuff"):
        assert _scores(out[part]) == (1.0, 1.0, 1.0)
    assert (out["all"]["n"], out["things"]["n"], out["stuff"]["n"]) == (3, 1, 2)
    b = out["per_class"]["b"]  # in neither: listed, not averaged
    assert out["per_class"]["a"]["tp"] == 2 and b["tp"] + b["fp"] + b["fn"] == 0


def test_one_missed_segment():
    gt = _canvas()
    gt[5:8, 5:9] = 2
    info = [_seg(1, 1), _seg(2, 1), _seg(7, 7)]
    pred = gt.copy()
    pred[pred == 2] = 0  # not predicted (void): a false negative, stuff stays perfect
    out = _pq(gt, info, pred, [_seg(1, 1), _seg(7, 7)])
    a = out["per_class"]["a"]
    assert (a["tp"], a["fp"], a["fn"]) == (1, 0, 1)
    assert _scores(a) == pytest.approx((2 / 3, 1.0, 2 / 3))
    assert _scores(out["things"]) == pytest.approx((2 / 3, 1.0, 2 / 3))
    assert _scores(out["stuff"]) == (1.0, 1.0, 1.0)
    assert _scores(out["all"]) == pytest.approx((5 / 6, 1.0, 5 / 6))


def test_one_false_positive_of_a_class_only_in_the_predictions():
    gt = _canvas()
    pred = gt.copy()
    pred[8:10, 0:5] = 3  # a thing of category b carved out of the stuff: 10 px
    out = _pq(gt, [_seg(1, 1), _seg(7, 7)], pred, [_seg(1, 1), _seg(3, 2), _seg(7, 7)])
    b = out["per_class"]["b"]
    assert (b["tp"], b["fp"], b["fn"]) == (0, 1, 0) and _scores(b) == (0.0, 0.0, 0.0)
    s = out["per_class"]["s"]  # stuff IoU 80 / 90
    assert _scores(s) == pytest.approx((8 / 9, 8 / 9, 1.0))
    # b appears only in the predictions and still counts in the averages; t appears nowhere
    assert out["all"]["n"] == 3 and out["per_class"]["t"]["tp"] + out["per_class"]["t"]["fp"] == 0
    assert _scores(out["all"]) == pytest.approx((17 / 27, 17 / 27, 2 / 3))
    assert _scores(out["things"]) == pytest.approx((0.5, 0.5, 0.5))


def test_iou_of_exactly_one_half_is_not_a_match():
    gt = np.full((4, 6), 7, dtype=np.uint32)
    gt[0, 0:4] = 1  # 4 px
    gt[2, 0:5] = 2  # 5 px
    pred = np.full((4, 6), 7, dtype=np.uint32)
    pred[0, 0:2] = 1  # 2 of 4: IoU 2 / 4 = 0.5 exactly
    pred[2, 0:4] = 2  # 4 of 5: IoU 0.8
    pred[2, 5] = 7
    gt_info = [_seg(1, 1), _seg(2, 1), _seg(7, 7)]
    out = _pq(gt, gt_info, pred, [_seg(1, 1), _seg(2, 1), _seg(7, 7)])
    a = out["per_class"]["a"]
    assert (a["tp"], a["fp"], a["fn"]) == (1, 1, 1)
    assert _scores(a) == pytest.approx((0.8 / 2, 0.8, 0.5))
    pred[0, 2] = 1  # 3 of 4: IoU 0.75, now a match
    a = _pq(gt, gt_info, pred, [_seg(1, 1), _seg(2, 1), _seg(7, 7)])["per_class"]["a"]
    assert (a["tp"], a["fp"], a["fn"]) == (2, 0, 0)


def test_void_leaves_the_union_and_excuses_mostly_void_predictions():
    v, a, s = 0, 1, 7  # ground truth: void, a thing (4 px), stuff (16 px)
    gt = np.array([[a, a, a, a, v, v, v, v]] + [[v] * 8] * 5 + [[s] * 8] * 2, dtype=np.uint32)
    pred = np.array(
        [
            [1, 1, 1, 1, 1, 1, 1, 1],  # the thing + 4 px on void: IoU 4 / (8 + 4 - 4 - 4) = 1
            [0, 0, 0, 0, 0, 0, 0, 0],
            [5, 5, 5, 0, 0, 0, 0, 0],  # 3 px, all on void: ignored, not a false positive
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [6, 6, 6, 6, 0, 0, 0, 0],  # 8 px, exactly half on void: a false positive
            [6, 6, 6, 6, 9, 9, 9, 9],  # stuff split in two segments of 6 px: IoU 6 / 16
            [7, 7, 7, 7, 7, 7, 9, 9],  # each, so a false negative and two false positives
        ],
        dtype=np.uint32,
    )
    info = [_seg(1, 1), _seg(5, 1), _seg(6, 2), _seg(7, 7), _seg(9, 7)]
    out = _pq(gt, [_seg(1, 1), _seg(7, 7)], pred, info)
    a, b, s = (out["per_class"][k] for k in "abs")
    assert (a["tp"], a["fp"], a["fn"], a["sq"]) == (1, 0, 0, 1.0)  # segment 5 ignored
    assert (b["tp"], b["fp"], b["fn"]) == (0, 1, 0)  # half on void is not more than half
    assert (s["tp"], s["fp"], s["fn"]) == (0, 2, 1)


def test_crowd_regions():
    gt = np.full((6, 10), 7, dtype=np.uint32)
    gt[0:3, 0:5] = 1  # a crowd of category a, 15 px
    gt[4:6, 6:10] = 2  # a plain thing of category a, 8 px
    gt_info = [_seg(1, 1, crowd=1), _seg(2, 1), _seg(7, 7)]
    pred = gt.copy()
    pred[0:3, 0:5] = 3  # predicted as one a: it is not a match (crowd) and not a FP (> half)
    pred[0:2, 7:10] = 4  # an a on stuff: a false positive
    pred[0, 0:2] = 5  # a b inside a's crowd: the crowd of another class excuses nothing
    info = [_seg(2, 1), _seg(3, 1), _seg(4, 1), _seg(5, 2), _seg(7, 7)]
    out = _pq(gt, gt_info, pred, info)
    a, b = out["per_class"]["a"], out["per_class"]["b"]
    assert (a["tp"], a["fp"], a["fn"]) == (1, 1, 0)  # the crowd is no false negative
    assert (b["tp"], b["fp"], b["fn"]) == (0, 1, 0)
    # a crowd alone is not counted: no TP, FP or FN for its class
    only = _pq(gt[0:3, 0:5], [_seg(1, 1, crowd=1)], gt[0:3, 0:5], [_seg(1, 1)])
    assert only["all"]["n"] == 0 and np.isnan(only["all"]["pq"])


def test_several_crowds_of_a_class_keep_the_last_listed():
    """panopticapi keeps one crowd region per category and frame, the last one listed."""
    gt = np.full((2, 8), 7, dtype=np.uint32)
    gt[0, 0:4] = 1
    gt[0, 4:8] = 2
    pred = gt.copy()
    pred[0, :] = 0
    pred[0, 0:3] = 3  # in the first crowd
    info = [_seg(3, 1), _seg(7, 7)]
    first_last = [_seg(2, 1, crowd=1), _seg(1, 1, crowd=1), _seg(7, 7)]
    assert _pq(gt, first_last, pred, info)["per_class"]["a"]["fp"] == 0
    last_first = [_seg(1, 1, crowd=1), _seg(2, 1, crowd=1), _seg(7, 7)]
    assert _pq(gt, last_first, pred, info)["per_class"]["a"]["fp"] == 1


def test_malformed_input_is_refused():
    gt, info = _canvas(), [_seg(1, 1), _seg(7, 7)]
    with pytest.raises(EvaluationError, match="not in segments_info"):
        _pq(gt, info, gt, [_seg(7, 7)])  # id 1 in the map, not listed
    with pytest.raises(EvaluationError, match="not in the map"):
        _pq(gt, info, gt, [*info, _seg(2, 1)])  # listed, not in the map
    with pytest.raises(EvaluationError, match="unknown category"):
        _pq(gt, info, gt, [_seg(1, 1), {"id": 7, "category_id": 99}])
    with pytest.raises(EvaluationError, match="10x10"):
        _pq(gt, info, gt[:5], info)
    with pytest.raises(EvaluationError, match="unique"):
        _pq(gt, info, gt, [*info, _seg(1, 2)])


# ------------------------------------------------------- random cases: two references


def _random_frame(rng, h: int, w: int, void: bool, crowd: bool):
    """A ground truth and a jittered prediction of it: stuff split by random lines, thing
    rectangles (some dropped, moved, relabelled; extra ones added)."""
    yy, xx = np.mgrid[:h, :w]
    ids = iter(rng.permutation(np.arange(1, 5000))[:200].tolist())
    stuff_cats = rng.choice([7, 8], size=int(rng.integers(1, 3)), replace=False).tolist()
    planes = rng.normal(size=(len(stuff_cats), 3)) * [1.0, 1.0, 8.0]
    rects = [
        (*rng.integers(0, [h, w]), *rng.integers(2, 10, 2), int(rng.choice([1, 2])))
        for _ in range(int(rng.integers(1, 7)))
    ]

    def draw(planes, rects, jitter):
        m, info = np.zeros((h, w), dtype=np.uint32), []
        side = np.argmax([a * yy + b * xx + c for a, b, c in planes], axis=0)
        for k, cat in enumerate(stuff_cats):
            cat = cat if rng.uniform() > jitter else int(rng.choice([7, 8]))
            same = [s for s in info if s["category_id"] == cat]  # one segment per stuff class
            sid = same[0]["id"] if same else next(ids)
            m[side == k] = sid
            if not same:
                info.append({"id": sid, "category_id": cat, "isthing": 0, "iscrowd": 0})
        for y, x, hh, ww, cat in rects:
            if rng.uniform() < jitter / 2:
                continue  # dropped
            dy, dx, dh, dw = (rng.integers(-2, 3, 4) * (jitter > 0)).tolist()
            cat = cat if rng.uniform() > jitter / 2 else 3 - cat
            sid = next(ids)
            m[max(y + dy, 0) : y + dy + hh + dh, max(x + dx, 0) : x + dx + ww + dw] = sid
            flag = int(crowd and rng.uniform() < 0.3 and not jitter)
            info.append({"id": sid, "category_id": cat, "isthing": 1, "iscrowd": flag})
        return m, info

    gt, gt_info = draw(planes, rects, 0.0)
    extra = [(*rng.integers(0, [h, w]), *rng.integers(2, 8, 2), int(rng.choice([1, 2])))]
    pred, pred_info = draw(planes + rng.normal(size=planes.shape), rects + extra, 0.4)
    if void:  # void ground truth: a band and a box
        gt[rng.integers(0, h), :] = 0
        y, x = rng.integers(0, [h, w])
        gt[y : y + 6, x : x + 6] = 0
    return _prune(gt, gt_info), _prune(pred, pred_info)


def _prune(m: np.ndarray, info: list[dict]) -> tuple[np.ndarray, list[dict]]:
    counts = Counter(m.ravel().tolist())
    kept = [{**s, "area": counts[s["id"]]} for s in info if counts[s["id"]]]
    return m, kept


def _panopticapi(frames, cats) -> dict:
    """panopticapi's ``pq_compute_single_core`` and ``pq_average``, restated with dicts and
    loops over pixel pairs (ground-truth areas from the JSON, i.e. ``area``)."""
    stat = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0})
    for (gt_map, gt_info), (pred_map, pred_info) in frames:
        gt = {s["id"]: s for s in gt_info}
        pred = {s["id"]: dict(s) for s in pred_info}
        for sid, n in Counter(pred_map.ravel().tolist()).items():
            if sid:
                pred[sid]["area"] = n
        pairs = Counter(zip(gt_map.ravel().tolist(), pred_map.ravel().tolist(), strict=True))
        gt_hit, pred_hit = set(), set()
        for (g, p), inter in pairs.items():
            if g not in gt or p not in pred or gt[g]["iscrowd"]:
                continue
            if gt[g]["category_id"] != pred[p]["category_id"]:
                continue
            iou = inter / (pred[p]["area"] + gt[g]["area"] - inter - pairs.get((0, p), 0))
            if iou > 0.5:
                stat[gt[g]["category_id"]]["tp"] += 1
                stat[gt[g]["category_id"]]["iou"] += iou
                gt_hit.add(g)
                pred_hit.add(p)
        crowd = {}
        for g, s in gt.items():
            if g in gt_hit:
                continue
            if s["iscrowd"]:
                crowd[s["category_id"]] = g
                continue
            stat[s["category_id"]]["fn"] += 1
        for p, s in pred.items():
            if p in pred_hit:
                continue
            ignored = pairs.get((0, p), 0)
            if s["category_id"] in crowd:
                ignored += pairs.get((crowd[s["category_id"]], p), 0)
            if ignored / s["area"] <= 0.5:
                stat[s["category_id"]]["fp"] += 1
    out = {}
    for name, want in (("all", None), ("things", True), ("stuff", False)):
        rows = []
        for cid, cat in cats.items():
            if want is not None and bool(cat["isthing"]) != want:
                continue
            st = stat[cid]
            if st["tp"] + st["fp"] + st["fn"] == 0:
                continue
            den = st["tp"] + 0.5 * st["fp"] + 0.5 * st["fn"]
            rows.append((st["iou"] / den, st["iou"] / st["tp"] if st["tp"] else 0, st["tp"] / den))
        out[name] = tuple(float(np.mean(c)) for c in zip(*rows, strict=True))
    return out


@pytest.mark.parametrize("case", range(20))
def test_random_cases_match_panopticapi_rules_with_void_and_crowd(case):
    rng = np.random.default_rng(100 + case)
    frames = [_random_frame(rng, 24, 32, void=True, crowd=True) for _ in range(3)]
    ours = panoptic_quality(frames, CATS)
    ref = _panopticapi(frames, CATS)
    for part in ("all", "things", "stuff"):
        np.testing.assert_allclose(_scores(ours[part]), ref[part], rtol=0, atol=1e-12)


def _torchmetrics_input(frames, which: int):
    import torch

    out = []
    for frame in frames:
        ids, info = frame[which]
        pixels = np.zeros((*ids.shape, 2), dtype=np.int64)
        pixels[..., 0] = 99  # no category: torchmetrics' void
        for s in info:
            m = ids == s["id"]
            pixels[m] = (s["category_id"], s["id"] if CATS[s["category_id"]]["isthing"] else 0)
        out.append(pixels)
    return torch.from_numpy(np.stack(out))


@pytest.mark.parametrize("void", [False, True], ids=["no-void", "void-gt"])
def test_random_cases_match_torchmetrics(void):
    """torchmetrics' ``PanopticQuality`` takes (category, instance) per pixel and merges all
    pixels of a stuff class into one segment (COCO lists one per class: so do these cases).
    Its void differs from panopticapi's only for void *predictions* (see the next test):
    the cases have no void predicted, and void ground truth in the ``void-gt`` run."""
    tm = pytest.importorskip("torchmetrics.detection")
    for case in range(20):
        rng = np.random.default_rng(case)
        frames = [_random_frame(rng, 24, 32, void=void, crowd=False) for _ in range(3)]
        ours = panoptic_quality(frames, CATS)
        metric = tm.PanopticQuality(
            things={1, 2}, stuffs={7, 8}, return_sq_and_rq=True, return_per_class=True
        )
        metric.update(_torchmetrics_input(frames, 1), _torchmetrics_input(frames, 0))
        per_class = metric.compute().numpy()  # rows: things sorted, then stuff sorted
        for row, cid in enumerate((1, 2, 7, 8)):
            got = ours["per_class"][CATS[cid]["name"]]
            np.testing.assert_allclose(_scores(got), per_class[row], atol=1e-6)
        metric = tm.PanopticQuality(things={1, 2}, stuffs={7, 8}, return_sq_and_rq=True)
        metric.update(_torchmetrics_input(frames, 1), _torchmetrics_input(frames, 0))
        np.testing.assert_allclose(_scores(ours["all"]), metric.compute().numpy(), atol=1e-6)


def test_torchmetrics_void_predictions_differ_from_panopticapi():
    """A documented convention difference: torchmetrics removes *predicted* void from a
    ground-truth segment's union and drops a missed segment that is mostly predicted void;
    panopticapi (and this module) do neither."""
    tm = pytest.importorskip("torchmetrics.detection")
    gt = np.full((4, 4), 7, dtype=np.uint32)
    gt[0:2, :] = 1  # 8 px
    pred = gt.copy()
    pred[0:2, 0:3] = 0  # 6 of its 8 px predicted void, 2 predicted right
    gt_info = [_seg(1, 1), _seg(7, 7)]
    frames = [((gt, gt_info), (pred, gt_info))]
    ours = panoptic_quality(frames, CATS)["per_class"]["a"]
    assert (ours["tp"], ours["fn"]) == (0, 1)  # IoU 2 / 8: missed
    metric = tm.PanopticQuality(
        things={1, 2}, stuffs={7, 8}, return_per_class=True, allow_unknown_preds_category=True
    )  # its void: a category it does not know
    metric.update(_torchmetrics_input(frames, 1), _torchmetrics_input(frames, 0))
    assert metric.compute()[0, 0].item() == pytest.approx(1.0)  # IoU 2 / (8 - 6): matched


# ------------------------------------------------------------------ the scene kind


def test_class_ids_append_stuff_after_the_things():
    assert PANOPTIC_CLASS_NAMES[:NUM_CLASSES] == CLASS_NAMES  # shapes keep their ids
    assert FIRST_STUFF_ID == NUM_CLASSES and STUFF_IDS[0] == FIRST_STUFF_ID
    assert [PANOPTIC_CLASS_NAMES[i] for i in STUFF_IDS] == ["sky", "wall", "grass", "road", "water"]
    cats = panoptic_categories()
    assert [c["id"] for c in cats] == list(range(1, len(PANOPTIC_CLASS_NAMES)))
    assert all(c["isthing"] == int(c["id"] < FIRST_STUFF_ID) for c in cats)


@pytest.mark.parametrize("seed", [0, 5, 7, 123])
def test_three_or_more_stuff_classes_each_with_a_real_share(seed):
    scene = SyntheticScene(seed, 160, 120, FPS, kind="panoptic")
    assert 3 <= len(scene.stuff.classes) <= len(STUFF_IDS)
    for i in range(0, 450, 75):
        fr = scene.truth(i)
        assert (fr.class_map > 0).all()  # every pixel is a thing or stuff: no void
        shares = (
            np.bincount(fr.class_map.ravel(), minlength=256)[list(STUFF_IDS)] / fr.class_map.size
        )
        assert (shares >= 0.04).sum() >= 3, shares
        things = fr.class_map < FIRST_STUFF_ID
        expected = np.zeros_like(fr.class_map)
        for m, lab in zip(fr.masks, fr.labels, strict=True):
            expected[m] = lab
        np.testing.assert_array_equal(np.where(things, fr.class_map, 0), expected)


def _boundary_pixels(lab: np.ndarray, a: int, b: int) -> np.ndarray:
    """(y, x) of pixels of class ``a`` with a 4-neighbour of class ``b``."""
    near = np.zeros(lab.shape, dtype=bool)
    near[1:] |= lab[:-1] == b
    near[:-1] |= lab[1:] == b
    near[:, 1:] |= lab[:, :-1] == b
    near[:, :-1] |= lab[:, 1:] == b
    return np.argwhere((lab == a) & near).astype(np.float64)


@pytest.mark.parametrize("seed", [1, 7, 42])
def test_stuff_boundaries_are_irregular(seed):
    """Not straight lines: the pixels along the boundary of every pair of classes that meet
    over a long stretch stray from their best-fitting line by several pixels RMS (a straight
    cut would be within half a pixel of it; 60 seeds: 6.3 px at least)."""
    scene = SyntheticScene(seed, 320, 240, FPS, kind="panoptic")
    lab = stuff_labels(scene.stuff, scene._grid.xs, scene._grid.ys, 2.0)
    n = len(scene.stuff.classes)
    long_pairs = 0
    for a in range(n):
        for b in range(a + 1, n):
            pts = _boundary_pixels(lab, a, b)
            if len(pts) < 150:
                continue
            pts -= pts.mean(axis=0)
            residual = np.linalg.svd(pts, compute_uv=False)[-1] / np.sqrt(len(pts))
            assert residual > 3.0, (a, b, residual)  # RMS distance to the best line, px
            long_pairs += 1
    assert long_pairs >= n - 1  # every band meets the next along a long boundary


def test_stuff_boundaries_move_smoothly_and_change_shape():
    scene = SyntheticScene(3, 160, 120, FPS, kind="panoptic")
    layout, xs, ys = scene.stuff, scene._grid.xs, scene._grid.ys
    at = [stuff_labels(layout, xs, ys, i / FPS) for i in (0, 1, 30, 90)]
    step = (at[0] != at[1]).mean()
    assert 0.0 < step < 0.03  # frame to frame: a little
    assert (at[0] != at[2]).mean() > 0.02 and (at[0] != at[3]).mean() > 0.05
    # beyond the pan: with the camera motion undone the layout still changed shape
    undone = stuff_labels(layout, xs - layout.pan * 3.0, ys, 3.0)
    assert (at[0] != undone).mean() > 0.02
    # and so does the ground truth: stuff pixels (no thing in either frame) change class
    a, b = scene.truth(0).class_map, scene.truth(30).class_map
    both = (a >= FIRST_STUFF_ID) & (b >= FIRST_STUFF_ID)
    assert (a[both] != b[both]).mean() > 0.02


def test_panoptic_scene_is_deterministic_and_resolution_independent():
    a = SyntheticScene(9, 160, 120, FPS, kind="panoptic").frame(33)
    b = SyntheticScene(9, 160, 120, FPS, kind="panoptic").frame(33)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.class_map, b.class_map)
    other = SyntheticScene(10, 160, 120, FPS, kind="panoptic").frame(33)
    assert not np.array_equal(a.class_map, other.class_map)
    # its objects are not the default scene's (a random stream of their own)
    default = SyntheticScene(9, 160, 120, FPS).frame(33)
    assert (default.class_map != np.where(a.class_map < FIRST_STUFF_ID, a.class_map, 0)).any()
    big = SyntheticScene(9, 320, 240, FPS, kind="panoptic").truth(33)
    assert (big.class_map[1::2, 1::2] == a.class_map).mean() > 0.97
    np.testing.assert_array_equal(
        SyntheticScene(9, 160, 120, FPS, kind="panoptic").truth(33).class_map, a.class_map
    )


@pytest.mark.parametrize("kind", ["panoptic", "default"])
def test_segments_are_unique_and_consistent(kind):
    scene = SyntheticScene(4, 200, 150, FPS, kind=kind)
    for i in (0, 61, 250):
        fr = scene.truth(i)
        ids, info = frame_panoptic(fr)
        assert ids.dtype == np.uint32 and ids.shape == fr.class_map.shape
        seg_ids = [s["id"] for s in info]
        assert (
            len(set(seg_ids))
            == len(seg_ids)
            == len(fr.labels) + sum(not s["isthing"] for s in info)
        )
        assert set(np.unique(ids).tolist()) - {0} == set(seg_ids)
        assert ((ids == 0) == (fr.class_map == 0)).all()  # void only where no class
        for s in info:
            m = ids == s["id"]
            assert s["area"] == int(m.sum()) and s["iscrowd"] == 0
            assert (fr.class_map[m] == s["category_id"]).all()
            ys, xs = np.nonzero(m)
            assert s["bbox"] == [
                xs.min(),
                ys.min(),
                xs.max() + 1 - xs.min(),
                ys.max() + 1 - ys.min(),
            ]
            if s["isthing"]:
                assert s["id"] == THING_ID_BASE + s["track_id"]
                k = fr.instance_ids.tolist().index(s["track_id"])
                np.testing.assert_array_equal(m, fr.masks[k])
            else:
                assert s["id"] == s["category_id"] and "track_id" not in s
        assert (kind == "panoptic") == any(not s["isthing"] for s in info)


def test_id_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1 << 24, (17, 23)).astype(np.uint32)
    ids[0, :4] = [0, 255, 256, 0x123456]
    write_id_png(tmp_path / "x.png", ids)
    np.testing.assert_array_equal(read_id_png(tmp_path / "x.png"), ids)
    rgb = id_map_to_rgb(ids)
    assert rgb[0, 3].tolist() == [0x56, 0x34, 0x12]  # id = R + 256 G + 256^2 B
    assert rgb[0, 2].tolist() == [0, 1, 0]
    np.testing.assert_array_equal(rgb_to_id_map(rgb), ids)
    with pytest.raises(ValueError):
        id_map_to_rgb(np.array([[1 << 24]], dtype=np.uint32))


# ------------------------------------------------------------------ files, end to end


def _write_gt(out, scene, frames):
    writer = PanopticWriter(out)
    images = []
    for i in frames:
        writer.add(scene.truth(i), i)
        images.append({"id": i, "width": scene.width, "height": scene.height})
    return writer.finish({"kind": scene.kind}, images)


def test_evaluate_panoptic_reads_coco_panoptic_files(tmp_path):
    scene = SyntheticScene(2, 96, 72, FPS, kind="panoptic")
    gt = _write_gt(tmp_path / "gt", scene, range(4))
    assert {c["id"]: c["isthing"] for c in gt["categories"]} == {
        c["id"]: c["isthing"] for c in panoptic_categories()
    }
    out = evaluate_panoptic(tmp_path / "gt", tmp_path / "gt")
    assert _scores(out) == (1.0, 1.0, 1.0) and out["frames"] == 4 and out["frames_missing"] == 0
    assert out["stuff"]["n"] >= 3 and out["things"]["n"] >= 1
    # predictions as X.json + X/: frame 3 missing (all its segments missed), frame 2 empty
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    anns = []
    for ann in gt["annotations"][:3]:
        ids = read_id_png(tmp_path / "gt" / "panoptic" / ann["file_name"])
        info = ann["segments_info"]
        if ann["image_id"] == 2:
            ids, info = np.zeros_like(ids), []
        write_id_png(pred_dir / f"p{ann['image_id']}.png", ids)
        anns.append(
            {
                "image_id": ann["image_id"],
                "file_name": f"p{ann['image_id']}.png",
                "segments_info": info,
            }
        )
    (tmp_path / "pred.json").write_text(json.dumps({"annotations": anns}))
    out = evaluate_panoptic(tmp_path / "gt", tmp_path / "pred.json")
    assert out["frames_missing"] == 1 and out["frames_predicted"] == 3
    assert out["rq"] < 1.0 and out["sq"] == pytest.approx(1.0)
    missed = sum(len(a["segments_info"]) for a in gt["annotations"][2:])
    assert sum(c["fn"] for c in out["per_class"].values()) == missed
    only = evaluate_panoptic(tmp_path / "gt", tmp_path / "pred.json", only_predicted=True)
    assert only["frames"] == 3
    # in memory: frame index -> (id map, segments_info); categories from isthing flags
    frames = {i: frame_panoptic(scene.truth(i)) for i in range(2)}
    shifted = {i + 1: v for i, v in frames.items()}
    assert _scores(evaluate_panoptic(frames, shifted, shift=1)) == (1.0, 1.0, 1.0)
    assert evaluate_panoptic(frames, frames, shift=1)["pq"] < 1.0


def test_cli_writes_panoptic_ground_truth(tmp_path):
    pytest.importorskip("av")
    from PIL import Image

    from pipeline.synthetic.__main__ import main

    out = tmp_path / "scene"
    args = ["--kind", "panoptic", "--seed", "3", "--frames", "3", "--size", "96x72", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    pan = json.loads((out / "panoptic.json").read_text())
    coco = json.loads((out / "instances.json").read_text())
    assert pan["info"]["kind"] == "panoptic"
    assert pan["info"]["class_names"] == list(PANOPTIC_CLASS_NAMES)
    assert [c["id"] for c in coco["categories"]] == [c["id"] for c in pan["categories"]]
    scene = SyntheticScene(3, 96, 72, FPS, kind="panoptic")
    for ann in pan["annotations"]:
        truth = scene.truth(ann["image_id"])
        ids, info = frame_panoptic(truth)
        np.testing.assert_array_equal(read_id_png(out / "panoptic" / ann["file_name"]), ids)
        assert ann["segments_info"] == info
        semantic = np.asarray(Image.open(out / "semantic" / f"{ann['image_id']:06d}.png"))
        np.testing.assert_array_equal(semantic, truth.class_map)


def test_source_accepts_the_panoptic_kind():
    from pipeline.sources.synthetic import SyntheticSource

    src = SyntheticSource("synthetic://?seed=5&kind=panoptic&size=96x72&frames=2")
    assert src.kind == "panoptic" and src.info().extra["scene_kind"] == "panoptic"
    frame = next(iter(src.frames()))
    np.testing.assert_array_equal(
        frame.image, SyntheticScene(5, 96, 72, FPS, kind="panoptic").image(0)
    )
