"""Panoptic mode through the whole multi-process pipeline: an instance and a semantic model
on the same batches, fused in postprocess, published and saved as COCO panoptic; the
results equal the in-process reference's bit for bit, and line up with their frames."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import segments_of, stage_processes

from pipeline.config import config_from_dict
from pipeline.evaluate import evaluate_dir
from pipeline.evaluation.panoptic import read_id_png
from pipeline.reference import run_reference
from pipeline.sinks.panoptic_png import panoptic_folder
from pipeline.supervisor import Supervisor

VOLATILE = {"capture_ns", "publish_ns", "run"}
FRAMES = 6


def _scene(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pipeline.synthetic", "--kind", "panoptic", "--seed", "7", "--frames", str(FRAMES),
         "--size", "640x480", "--fps", "10", "--out", str(out), "--quiet"],
        check=True, timeout=300,
    )
    return out


def _config(gt: Path, tmp_path: Path):
    return config_from_dict({
        "source": {"uri": str(gt / "video.mp4")},
        "model": {"name": "maskrcnn_demo+fcn8s_demo", "backend": "pytorch"},
        "batching": {"batch_size": 2, "max_wait_ms": 10_000},
        "output": {"video": str(tmp_path / "overlay.mp4"), "publish": f"ipc://{tmp_path}/pub.sock",
                   "save_results": str(tmp_path / "results.jsonl"), "progress": False},
    })


def test_panoptic_pipeline_equals_reference_and_is_frame_aligned(tmp_path):
    gt = _scene(tmp_path / "scene")
    config = _config(gt, tmp_path)
    supervisor = Supervisor(config)
    report = supervisor.run()
    assert not segments_of(os.getpid()) and not stage_processes(supervisor.run_id)
    assert report["frames_published"] == FRAMES and report["model"].startswith("maskrcnn_demo@")
    assert "+fcn8s_demo@" in report["model"]
    records = [json.loads(line) for line in Path(config.output.save_results).read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(FRAMES))
    folder = panoptic_folder(config.output.save_results)
    reference = run_reference(config)
    for record, want in zip(records, reference, strict=True):
        assert record["task"] == "panoptic"
        id_map = read_id_png(folder / record["panoptic"].pop("file_name"))
        np.testing.assert_array_equal(id_map, want.panoptic)
        expected = json.loads(json.dumps(want.to_json()))
        got = {k: v for k, v in record.items() if k not in VOLATILE}
        expected = {k: v for k, v in expected.items() if k not in VOLATILE}
        assert got == expected, f"frame {record['seq']} differs from the reference"
        info = record["panoptic"]["segments_info"]
        assert any(s["isthing"] for s in info) and any(not s["isthing"] for s in info)
        # every pixel of a segment is counted in its area, and ids are those of the map
        assert sorted(s["id"] for s in info) == sorted(set(np.unique(id_map).tolist()) - {0})
        assert all(int((id_map == s["id"]).sum()) == s["area"] for s in info)
        tracked = [s["track_id"] for s in info if s["isthing"]]
        assert record["seq"] < 2 or any(t is not None for t in tracked), "things carry their track ids"
    # scored as COCO panoptic; one frame off, the things no longer line up
    scores = evaluate_dir(gt, config.output.save_results)
    shifted = evaluate_dir(gt, config.output.save_results, shift=1, only_predicted=True)
    assert scores["frames"] == FRAMES and scores["things"]["n"] > 0
    assert shifted["things"]["pq"] < scores["things"]["pq"] - 0.05, (scores["things"], shifted["things"])
