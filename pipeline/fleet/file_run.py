"""The driver side of ``python -m pipeline.fleet files``: one Ray task per file.

Ray does the scheduling (a task needs ``cpus_per_file`` CPUs and ``gpus_per_file`` GPUs of
a node), the retries (``max_retries`` system failures: a node or worker that dies; never an
application error, so a bad file is tried once) and the placement of a retry on a node
that is still alive. This module plans, submits, shows progress and writes the report.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.fleet import cluster
from pipeline.fleet.child import sweep_dead_pipelines
from pipeline.fleet.file_task import attempts_dir, read_attempts, run_file_attempt
from pipeline.fleet.files import (
    FileJob,
    FleetInputError,
    check_pipeline_args,
    committed_keys,
    expand_inputs,
    make_jobs,
    remove_partials,
    split_committed,
)
from pipeline.fleet.report import Progress, build_files_report

__all__ = ["FilesOptions", "plan_files", "run_files", "write_json_atomically"]


@dataclass
class FilesOptions:
    """What ``fleet files`` runs, where its outputs go, and on which cluster."""

    inputs: list[str]
    out_root: Path
    list_files: list[str] = field(default_factory=list)
    pipeline_args: list[str] = field(default_factory=list)
    address: str | None = None  # None: start a local cluster
    local_cpus: int | None = None  # the local cluster's CPU budget (None: every core)
    overlay: str = "mp4"  # mp4 | webm | avi | mkv | none
    cpus_per_file: float = 1.0
    gpus_per_file: float | None = None  # None: 1 when the cluster has GPUs, else 0
    max_retries: int = 3
    report_path: Path | None = None  # default: OUT_ROOT/fleet_report.json
    progress: bool = True


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def plan_files(opts: FilesOptions) -> tuple[list[FileJob], list[FileJob]]:
    """Check the inputs and the output root; (jobs to run, jobs already committed).
    Raises FleetInputError (exit 2) before anything expensive starts."""
    check_pipeline_args(opts.pipeline_args)
    if opts.overlay not in ("mp4", "webm", "avi", "mkv", "none"):
        raise FleetInputError(f"bad --overlay {opts.overlay}: use mp4, webm, avi, mkv or none")
    if opts.cpus_per_file <= 0 or (opts.gpus_per_file or 0) < 0 or opts.max_retries < 0:
        raise FleetInputError("--cpus-per-file must be > 0, --gpus-per-file and --max-retries >= 0")
    jobs = make_jobs(expand_inputs(opts.inputs, opts.list_files))
    try:
        Path(opts.out_root).mkdir(parents=True, exist_ok=True)
        probe = Path(opts.out_root) / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise FleetInputError(f"output root {opts.out_root} is not writable: "
                              f"{err.strerror or err}") from err
    return split_committed(jobs, committed_keys(Path(opts.out_root), jobs))


def _gave_up(job: FileJob, err: BaseException) -> dict[str, Any]:
    first = (str(err).strip().splitlines() or [""])[0]
    reason = f"{type(err).__name__}: {first}"[:300]
    return {"key": job.key, "source": job.source, "status": "failed", "reason": reason}


def _submit(jobs: list[FileJob], opts: FilesOptions, root: Path, run_id: str) -> dict[Any, FileJob]:
    import ray

    gpus = opts.gpus_per_file
    if gpus is None:
        gpus = 1.0 if cluster.cluster_gpus() > 0 else 0.0
    task = ray.remote(run_file_attempt)
    # retry_exceptions=False: application errors are outcomes; only system failures retry
    return {task.options(name=f"fleet-file:{job.key}", num_cpus=opts.cpus_per_file,
                         num_gpus=gpus, max_retries=opts.max_retries,
                         retry_exceptions=False).remote(
        {"key": job.key, "source": job.source}, str(root), run_id, opts.pipeline_args,
        opts.overlay): job for job in jobs}  # fmt: skip


def _collect(pending: dict[Any, FileJob], progress: Progress) -> list[dict[str, Any]]:
    import ray

    outcomes = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in ready:
            job = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as err:  # retries spent on dead nodes/workers
                outcome = _gave_up(job, err)
            outcomes.append(outcome)
            progress.update(outcome)
    return outcomes


def run_files(opts: FilesOptions) -> dict[str, Any]:
    """Run the pipeline on every input file across the cluster; returns the fleet report
    (also written to ``opts.report_path``). Files already committed are skipped."""
    todo, skipped = plan_files(opts)
    root = Path(opts.out_root).resolve()
    run_id = uuid.uuid4().hex[:8]
    started, t0 = time.time(), time.monotonic()
    progress = Progress(len(todo) + len(skipped), len(skipped), sys.stderr, opts.progress)
    outcomes: list[dict[str, Any]] = []
    pending: dict[Any, FileJob] = {}
    connected = False
    try:
        if todo:
            cluster.connect(opts.address, opts.local_cpus)
            connected = True
            pending = _submit(todo, opts, root, run_id)
            outcomes = _collect(pending, progress)
    except KeyboardInterrupt:
        import ray

        for ref in pending:  # force: the workers die, and their pipelines with them
            ray.cancel(ref, force=True)
        raise
    finally:
        progress.close()
        attempts = read_attempts(root, run_id)
        if connected:
            cluster.disconnect()
        remove_partials(root, run_id)
        sweep_dead_pipelines()  # this host's share of pipelines killed with their nodes
        shutil.rmtree(attempts_dir(root, run_id).parent, ignore_errors=True)
    report = build_files_report(run_id, started, time.monotonic() - t0, outcomes,
                                [{"key": j.key, "source": j.source} for j in skipped], attempts)
    write_json_atomically(opts.report_path or root / "fleet_report.json", report)
    return report
