"""The benchmark and the stage-cost table run end to end and write every figure they name
(speed itself is never asserted: figures are for the docs, measured in one run)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

TINY = ["--source", "synthetic://?seed=11&size=160x120&frames=8", "--model", "maskrcnn_demo", "--weights", "random",
        "--min-size", "96", "--max-size", "128", "--batch-size", "2", "--max-frames", "6"]


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO, timeout=timeout)


def test_stage_cost_table(tmp_path):
    out = tmp_path / "costs.json"
    result = _run(["pipeline.stage_costs", "--set", "source.uri=synthetic://?seed=11&size=160x120&frames=8",
                   "--set", "model.weights=random", "--set", "model.min_size=96", "--set", "model.max_size=128",
                   "--set", "model.backend=pytorch", "--frames", "4", "--video", "on", "--json", str(out)])
    assert result.returncode == 0, result.stderr
    costs = json.loads(out.read_text())
    assert costs["frames"] == 4 and costs["video"] is True and costs["size"] == "160x120"
    assert set(costs["core_ms"]) == {"capture", "preprocess", "infer", "postprocess", "publish"}
    assert all(ms > 0 for ms in costs["core_ms"].values()), costs["core_ms"]
    total = sum(costs["core_ms"].values())
    assert abs(costs["total_core_ms"] - total) < 0.05
    assert abs(costs["cpu_bound_fps"] - costs["cores"] / (total / 1000)) < 0.05
    assert "CPU-work bound" in result.stdout and "infer" in result.stdout


def test_bench_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = _run(["pipeline.bench", *TINY, "--backend", "pytorch", "--output", str(tmp_path / "o.mp4"),
                   "--hop-frames", "20", "--json", str(out)])
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    assert figures["command"].startswith("python -m pipeline.bench --source")
    assert figures["machine"]["cores"] >= 1 and figures["date"]
    (case,) = figures["cases"]
    for key in ("sequential_fps", "inference_fps", "pipeline_fps", "pipeline_vs_sequential", "pipeline_vs_inference",
                "efficiency"):
        assert case[key] > 0, key
    assert case["pipeline_frames"] == 6 and case["video"] is True
    assert case["costs"]["cpu_bound_fps"] > 0
    assert abs(case["efficiency"] - case["pipeline_fps"] / case["costs"]["cpu_bound_fps"]) < 0.01
    assert figures["hop_us"]["shm"] > 0 and figures["hop_us"]["zmq"] > 0
    for line in ("(a) sequential loop", "(b) inference alone", "(c) pipeline", "CPU-work bound", "c/a"):
        assert line in result.stdout


def test_panoptic_bench_compares_both_modes(tmp_path):
    out = tmp_path / "panoptic.json"
    proc = _run(["pipeline.bench_panoptic", "--frames", "10", "--rounds", "1", "--size", "160x120",
                 "--semantic", "fcn32s_demo", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(out.read_text())
    p = figures["pipeline"]
    assert p["fps_instance"] > 0 and p["fps_panoptic"] > 0
    assert p["panoptic_over_instance"] == p["fps_panoptic"] / p["fps_instance"]
    assert p["semantic_model"] == "fcn32s_demo" and p["semantic_weights"] in ("demo", "random")
    assert figures["command"].startswith("python -m pipeline.bench_panoptic") and figures["machine"]
    bad = _run(["pipeline.bench_panoptic", "--semantic", "maskrcnn_demo"])
    assert bad.returncode == 2 and "is not a semantic model" in bad.stderr
