"""ONNX Runtime vs eager PyTorch through the whole multi-process pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_video, small_config
from torchvision.ops import box_iou

from pipeline.ops.rle import decode
from pipeline.reference import run_reference
from pipeline.supervisor import Supervisor


def _run(config, tmp_path, name):
    Supervisor(config).run()
    path = tmp_path / "results.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.rename(tmp_path / f"{name}.jsonl")
    return records


@pytest.mark.parametrize("model", ["maskrcnn_demo", "fcn_demo"])
def test_onnxruntime_pipeline_matches_pytorch_pipeline(tmp_path, model):
    video = make_video(tmp_path / "v.mp4", 4, 160, 120, "libx264", 25)
    base = small_config(video, tmp_path, model={"name": model, "score_threshold": 0.05})
    # PyTorch in process: the PyTorch pipeline equals it exactly (tests/test_pipeline.py)
    eager = [json.loads(json.dumps(r.to_json())) for r in run_reference(base)]
    compiled = _run(small_config(video, tmp_path, model={"name": model, "score_threshold": 0.05,
                                                          "backend": "onnxruntime"}), tmp_path, "onnxruntime")
    assert [r["seq"] for r in compiled] == [r["seq"] for r in eager] == [0, 1, 2, 3]
    if model == "fcn_demo":
        for a, b in zip(eager, compiled, strict=True):
            maps = []
            for record in (a, b):
                m = np.zeros((120, 160), np.uint8)
                for c in record["semantic"]["classes"]:
                    m[decode(c["mask"])] = c["class_id"]
                maps.append(m)
            assert (maps[0] == maps[1]).mean() >= 0.995
        return
    matched = total = 0
    for a, b in zip(eager, compiled, strict=True):
        if not a["instances"]:
            continue
        boxes_a = torch.tensor([i["box"] for i in a["instances"]])
        boxes_b = torch.tensor([i["box"] for i in b["instances"]]) if b["instances"] else torch.zeros((0, 4))
        iou = box_iou(boxes_a, boxes_b) if len(boxes_b) else torch.zeros((len(boxes_a), 0))
        for k, inst in enumerate(a["instances"]):
            total += 1
            same_class = [j for j, o in enumerate(b["instances"]) if o["class_id"] == inst["class_id"]]
            if not same_class:
                continue
            j = max(same_class, key=lambda j: float(iou[k, j]))
            other = b["instances"][j]
            if float(iou[k, j]) >= 0.9 and abs(other["score"] - inst["score"]) < 0.02:
                ma, mb = decode(inst["mask"]), decode(other["mask"])
                union = (ma | mb).sum()
                if union == 0 or (ma & mb).sum() / union >= 0.95:
                    matched += 1
    assert total > 0, "the comparison needs detections"
    assert matched / total >= 0.98, f"{matched}/{total} detections matched"
