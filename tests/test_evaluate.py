"""pipeline.evaluate: COCO AP and FCN-paper semantic scores against synthetic ground truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from pipeline.evaluate import (  # noqa: E402
    EvaluationError,
    evaluate_instances,
    evaluate_semantic,
    frame_record,
    load_predictions,
    main,
)
from pipeline.synthetic import CLASS_NAMES, SyntheticScene  # noqa: E402
from pipeline.synthetic.coco import coco_dataset  # noqa: E402


def _perfect_instance_record(fr, score=1.0):
    h, w = fr.class_map.shape
    insts = []
    for k, (m, lab) in enumerate(zip(fr.masks, fr.labels, strict=True)):
        ys, xs = np.nonzero(m)
        insts.append(
            {
                "id": k,
                "class_id": int(lab),
                "score": score,
                "box": [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1],
                "mask_array": m,
            }
        )
    return frame_record(fr.index, w, h, CLASS_NAMES, instances=insts, model="truth")


@pytest.fixture(scope="module")
def frames():
    scene = SyntheticScene(21, 160, 120)
    return [scene.frame(i) for i in range(0, 40, 4)]


def test_perfect_instances_score_one(frames):
    gt = coco_dataset(frames)
    records = [json.loads(json.dumps(_perfect_instance_record(fr))) for fr in frames]
    res = evaluate_instances(gt, records)
    for kind in ("segm", "bbox"):
        assert res[kind]["AP"] == pytest.approx(1.0)
        assert res[kind]["AP50"] == pytest.approx(1.0)
        assert res[kind]["AP75"] == pytest.approx(1.0)
    per_class = res["segm"]["per_class_AP"]
    assert set(per_class) == set(CLASS_NAMES[1:])
    present = {CLASS_NAMES[int(a["category_id"])] for a in gt["annotations"]}
    assert all(per_class[c] == pytest.approx(1.0) for c in present)
    assert res["frames"] == len(frames) and res["frames_missing"] == 0
    assert res["gt_instances"] == res["pred_instances"] == len(gt["annotations"])


def test_shift_by_one_frame_drops_instance_scores(frames):
    scene = SyntheticScene(21, 160, 120)
    consecutive = [scene.frame(i) for i in range(30, 40)]
    gt = coco_dataset(consecutive)
    records = [_perfect_instance_record(fr) for fr in consecutive]
    exact = evaluate_instances(gt, records)
    with pytest.warns(UserWarning, match="not in the ground truth"):
        shifted = evaluate_instances(gt, records, shift=1)
    assert exact["segm"]["AP"] == pytest.approx(1.0)
    assert shifted["segm"]["AP"] < 0.9
    assert shifted["unknown_frames"] == 1 and shifted["frames_missing"] == 1


def test_missing_frames_and_wrong_classes_lower_the_score(frames):
    gt = coco_dataset(frames)
    records = [_perfect_instance_record(fr) for fr in frames[:-3]]
    res = evaluate_instances(gt, records)
    assert res["frames_missing"] == 3 and res["segm"]["AP"] < 1.0
    only = evaluate_instances(gt, records, only_predicted=True)
    assert only["segm"]["AP"] == pytest.approx(1.0)
    wrong = [_perfect_instance_record(fr) for fr in frames]
    for rec in wrong:
        for inst in rec["instances"]:
            inst["class_id"] = inst["class_id"] % (len(CLASS_NAMES) - 1) + 1
            inst["class_name"] = CLASS_NAMES[inst["class_id"]]
    assert evaluate_instances(gt, wrong)["segm"]["AP"] == pytest.approx(0.0)


def test_no_predictions_scores_zero(frames):
    gt = coco_dataset(frames)
    records = [frame_record(fr.index, 160, 120, CLASS_NAMES, instances=[]) for fr in frames]
    res = evaluate_instances(gt, records)
    assert res["segm"]["AP"] == 0.0 and res["bbox"]["AP"] == 0.0


def test_unknown_frames_and_size_mismatch(frames):
    gt = coco_dataset(frames[:2])
    recs = [_perfect_instance_record(fr) for fr in frames[:2]]
    stray = dict(recs[0], seq=999)
    with pytest.warns(UserWarning, match="not in the ground truth"):
        res = evaluate_instances(gt, [*recs, stray])
    assert res["unknown_frames"] == 1 and res["segm"]["AP"] == pytest.approx(1.0)
    bad = dict(recs[0], width=80)
    with pytest.raises(EvaluationError, match="80x120"):
        evaluate_instances(gt, [bad])


def test_perfect_semantic_and_shift(frames):
    scene = SyntheticScene(21, 160, 120)
    consecutive = [scene.frame(i) for i in range(30, 40)]
    maps = {fr.index: fr.class_map for fr in consecutive}
    records = [
        json.loads(
            json.dumps(frame_record(fr.index, 160, 120, CLASS_NAMES, class_map=fr.class_map))
        )
        for fr in consecutive
    ]
    res = evaluate_semantic(maps, records, class_names=CLASS_NAMES)
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou"):
        assert res[key] == pytest.approx(1.0)
    assert set(res["per_class_iou"]) == set(CLASS_NAMES)
    with pytest.warns(UserWarning, match="not in the ground truth"):
        shifted = evaluate_semantic(maps, records, class_names=CLASS_NAMES, shift=1)
    assert shifted["mean_iou"] < 0.99


def test_semantic_hand_computed():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 2, 2, 0], [2, 2, 2, 2]], dtype=np.uint8)
    rec = frame_record(0, 4, 4, ["bg", "a", "b"], class_map=pred)
    res = evaluate_semantic({0: gt}, [rec], class_names=["bg", "a", "b"])
    # n = [[3,1,0],[0,4,0],[1,0,7]]: IoU bg 3/5, a 4/5, b 7/8
    assert res["pixel_accuracy"] == pytest.approx(14 / 16)
    assert res["mean_accuracy"] == pytest.approx((3 / 4 + 4 / 4 + 7 / 8) / 3)
    assert res["mean_iou"] == pytest.approx((3 / 5 + 4 / 5 + 7 / 8) / 3)
    assert res["frequency_weighted_iou"] == pytest.approx((4 * 3 / 5 + 4 * 4 / 5 + 8 * 7 / 8) / 16)
    assert res["per_class_iou"]["b"] == pytest.approx(7 / 8)


# -------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def gt_dir(tmp_path_factory):
    pytest.importorskip("av")
    from pipeline.synthetic.__main__ import main as synth

    out = tmp_path_factory.mktemp("gt")
    assert (
        synth(["--seed", "21", "--frames", "8", "--size", "96x64", "--out", str(out), "--quiet"])
        == 0
    )
    return out


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_cli_instances_and_shift(gt_dir, tmp_path, capsys):
    scene = SyntheticScene(21, 96, 64)
    frs = [scene.frame(i) for i in range(8)]
    pred = _write(tmp_path / "inst.jsonl", [_perfect_instance_record(fr) for fr in frs])
    assert main(["--gt", str(gt_dir), "--pred", str(pred)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "instance" and out["segm"]["AP"] == pytest.approx(1.0)
    assert main(["--gt", str(gt_dir), "--pred", str(pred), "--shift", "1"]) == 0
    captured = capsys.readouterr()
    shifted = json.loads(captured.out)
    assert shifted["segm"]["AP"] < out["segm"]["AP"]
    assert "not in the ground truth" in captured.err


def test_cli_semantic(gt_dir, tmp_path, capsys):
    scene = SyntheticScene(21, 96, 64)
    recs = [
        frame_record(i, 96, 64, CLASS_NAMES, class_map=scene.frame(i).class_map) for i in range(8)
    ]
    pred = _write(tmp_path / "sem.jsonl", recs)
    assert main(["--gt", str(gt_dir), "--pred", str(pred), "--indent", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "semantic" and out["mean_iou"] == pytest.approx(1.0)
    assert all(v is None or not math.isnan(v) for v in out["per_class_iou"].values())


def test_cli_errors(gt_dir, tmp_path, capsys):
    assert main(["--gt", str(tmp_path / "nope"), "--pred", str(tmp_path / "x.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["--gt", str(gt_dir), "--pred", str(tmp_path / "missing.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert main(["--gt", str(gt_dir), "--pred", str(bad)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    wrong_size = _write(
        tmp_path / "size.jsonl", [frame_record(0, 48, 32, CLASS_NAMES, instances=[])]
    )
    assert main(["--gt", str(gt_dir), "--pred", str(wrong_size)]) == 2
    assert "48x32" in capsys.readouterr().err
    newer = _write(
        tmp_path / "v2.jsonl", [dict(frame_record(0, 96, 64, CLASS_NAMES), version=[2, 0])]
    )
    with pytest.raises(EvaluationError, match="version 2"):
        load_predictions(newer)
