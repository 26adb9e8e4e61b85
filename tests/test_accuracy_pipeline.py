"""Accuracy through the whole multi-process pipeline, against synthetic ground truth:
the pipeline loses nothing (equals the in-process evaluation), results line up with their
frames (a one-frame shift shows), and accuracy does not depend on the frame size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import config_from_dict
from pipeline.evaluate import evaluate_dir
from pipeline.reference import run_reference
from pipeline.supervisor import Supervisor

METRIC = {"maskrcnn_demo": lambda r: r["segm"]["AP"], "fcn_demo": lambda r: r["mean_iou"],
          "fcn8s_demo": lambda r: r["mean_iou"]}
# the scenes each model learnt: the semantic demos of the panoptic scenes also label stuff
KIND = {"fcn8s_demo": "panoptic"}


def _scene(out: Path, size: str, frames: int = 6, fps: int = 10, kind: str = "default") -> Path:
    subprocess.run(
        [sys.executable, "-m", "pipeline.synthetic", "--seed", "7", "--frames", str(frames), "--size", size,
         "--fps", str(fps), "--kind", kind, "--out", str(out), "--quiet"],
        check=True, timeout=300,
    )
    return out


def _config(gt: Path, tmp_path: Path, model: str):
    return config_from_dict({
        "source": {"uri": str(gt / "video.mp4")},
        "model": {"name": model, "weights": "demo"},
        "batching": {"batch_size": 2, "max_wait_ms": 10_000},
        "output": {"video": None, "publish": f"ipc://{tmp_path}/pub.sock",
                   "save_results": str(tmp_path / f"{gt.name}.jsonl"), "progress": False},
    })


def _pipeline_score(gt: Path, tmp_path: Path, model: str, **kw) -> tuple[float, dict]:
    config = _config(gt, tmp_path, model)
    Supervisor(config).run()
    result = evaluate_dir(gt, config.output.save_results, **kw)
    return METRIC[model](result), result


@pytest.mark.parametrize("model", ["maskrcnn_demo", "fcn_demo", "fcn8s_demo"])
def test_pipeline_accuracy_equals_in_process_and_is_frame_aligned(tmp_path, model):
    gt = _scene(tmp_path / "scene", "640x480", kind=KIND.get(model, "default"))
    piped, _ = _pipeline_score(gt, tmp_path, model)
    # in-process: the same model on the same decoded frames, no processes or sockets
    local = _in_process_score(gt, tmp_path, model)
    assert abs(piped - local) <= 0.005, (piped, local)
    assert piped >= 0.7, f"trained demo model scored only {piped:.3f}"
    # ground truth shifted by one frame: an off-by-one in seq/frame pairing would show
    shifted = METRIC[model](evaluate_dir(gt, tmp_path / "scene.jsonl", shift=1))
    assert shifted < piped - 0.05, (piped, shifted)


def _in_process_score(gt: Path, tmp_path: Path, model: str) -> float:
    """The model's score on ``gt`` computed in this process (the test above shows the
    pipeline's equals it)."""
    records = tmp_path / f"{gt.name}_in_process.jsonl"
    records.write_text("".join(json.dumps(r.to_json()) + "\n" for r in run_reference(_config(gt, tmp_path, model))))
    return METRIC[model](evaluate_dir(gt, records))


@pytest.mark.parametrize("model", ["maskrcnn_demo", "fcn_demo"])
def test_accuracy_is_resolution_independent(tmp_path, model):
    small = _in_process_score(_scene(tmp_path / "s640", "640x480", frames=4), tmp_path, model)
    large = _in_process_score(_scene(tmp_path / "s1280", "1280x720", frames=4), tmp_path, model)
    assert abs(small - large) <= 0.05, (small, large)
