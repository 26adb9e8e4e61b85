"""pipeline.evaluation.tracking / tracks / mots: HOTA, CLEAR MOT, Identity on mask IoU.

Hand-computed cases, agreement with TrackEval (trackeval.metrics on the same similarity
matrices, to 1e-9), the tracking part of ``python -m pipeline.evaluate`` and the MOTS
text format.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("pycocotools")
pytest.importorskip("scipy")

from pipeline.evaluate import main  # noqa: E402
from pipeline.evaluation.mots import exclusive_masks, read_mots, write_mots  # noqa: E402
from pipeline.evaluation.records import EvaluationError, frame_record  # noqa: E402
from pipeline.evaluation.tracking import (  # noqa: E402
    ALPHAS,
    TrackingSequence,
    class_average,
    combine,
    evaluate_sequence,
    make_sequence,
    mask_iou,
    summary,
)
from pipeline.evaluation.tracks import evaluate_tracking  # noqa: E402
from pipeline.ops.rle import decode, encode_mask  # noqa: E402
from pipeline.synthetic import CLASS_NAMES, SyntheticScene  # noqa: E402
from pipeline.synthetic.coco import coco_dataset  # noqa: E402


def _scores(gt_ids, pred_ids, sims) -> dict:
    return summary(evaluate_sequence(make_sequence(gt_ids, pred_ids, sims)))


def _ones(n_gt: int, n_pred: int) -> np.ndarray:
    return np.ones((n_gt, n_pred))


# --------------------------------------------------------------------- hand-computed


def test_perfect_tracking_scores_one():
    gt = [[1, 2], [1, 2], [2]]
    sims = [np.eye(2), np.eye(2), np.eye(1)]
    s = _scores(gt, [[7, 9], [7, 9], [9]], sims)
    for key in ("HOTA", "DetA", "AssA", "LocA", "IDF1", "IDP", "IDR", "MOTA", "MOTP"):
        assert s[key] == pytest.approx(1.0, abs=1e-12), key
    assert (s["IDSW"], s["Frag"], s["CLR_FN"], s["CLR_FP"]) == (0, 0, 0, 0)
    assert (s["MT"], s["PT"], s["ML"]) == (2, 0, 0)


def test_one_id_switch():
    # One GT track over 4 frames; prediction 1 covers frames 0-1, prediction 2 frames 2-3.
    s = _scores([[5]] * 4, [[1], [1], [2], [2]], [_ones(1, 1)] * 4)
    # HOTA: every frame matches (DetA 1); each match's track pair shares 2 of |gt| = 4 and
    # |pred| = 2 detections: A = 2 / (2 + 2 + 0) = 1/2, so AssA = 1/2, HOTA = sqrt(1/2).
    assert s["DetA"] == pytest.approx(1.0)
    assert s["AssA"] == pytest.approx(0.5)
    assert s["AssRe"] == pytest.approx(0.5) and s["AssPr"] == pytest.approx(1.0)
    assert s["HOTA"] == pytest.approx(math.sqrt(0.5))
    # CLEAR: TP 4, one switch: MOTA = (4 - 0 - 1) / 4.
    assert s["IDSW"] == 1 and s["Frag"] == 0
    assert s["MOTA"] == pytest.approx(0.75) and s["MOTP"] == pytest.approx(1.0)
    # Identity: GT <-> prediction 1: IDTP 2, IDFN 2, IDFP 2 -> IDF1 = 4 / 8.
    assert (s["IDTP"], s["IDFN"], s["IDFP"]) == (2, 2, 2)
    assert s["IDF1"] == pytest.approx(0.5) and s["IDP"] == pytest.approx(0.5)


def test_missed_detections():
    s = _scores([[5]] * 4, [[1], [1], [], []], [_ones(1, 1)] * 2 + [np.zeros((1, 0))] * 2)
    assert s["DetA"] == pytest.approx(0.5)  # TP 2 / (TP 2 + FN 2)
    assert s["AssA"] == pytest.approx(0.5)  # 2 / (2 + FNA 2 + FPA 0)
    assert s["HOTA"] == pytest.approx(0.5)
    assert s["MOTA"] == pytest.approx(0.5) and s["CLR_FN"] == 2
    assert s["IDF1"] == pytest.approx(2 / 3)  # 2 / (2 + 0 + 0.5 * 2)
    assert (s["MT"], s["PT"], s["ML"]) == (0, 1, 0)


def test_false_positives():
    # Frame 0 has a second prediction that overlaps nothing.
    s = _scores([[5], [5]], [[1, 2], [1]], [np.array([[1.0, 0.0]]), _ones(1, 1)])
    assert s["DetA"] == pytest.approx(2 / 3)
    assert s["AssA"] == pytest.approx(1.0)
    assert s["HOTA"] == pytest.approx(math.sqrt(2 / 3))
    assert s["MOTA"] == pytest.approx(0.5)  # (2 - 1) / 2
    assert s["IDF1"] == pytest.approx(0.8)  # 2 / (2 + 0.5)
    assert s["IDP"] == pytest.approx(2 / 3) and s["IDR"] == pytest.approx(1.0)


def test_partial_overlap_counts_at_the_alphas_it_reaches():
    s = _scores([[5]], [[1]], [np.array([[0.62]])])
    reached = int(np.sum(ALPHAS <= 0.62))
    assert reached == 12  # alpha 0.05 .. 0.60
    assert s["HOTA"] == pytest.approx(12 / 19) and s["DetA"] == pytest.approx(12 / 19)
    assert s["MOTP"] == pytest.approx(0.62) and s["MOTA"] == pytest.approx(1.0)
    low = _scores([[5]], [[1]], [np.array([[0.4]])])  # below the CLEAR / Identity threshold
    assert low["MOTA"] == pytest.approx(-1.0) and low["IDF1"] == 0.0


def test_empty_frames_and_sequences():
    # Empty frames in the middle interrupt nothing.
    s = _scores([[5], [], [5]], [[1], [], [1]], [_ones(1, 1), np.zeros((0, 0)), _ones(1, 1)])
    assert s["HOTA"] == pytest.approx(1.0) and s["MOTA"] == pytest.approx(1.0)
    assert s["Frag"] == 0 and s["IDF1"] == pytest.approx(1.0)
    nothing = _scores([[], []], [[], []], [np.zeros((0, 0))] * 2)
    assert nothing["HOTA"] == 0.0 and nothing["MOTA"] == 0.0 and nothing["IDF1"] == 0.0
    missed = _scores([[5], [5]], [[], []], [np.zeros((1, 0))] * 2)
    assert missed["CLR_FN"] == 2 and missed["MOTA"] == 0.0 and missed["HOTA"] == 0.0
    assert missed["ML"] == 1 and missed["IDFN"] == 2
    ghosts = _scores([[], []], [[1, 2], [1]], [np.zeros((0, 2)), np.zeros((0, 1))])
    assert ghosts["CLR_FP"] == 3 and ghosts["IDFP"] == 3 and ghosts["HOTA"] == 0.0
    assert ghosts["MOTA"] == -3.0  # (TP - FP) / max(1, GT), as TrackEval reports it


def test_fragmentation_count():
    # Matched in frames 0-1, IoU 0.3 (unmatched) in frame 2, matched again in 3-4, lost in
    # 5, matched in 6: two resumptions = 2 fragmentations, same prediction id: no switch.
    ious = [1.0, 1.0, 0.3, 1.0, 1.0, 0.2, 1.0]
    s = _scores([[5]] * 7, [[1]] * 7, [np.array([[v]]) for v in ious])
    assert s["Frag"] == 2 and s["IDSW"] == 0
    assert (s["CLR_TP"], s["CLR_FN"], s["CLR_FP"]) == (5, 2, 2)
    assert s["MOTA"] == pytest.approx((5 - 2) / 7)


def test_clear_keeps_the_previous_match():
    # Frame 1: prediction 2 fits better (0.9) but prediction 1 still matches (0.6): kept.
    sims = [np.array([[0.9, 0.0]]), np.array([[0.6, 0.9]])]
    s = _scores([[5], [5]], [[1, 2], [1, 2]], sims)
    assert s["IDSW"] == 0 and s["MOTP"] == pytest.approx((0.9 + 0.6) / 2)


def test_make_sequence_checks_its_input():
    with pytest.raises(ValueError, match="not unique"):
        make_sequence([[1, 1]], [[2]], [np.zeros((2, 1))])
    with pytest.raises(ValueError, match="one entry per frame"):
        make_sequence([[1]], [], [])
    seq = make_sequence([[10, 30], [30]], [[4], []], [np.zeros((2, 1)), np.zeros((1, 0))])
    assert (seq.num_gt_ids, seq.num_pred_ids, seq.num_gt_dets) == (2, 1, 3)
    assert [g.tolist() for g in seq.gt_ids] == [[0, 1], [1]]


def test_mask_iou_matches_pixels():
    a = np.zeros((20, 30), bool)
    a[2:10, 3:12] = True
    b = np.zeros_like(a)
    b[5:15, 6:20] = True
    expected = (a & b).sum() / (a | b).sum()
    ious = mask_iou([encode_mask(a), encode_mask(b)], [encode_mask(b)])
    assert ious.shape == (2, 1)
    assert ious[0, 0] == pytest.approx(expected) and ious[1, 0] == pytest.approx(1.0)
    assert mask_iou([], [encode_mask(a)]).shape == (0, 1)


# ------------------------------------------------------------------------ TrackEval


def _random_sequence(rng: np.random.Generator, quantized: bool) -> TrackingSequence:
    n_frames, n_gt, n_pred = rng.integers(1, 30), rng.integers(1, 8), rng.integers(1, 10)
    gt_ids, pred_ids, sims = [], [], []
    for _ in range(n_frames):
        g = rng.choice(n_gt, rng.integers(0, n_gt + 1), replace=False)
        p = rng.choice(n_pred, rng.integers(0, n_pred + 1), replace=False)
        s = rng.random((len(g), len(p)))
        if quantized:  # ties, and values exactly on the thresholds
            s = np.round(s * 20) / 20
        s[rng.random(s.shape) < 0.4] = 0.0
        gt_ids.append(g * 3 + 100)
        pred_ids.append(p * 7 + 1)
        sims.append(s)
    return make_sequence(gt_ids, pred_ids, sims)


def _trackeval_data(seq: TrackingSequence) -> dict:
    return {
        "num_timesteps": seq.num_frames,
        "gt_ids": list(seq.gt_ids),
        "tracker_ids": list(seq.pred_ids),
        "similarity_scores": list(seq.similarity),
        "num_gt_ids": seq.num_gt_ids,
        "num_tracker_ids": seq.num_pred_ids,
        "num_gt_dets": seq.num_gt_dets,
        "num_tracker_dets": seq.num_pred_dets,
    }


def _assert_same(mine: dict, theirs: dict, where: str) -> None:
    for metric, fields in mine.items():
        for key, value in fields.items():
            if key in theirs[metric]:
                ref = np.asarray(theirs[metric][key], dtype=float)
                got = np.asarray(value, dtype=float)
                assert np.allclose(got, ref, rtol=0, atol=1e-9, equal_nan=True), (
                    f"{where}: {metric}.{key}: {got} != TrackEval {ref}"
                )


@pytest.fixture(scope="module")
def trackeval_metrics():
    trackeval = pytest.importorskip("trackeval")
    quiet = {"PRINT_CONFIG": False}
    return {
        "HOTA": trackeval.metrics.HOTA(),
        "CLEAR": trackeval.metrics.CLEAR(quiet),
        "Identity": trackeval.metrics.Identity(quiet),
    }


def test_agrees_with_trackeval_on_random_sequences(trackeval_metrics):
    rng = np.random.default_rng(2021)
    for k in range(24):
        seq = _random_sequence(rng, quantized=k % 2 == 1)
        mine = evaluate_sequence(seq)
        per_seq = {n: m.eval_sequence(_trackeval_data(seq)) for n, m in trackeval_metrics.items()}
        reported = {n: m.combine_sequences({"s": per_seq[n]}) for n, m in trackeval_metrics.items()}
        _assert_same(mine, reported, f"sequence {k}")
        if seq.num_gt_dets and seq.num_pred_dets:  # TrackEval skips its final fields else
            _assert_same(mine, per_seq, f"sequence {k} (eval_sequence)")


def test_class_combinations_agree_with_trackeval(trackeval_metrics):
    rng = np.random.default_rng(7)
    for k in range(4):
        classes = [_random_sequence(rng, quantized=bool(k % 2)) for _ in range(3)]
        classes.append(make_sequence([[], []], [[], []], [np.zeros((0, 0))] * 2))  # empty
        classes.append(make_sequence([[], [4]], [[], []], [np.zeros((0, 0)), np.zeros((1, 0))]))
        mine = [evaluate_sequence(s) for s in classes]
        theirs = {
            n: {
                str(c): m.combine_sequences({"s": m.eval_sequence(_trackeval_data(s))})
                for c, s in enumerate(classes)
            }
            for n, m in trackeval_metrics.items()
        }
        det_av = {
            n: m.combine_classes_det_averaged(theirs[n]) for n, m in trackeval_metrics.items()
        }
        cls_av = {
            n: m.combine_classes_class_averaged(theirs[n], ignore_empty_classes=True)
            for n, m in trackeval_metrics.items()
        }
        _assert_same(combine(mine), det_av, f"case {k} detection-weighted")
        averaged = class_average(mine)
        for metric, fields in (
            ("HOTA", ("HOTA", "DetA", "AssA", "LocA")),
            ("CLEAR", ("MOTA", "MOTP", "IDSW", "Frag")),
            ("Identity", ("IDF1", "IDP", "IDR")),
        ):
            for f in fields:
                assert np.allclose(averaged[metric][f], cls_av[metric][f], rtol=0, atol=1e-9)


# ------------------------------------------------------------- tracks, CLI and MOTS


@pytest.fixture(scope="module")
def scene_frames():
    scene = SyntheticScene(21, 96, 64)
    return [scene.frame(i) for i in range(0, 60, 3)]


def _tracked_records(frames, swap_after: int | None = None, drop: int | None = None):
    records = []
    for fr in frames:
        insts = []
        for m, lab, tid in zip(fr.masks, fr.labels, fr.instance_ids, strict=True):
            if drop is not None and int(tid) == drop:
                continue
            ys, xs = np.nonzero(m)
            track = int(tid) + (1000 if swap_after is not None and fr.index >= swap_after else 0)
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            insts.append({"class_id": int(lab), "box": box, "mask_array": m, "track_id": track})
        h, w = fr.class_map.shape
        records.append(frame_record(fr.index, w, h, CLASS_NAMES, instances=insts, model="t"))
    return [json.loads(json.dumps(r)) for r in records]


def test_perfect_tracks_of_a_synthetic_scene(scene_frames):
    gt = coco_dataset(scene_frames)
    res = evaluate_tracking(gt, _tracked_records(scene_frames))
    for key in ("HOTA", "DetA", "AssA", "LocA", "IDF1", "MOTA", "MOTP"):
        assert res[key] == pytest.approx(1.0), key
        assert res["class_agnostic"][key] == pytest.approx(1.0), key
        assert res["class_averaged"][key] == pytest.approx(1.0), key
    assert res["IDSW"] == 0 and res["gt_dets"] == len(gt["annotations"])
    assert res["frames"] == len(scene_frames)
    present = {a["category_id"] for a in gt["annotations"]}
    for cid, name in enumerate(CLASS_NAMES[1:], start=1):
        per = res["per_class"][name]
        assert per["HOTA"] == (pytest.approx(1.0) if cid in present else 0.0)


def test_switched_and_missing_tracks_of_a_synthetic_scene(scene_frames):
    gt = coco_dataset(scene_frames)
    switched = evaluate_tracking(gt, _tracked_records(scene_frames, swap_after=30))
    # Every GT track seen both before and after frame 30 switches once.
    before = {int(t) for fr in scene_frames if fr.index < 30 for t in fr.instance_ids}
    after = {int(t) for fr in scene_frames if fr.index >= 30 for t in fr.instance_ids}
    assert before & after and switched["IDSW"] == len(before & after)
    assert switched["AssA"] < 1.0 and switched["DetA"] == pytest.approx(1.0)
    some_track = int(scene_frames[0].instance_ids[0])
    dropped = evaluate_tracking(gt, _tracked_records(scene_frames, drop=some_track))
    assert dropped["CLR_FN"] > 0 and dropped["MOTA"] < 1.0 and dropped["CLR_FP"] == 0


def test_tracking_errors_name_the_input(scene_frames):
    gt = coco_dataset(scene_frames)
    records = _tracked_records(scene_frames)
    untracked = json.loads(json.dumps(gt))
    del untracked["annotations"][3]["track_id"]
    with pytest.raises(EvaluationError, match="annotation 4 .*'track_id'"):
        evaluate_tracking(untracked, records, gt_source="gt.json")
    records[2]["instances"][0]["track_id"] = -1
    with pytest.raises(EvaluationError, match="res.jsonl: seq 6 instance 0: 'track_id' must be an integer"):
        evaluate_tracking(gt, records, pred_source="res.jsonl")
    # null: a detection no confirmed track owns; it is left out, like a missed detection
    records[2]["instances"][0]["track_id"] = None
    assert evaluate_tracking(gt, records, pred_source="res.jsonl")["CLR_FN"] == 1


def _mask(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_exclusive_masks_give_pixels_to_the_higher_score():
    a, b, c = _mask(10, 12, 0, 6, 0, 6), _mask(10, 12, 3, 9, 3, 9), _mask(10, 12, 4, 5, 4, 5)
    out = exclusive_masks([encode_mask(a), encode_mask(b), encode_mask(c)], [0.5, 0.9, 0.1])
    assert np.array_equal(decode(out[1]), b)  # the highest score keeps everything
    assert np.array_equal(decode(out[0]), a & ~b)
    assert out[2] is None  # c lies inside b: nothing left
    alone = [encode_mask(a)]
    assert exclusive_masks(alone, [0.3])[0]["counts"] == alone[0]["counts"]


def test_mots_round_trip(tmp_path):
    a, b = _mask(16, 20, 0, 8, 0, 10), _mask(16, 20, 4, 12, 5, 15)
    box = [0, 0, 1, 1]
    insts = [
        {"class_id": 2, "score": 0.4, "box": box, "mask_array": a, "track_id": 3},
        {"class_id": 1, "score": 0.8, "box": box, "mask_array": b, "track_id": 1234},
    ]
    records = [
        frame_record(0, 20, 16, CLASS_NAMES, instances=insts, stream="cam-1"),
        frame_record(1, 20, 16, CLASS_NAMES, instances=[], stream="cam-1"),
        frame_record(2, 20, 16, CLASS_NAMES, instances=insts[:1], stream="cam-1"),
    ]
    (path,) = write_mots(records, tmp_path / "mots")
    assert path.name == "cam-1.txt"
    lines = path.read_text().splitlines()
    assert [ln.split()[:5] for ln in lines] == [
        ["0", "2003", "2", "16", "20"],
        ["0", "2234", "1", "16", "20"],
        ["2", "2003", "2", "16", "20"],
    ]
    objs = read_mots(path)
    assert [(o.frame, o.track_id, o.class_id) for o in objs] == [(0, 3, 2), (0, 1234, 1), (2, 3, 2)]
    assert np.array_equal(decode(objs[0].mask), a & ~b) and np.array_equal(decode(objs[1].mask), b)
    assert np.array_equal(decode(objs[2].mask), a)
    assert [o.line() for o in objs] == lines


def test_mots_errors(tmp_path):
    untracked = frame_record(
        0, 8, 8, CLASS_NAMES,
        instances=[{"class_id": 1, "box": [0, 0, 1, 1], "mask_array": _mask(8, 8, 0, 2, 0, 2)}],
    )  # fmt: skip
    with pytest.raises(EvaluationError, match="r.jsonl: no instance has a 'track_id'"):
        write_mots([untracked], tmp_path, source="r.jsonl")
    with pytest.raises(EvaluationError, match="cannot be a MOTS file name"):
        tracked = dict(untracked, instances=[dict(untracked["instances"][0], track_id=1)])
        write_mots([dict(tracked, stream="../x")], tmp_path)
    bad = tmp_path / "bad.txt"
    empty = encode_mask(np.zeros((8, 8), bool))["counts"]
    bad.write_text(f"3 1001 1 8 8 {empty}\n")
    assert read_mots(bad)[0].track_id == 1
    for text, message in (
        ("0 1001 1 8 8\n", "expected 6 fields"),
        ("0 1001 1 8 8 PPP\n", "not a valid 8x8 COCO RLE"),
        (f"0 1001 1 8 9 {empty}\n", "not a valid 8x9 COCO RLE"),
        (f"0 5 1 8 8 {empty}\n", "below class_id"),
        (f"x 1001 1 8 8 {empty}\n", "must be integers"),
        (f"0 1001 1 8 8 {empty}\n0 1001 1 8 8 {empty}\n", "appears twice"),
    ):
        bad.write_text(text)
        with pytest.raises(EvaluationError, match=rf"bad.txt:[12]: .*{message}"):
            read_mots(bad)


def test_cli_tracking_and_save_mots(scene_frames, tmp_path, capsys):
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    gt = coco_dataset(scene_frames)
    (gt_dir / "instances.json").write_text(json.dumps(gt))
    pred = tmp_path / "res.jsonl"
    pred.write_text("".join(json.dumps(r) + "\n" for r in _tracked_records(scene_frames)))
    mots = tmp_path / "mots"
    args = ["--gt", str(gt_dir), "--pred", str(pred), "--indent", "0"]
    assert main([*args, "--save-mots", str(mots)]) == 0
    out = json.loads(capsys.readouterr().out)
    tracking = out["tracking"]
    for key in ("HOTA", "DetA", "AssA", "LocA", "IDF1", "IDP", "IDR", "MOTA", "MOTP"):
        assert tracking[key] == pytest.approx(1.0), key
    assert tracking["IDSW"] == 0 and tracking["Frag"] == 0
    assert {"per_class", "class_averaged", "class_agnostic"} <= set(tracking)
    objs = read_mots(mots / "0.txt")
    assert len(objs) == len(gt["annotations"]) and out["mots_files"] == [str(mots / "0.txt")]
    # Ground truth without track ids: exit 2 with one line naming file, key and annotation.
    del gt["annotations"][0]["track_id"]
    (gt_dir / "instances.json").write_text(json.dumps(gt))
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "instances.json: annotation 1" in err and "track_id" in err
    # Untracked predictions: no tracking object; --save-mots is an error.
    plain = [json.loads(line) for line in pred.read_text().splitlines()]
    for rec in plain:
        for inst in rec["instances"]:
            del inst["track_id"]
    pred.write_text("".join(json.dumps(r) + "\n" for r in plain))
    assert main(args) == 0
    assert "tracking" not in json.loads(capsys.readouterr().out)
    assert main([*args, "--save-mots", str(mots)]) == 2
    err = capsys.readouterr().err
    assert "res.jsonl: no instance has a 'track_id'" in err


def test_save_mots_files_score_the_same_in_trackeval_kitti_mots(tmp_path, capsys):
    """End to end: TrackEval's KITTI-MOTS reader on our --save-mots file and on the GT
    written as MOTS text gives our ``tracking.per_class`` figures (classes 1, 2)."""
    trackeval = pytest.importorskip("trackeval")
    rng = np.random.default_rng(5)
    frames = [SyntheticScene(3, 160, 120).frame(i) for i in range(0, 90, 2)]
    gt = coco_dataset(frames)
    for item in gt["images"] + gt["annotations"]:  # KITTI frames are 0, 1, 2, ...
        key = "id" if "file_name" in item else "image_id"
        item[key] //= 2
    (tmp_path / "gt" / "label_02").mkdir(parents=True)
    (tmp_path / "gt" / "instances.json").write_text(json.dumps(gt))
    (tmp_path / "gt" / "label_02" / "0.txt").write_text(
        "".join(
            f"{a['image_id']} {a['category_id'] * 1000 + a['track_id']} {a['category_id']} "
            f"{a['segmentation']['size'][0]} {a['segmentation']['size'][1]} "
            f"{a['segmentation']['counts']}\n"
            for a in gt["annotations"]
        )
    )
    records = _tracked_records(frames)
    for k, rec in enumerate(records):  # misses, shifted and overlapping masks, switches
        rec["seq"] = k
        kept = []
        for inst in rec["instances"]:
            m = np.roll(decode(inst["mask"]), rng.integers(-3, 4, 2), axis=(0, 1))
            m = m | np.roll(m, 4, axis=1) if rng.random() < 0.3 else m
            inst.update(mask=encode_mask(m), score=float(rng.random()))
            inst["track_id"] += 500 if k > 20 and rng.random() < 0.2 else 0
            kept += [inst] if rng.random() > 0.1 and m.any() else []
        rec["instances"] = kept
    pred = tmp_path / "res.jsonl"
    pred.write_text("".join(json.dumps(r) + "\n" for r in records))
    mots = tmp_path / "trackers" / "ours" / "data"
    assert main(["--gt", str(tmp_path / "gt"), "--pred", str(pred), "--save-mots", str(mots)]) == 0
    ours = json.loads(capsys.readouterr().out)["tracking"]["per_class"]
    dataset = trackeval.datasets.KittiMOTS(
        {"GT_FOLDER": str(tmp_path / "gt"), "TRACKERS_FOLDER": str(tmp_path / "trackers"),
         "SEQ_INFO": {"0": len(frames)}, "PRINT_CONFIG": False}
    )  # fmt: skip
    quiet = {"PRINT_CONFIG": False}
    metrics = [
        trackeval.metrics.HOTA(),
        trackeval.metrics.CLEAR(quiet),
        trackeval.metrics.Identity(quiet),
    ]
    off = {k: False for k in ("USE_PARALLEL", "PRINT_RESULTS", "PRINT_CONFIG", "OUTPUT_SUMMARY",
                              "OUTPUT_DETAILED", "PLOT_CURVES", "TIME_PROGRESS")}  # fmt: skip
    res, _ = trackeval.Evaluator(off).evaluate([dataset], metrics)
    theirs = res["KittiMOTS"]["ours"]["COMBINED_SEQ"]
    for cls, name in (("car", CLASS_NAMES[1]), ("pedestrian", CLASS_NAMES[2])):
        t = theirs[cls]
        for key in ("HOTA", "DetA", "AssA", "LocA"):
            assert ours[name][key] == pytest.approx(float(np.mean(t["HOTA"][key])), abs=1e-9)
        for key in ("MOTA", "MOTP", "IDSW", "Frag", "CLR_TP", "CLR_FP", "CLR_FN"):
            assert ours[name][key] == pytest.approx(float(t["CLEAR"][key]), abs=1e-9), key
        for key in ("IDF1", "IDP", "IDR"):
            assert ours[name][key] == pytest.approx(float(t["Identity"][key]), abs=1e-9), key
    assert any(0 < ours[n]["HOTA"] < 1 for n in CLASS_NAMES[1:3])  # a non-trivial case
