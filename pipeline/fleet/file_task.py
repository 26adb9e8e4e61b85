"""One attempt at one file, as it runs inside a Ray worker on some node.

The attempt logs itself (``ROOT/.fleet-RUN/attempts/KEY``: the fleet report counts retries
from it), runs the normal pipeline on the file into a private directory under the output
root, and commits that directory with one rename (:func:`pipeline.fleet.files.commit_attempt`).
A bad file is an *outcome* (``status: failed`` with the pipeline's one-line reason), never
an exception: Ray retries only system failures (a dead node or worker), so a bad file is
tried once while a file whose node died is tried again elsewhere.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.fleet.child import ChildPipeline, sweep_dead_pipelines
from pipeline.fleet.files import COMMIT_MARKER, PARTIAL_PREFIX, commit_attempt, is_committed

__all__ = ["run_file_attempt", "attempts_dir", "read_attempts", "pipeline_file_args"]


def attempts_dir(root: Path, run_id: str) -> Path:
    """Where a fleet run logs its attempts (one file per key, one line per attempt)."""
    return Path(root) / f".fleet-{run_id}" / "attempts"


def read_attempts(root: Path, run_id: str) -> dict[str, list[str]]:
    """key -> the node ids of its attempts, in order."""
    found: dict[str, list[str]] = {}
    folder = attempts_dir(root, run_id)
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        lines = path.read_text(encoding="utf-8").splitlines()
        found[path.name] = [ln.split(" ", 1)[0] for ln in lines if ln.strip()]
    return found


def pipeline_file_args(source: str, out_dir: Path, overlay: str, extra: list[str]) -> list[str]:
    """The ``run_pipeline.py`` arguments for one file whose outputs go into ``out_dir``."""
    video = "none" if overlay == "none" else str(out_dir / f"overlay.{overlay}")
    return [
        "--source", source, "--output", video, "--publish", "none",
        "--save-results", str(out_dir / "results.jsonl"),
        "--report", str(out_dir / "report.json"), "--no-progress", *extra,
    ]  # fmt: skip


def _where() -> tuple[str, str]:
    """(node id, node address) of this worker; outside Ray: this host."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - called outside a Ray worker (tests of the attempt alone)
        import socket

        return "local", socket.gethostname()


def _log_attempt(root: Path, run_id: str, key: str, node: str) -> None:
    folder = attempts_dir(root, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / key, "a", encoding="utf-8") as f:  # O_APPEND: one line per attempt
        f.write(f"{node} {time.time():.3f}\n")


def _committed_outcome(root: Path, key: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """The outcome recorded by the attempt that committed ``key`` (exactly one did)."""
    marker = json.loads((root / key / COMMIT_MARKER).read_text(encoding="utf-8"))
    keep = ("frames", "wall_s", "processing_s", "node", "host", "started", "ended")
    return {**outcome, **{k: marker[k] for k in keep if k in marker}, "status": "done",
            "committed_by_earlier_attempt": True}


def run_file_attempt(job: dict[str, str], root: str, run_id: str, pipeline_args: list[str],
                     overlay: str = "mp4") -> dict[str, Any]:
    """Run the pipeline on ``job["source"]`` and commit its outputs to ``root/job["key"]``.

    Returns the outcome: ``status`` (``done``, ``skipped`` when already committed, or
    ``failed`` with ``reason``), ``frames``, ``wall_s``, ``processing_s``, ``node``,
    ``host``, ``started``, ``ended`` (Unix seconds).
    """
    root_path = Path(root)
    key, source = job["key"], job["source"]
    node, host = _where()
    started = time.time()
    outcome: dict[str, Any] = {"key": key, "source": source, "node": node, "host": host,
                               "started": started, "frames": 0, "wall_s": 0.0,
                               "processing_s": 0.0}
    _log_attempt(root_path, run_id, key, node)
    sweep_dead_pipelines()  # rings of a pipeline killed here with an earlier worker
    if is_committed(root_path, key):  # an earlier attempt committed, then its worker died
        return _committed_outcome(root_path, key, outcome)
    attempt = root_path / f"{PARTIAL_PREFIX}{run_id}-{key}-{uuid.uuid4().hex[:8]}"
    attempt.mkdir(parents=True)
    child = None
    try:
        args = pipeline_file_args(source, attempt, overlay, pipeline_args)
        child = ChildPipeline(args, attempt / "pipeline.log", run_id)
        code = child.wait()
        if code != 0:
            return {**outcome, "status": "failed", "reason": child.error_line(),
                    "exit_code": code, "ended": time.time()}
        report = json.loads((attempt / "report.json").read_text(encoding="utf-8"))
        outcome.update(frames=int(report.get("frames_processed", 0)),
                       wall_s=float(report.get("wall_s", 0.0)),
                       processing_s=float(report.get("processing_s", 0.0)))
        ended = time.time()
        marker = {**outcome, "ended": ended, "run_id": run_id}
        (attempt / COMMIT_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        if not commit_attempt(attempt, root_path / key):  # another attempt was first
            return _committed_outcome(root_path, key, outcome)
        return {**outcome, "status": "done", "ended": ended}
    finally:
        if child is not None and child.poll() is None:  # cancelled: never leave it running
            child.stop()
        if attempt.exists():
            shutil.rmtree(attempt, ignore_errors=True)
