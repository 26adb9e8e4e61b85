"""The run report: what ``segstream run`` prints and writes as JSON, built from the stages'
typed stats (:mod:`pipeline.supervision.stage_stats`) and the supervisor's own facts.

A pure function of its inputs (:func:`build_report`), so its keys and arithmetic are
tested without running a pipeline (tests/test_supervision_report.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.resources import ResourcePlan
from pipeline.supervision.stage_stats import RunStats, StageStats


@dataclass(frozen=True)
class RunFacts:
    """What the supervisor knows of a run besides the stages' stats."""

    run_id: str
    source: str | list[str]  # ``source.uri`` as configured
    model: str | None  # the loaded model's id (infer's spec)
    backend_selection: Any  # how infer chose its backend (its ``ready`` info)
    device: str
    batch_size: int
    resources: ResourcePlan
    wall_s: float  # from the supervisor's start to now
    processing_s: float  # from ``start`` to publish's ``done``
    interrupted: bool = False  # drained after Ctrl-C / SIGTERM
    restarts: list[dict[str, Any]] = field(default_factory=list)  # {"stage", "reason", "at_s"}


def _stage_rows(stats: RunStats, resources: ResourcePlan, processing_s: float, done: int) -> dict[str, Any]:
    """Per stage: busy time (and its share of the processing time), CPU per frame, threads."""
    return {name: _stage_row(s, resources.budget(name).threads, processing_s, done)
            for name, s in stats.by_stage().items()}


def _stage_row(s: StageStats, threads: int, processing_s: float, done: int) -> dict[str, Any]:
    return {
        "busy_s": round(s.busy_s, 3),
        "busy_fraction": round(s.busy_s / processing_s, 3) if processing_s else 0.0,
        # CPU time of every thread of the stage while frames flowed, per frame
        "core_ms_per_frame": round(s.cpu_s / done * 1000, 2) if done else None,
        "threads": threads,
    }


def build_report(stats: RunStats, run: RunFacts) -> dict[str, Any]:
    """The report of a finished run (its keys are described in README.md and checked by the
    run tests)."""
    capture, infer, publish = stats.capture, stats.infer, stats.publish
    processing_s = run.processing_s
    done = publish.frames_done
    return {
        "run_id": run.run_id,
        "source": run.source,
        "streams": publish.streams,
        "model": run.model,
        "backend": infer.backend,
        "backend_selection": run.backend_selection,
        "device": run.device,
        "batch_size": run.batch_size,
        "frames_read": capture.frames_read,
        "frames_processed": infer.frames_processed,
        "frames_written": publish.frames_written,
        "frames_published": publish.frames_published,
        "frames_dropped": capture.frames_dropped,
        "decode_errors": capture.decode_errors,
        "reconnects": capture.reconnects,
        "offline_s": capture.offline_s,
        "status_events": publish.status_events,
        "batches": infer.batches,
        "batch_s_max": round(infer.batch_s_max, 4),
        "wall_s": round(run.wall_s, 3),
        "startup_s": round(run.wall_s - processing_s, 3),
        "processing_s": round(processing_s, 3),
        "fps": round(done / processing_s, 3) if processing_s > 0 else 0.0,
        "latency_ms": publish.latency_ms,
        "stages": _stage_rows(stats, run.resources, processing_s, done),
        "resources": run.resources.to_dict(),
        "interrupted": run.interrupted,
        "restarts": run.restarts,
        "duplicates_dropped": publish.duplicates_dropped,
    }
