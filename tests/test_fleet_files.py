"""The fleet over files on a real three-node Ray cluster on this machine.

One node is removed while it runs a file: every file's results must still appear exactly
once, whole, and equal to a plain single-machine ``run_pipeline.py`` run on the same file;
the missing file among them fails once with its one line and stops nothing; a re-run
resumes (skips everything); and no process, shared-memory segment or partial output is
left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from pipeline.fleet.child import fleet_processes  # noqa: E402
from pipeline.transport.shm import NAME_PREFIX, SHM_DIR  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
# small and deterministic: fixed batches by frame number, so results never depend on timing
PIPELINE_ARGS = ["--model", "maskrcnn_demo", "--backend", "onnxruntime", "--min-size", "160",
                 "--max-size", "240", "--batch-size", "4"]
N_FILES = int(os.environ.get("SEGSTREAM_FLEET_TEST_FILES", "12"))  # 12 short files over 3 nodes (fewer: faster)
FAST_HEALTH = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}
# fields that differ between any two runs of the same file (wall clock, run id)
VOLATILE = ("capture_ns", "run")


def comparable(results: Path) -> list[dict]:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]


def shm_names() -> set[str]:
    return {p.name for p in SHM_DIR.iterdir()}


def leaked_segments(before: set[str]) -> list[str]:
    """New /dev/shm entries, except rings of pipelines still alive (another suite's)."""
    leaked = []
    for name in sorted(shm_names() - before):
        if name.startswith(NAME_PREFIX):
            pid = name.removeprefix(NAME_PREFIX).split("-")[0]
            if pid.isdigit() and os.path.exists(f"/proc/{pid}") and int(pid) not in fleet_processes():
                continue  # a live pipeline of another suite
        leaked.append(name)
    return leaked


def make_clip(seed: int, frames: int, out: Path) -> Path:
    subprocess.run([PY, "-m", "pipeline.synthetic", "--seed", str(seed), "--frames", str(frames),
                    "--size", "320x240", "--out", str(out)], cwd=REPO, check=True,
                   capture_output=True)
    return out / "video.mp4"


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    """N_FILES copies of two distinct clips, and each clip's single-machine results."""
    base = tmp_path_factory.mktemp("fleet_clips")
    originals = [make_clip(31, 8, base / "a"), make_clip(32, 6, base / "b")]
    refs = []
    for i, clip in enumerate(originals):  # the reference runs overlap the cluster start-up
        out = base / f"ref{i}.jsonl"
        refs.append((out, subprocess.Popen(
            [PY, "run_pipeline.py", "--source", str(clip), "--output", "none", "--publish",
             "none", "--save-results", str(out), "--no-progress", *PIPELINE_ARGS], cwd=REPO,
            stderr=subprocess.PIPE)))
    inputs = base / "inputs"
    inputs.mkdir()
    files = []
    for i in range(N_FILES):
        files.append(inputs / f"clip{i:02d}.mp4")
        shutil.copy(originals[i % 2], files[-1])
    return {"files": files, "refs": refs, "base": base}


def reference(clips: dict, index: int) -> list[dict]:
    out, proc = clips["refs"][index % 2]
    if proc.wait(180) != 0:
        pytest.fail(f"reference run failed: {proc.stderr.read().decode()[-500:]}")
    return comparable(out)


def attempt_nodes(root: Path) -> dict[str, list[str]]:
    found = {}
    for path in root.glob(".fleet-*/attempts/*"):
        found[path.name] = [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]
    return found


@pytest.mark.timeout(420)
def test_files_survive_a_node_loss_exactly_once_and_resume(clips, tmp_path) -> None:
    shm_before = shm_names()
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "_system_config": FAST_HEALTH})
    workers = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    root = tmp_path / "out"
    missing = clips["base"] / "inputs" / "missing.mp4"
    cmd = [PY, "-m", "pipeline.fleet", "files", *map(str, clips["files"]), str(missing),
           "--out", str(root), "--address", cluster.address, "--", *PIPELINE_ARGS]
    removed = None
    try:
        fleet = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while removed is None and time.monotonic() < deadline and fleet.poll() is None:
            # a node running a file that is not committed yet, a few seconds into it
            for key, nodes in attempt_nodes(root).items():
                if key != "missing" and not (root / key).exists():
                    victim = next((w for w in workers if w.node_id == nodes[-1]), None)
                    if victim is not None:
                        time.sleep(4)
                        if not (root / key).exists():
                            cluster.remove_node(victim)
                            removed = (key, victim.node_id)
                        break
            time.sleep(0.5)
        _, stderr = fleet.communicate(timeout=300)
    finally:
        cluster.shutdown()
    assert removed is not None, "no node was removed mid-file"
    assert fleet.returncode == 1, stderr  # one file failed (the missing one)
    assert f"error: {missing}: source not found: {missing}" in stderr

    report = json.loads((root / "fleet_report.json").read_text())
    assert report["files"] == {"total": N_FILES + 1, "done": N_FILES, "skipped": 0, "failed": 1}
    assert report["failed"] == [{"file": str(missing), "reason": f"source not found: {missing}"}]
    retried = {Path(r["file"]).stem: r for r in report["retried"]}
    assert removed[0] in retried and retried[removed[0]]["nodes"][0] == removed[1]
    assert report["retries"] >= 1 and "missing" not in retried  # bad input: tried once
    assert report["results"][removed[0]]["node"] != removed[1]  # finished elsewhere
    assert sum(n["frames"] for n in report["nodes"].values()) == report["frames"]

    # exactly once, whole, and equal to the single-machine run
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [f"clip{i:02d}" for i in range(N_FILES)] + ["fleet_report.json"])
    for i in range(N_FILES):
        out = root / f"clip{i:02d}"
        assert sorted(p.name for p in out.iterdir()) == [
            "fleet.json", "overlay.mp4", "pipeline.log", "report.json", "results.jsonl"]
        got = comparable(out / "results.jsonl")
        assert [r["seq"] for r in got] == list(range(len(got)))
        assert got == reference(clips, i), f"clip{i:02d} differs from the single-machine run"

    # nothing left: processes, rings, partial outputs
    deadline = time.monotonic() + 20
    while fleet_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert fleet_processes() == []
    assert leaked_segments(shm_before) == []

    # a re-run resumes: everything is committed, so nothing runs (and no cluster is needed)
    again = subprocess.run(
        [PY, "-m", "pipeline.fleet", "files", *map(str, clips["files"]), "--out", str(root),
         "--no-progress", "--", *PIPELINE_ARGS], cwd=REPO, capture_output=True, text=True,
        timeout=60)
    assert again.returncode == 0, again.stderr
    assert json.loads((root / "fleet_report.json").read_text())["files"]["skipped"] == N_FILES
