"""The fleet report (pure aggregation of per-file outcomes) and the progress line.

Report fields (``fleet_report.json``)::

    run_id, started (Unix s), wall_s
    files: {total, done, skipped, failed}     skipped = committed before this run
    failed: [{file, reason}]                   one line each, as the pipeline said it
    frames, fps                                frames of the files done now / wall_s
    nodes: {node_id: {host, files, frames, busy_s, span_s, fps}}
                                               fps = frames / span_s (first start to
                                               last end there: files overlap on a node)
    retries, retried: [{file, attempts, nodes}]  attempts beyond the first (Ray retries
                                               after a node or worker died)
    results: {key: {file, status, node, frames, wall_s}}
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

__all__ = ["build_files_report", "Progress", "exit_code_for"]


def _node_table(done: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    nodes: dict[str, dict[str, Any]] = {}
    for out in done:
        node = nodes.setdefault(out.get("node", "?"), {
            "host": out.get("host", "?"), "files": 0, "frames": 0, "busy_s": 0.0,
            "first": out.get("started", 0.0), "last": out.get("ended", 0.0)})  # fmt: skip
        node["files"] += 1
        node["frames"] += int(out.get("frames", 0))
        node["busy_s"] += float(out.get("ended", 0.0)) - float(out.get("started", 0.0))
        node["first"] = min(node["first"], out.get("started", node["first"]))
        node["last"] = max(node["last"], out.get("ended", node["last"]))
    for node in nodes.values():
        span = max(0.0, node.pop("last") - node.pop("first"))
        node["busy_s"] = round(node["busy_s"], 3)
        node["span_s"] = round(span, 3)
        node["fps"] = round(node["frames"] / span, 2) if span > 0 else 0.0
    return nodes


def build_files_report(run_id: str, started: float, wall_s: float,
                       outcomes: Iterable[dict[str, Any]], skipped: Iterable[dict[str, str]],
                       attempts: dict[str, list[str]]) -> dict[str, Any]:
    """Aggregate a fleet run over files.

    Args:
        run_id, started, wall_s: the run's id, start (Unix s) and duration.
        outcomes: one per file run now (``run_file_attempt``'s dict, or a ``failed`` one
            with ``key``, ``source`` and ``reason`` when Ray gave up on it).
        skipped: ``{"key", "source"}`` of files committed before this run.
        attempts: key -> node ids of its attempts (``read_attempts``).
    """
    outcomes = list(outcomes)
    skipped = list(skipped)
    done = [o for o in outcomes if o["status"] == "done"]
    failed = [o for o in outcomes if o["status"] != "done"]
    frames = sum(int(o.get("frames", 0)) for o in done)
    retried = [{"file": o["source"], "attempts": len(attempts.get(o["key"], [])),
                "nodes": attempts.get(o["key"], [])}
               for o in outcomes if len(attempts.get(o["key"], [])) > 1]
    results = {o["key"]: {"file": o["source"], "status": o["status"], "node": o.get("node"),
                          "frames": int(o.get("frames", 0)), "wall_s": o.get("wall_s", 0.0)}
               for o in outcomes}
    results.update({s["key"]: {"file": s["source"], "status": "skipped"} for s in skipped})
    return {
        "run_id": run_id,
        "started": round(started, 3),
        "wall_s": round(wall_s, 3),
        "files": {"total": len(outcomes) + len(skipped), "done": len(done),
                  "skipped": len(skipped), "failed": len(failed)},
        "failed": [{"file": o["source"], "reason": o.get("reason", "unknown")} for o in failed],
        "frames": frames,
        "fps": round(frames / wall_s, 2) if wall_s > 0 else 0.0,
        "nodes": _node_table(done),
        "retries": sum(r["attempts"] - 1 for r in retried),
        "retried": retried,
        "results": results,
    }


def exit_code_for(report: dict[str, Any]) -> int:
    """0 when every file is done or was already done; 1 when any failed."""
    return 1 if report["files"]["failed"] else 0


class Progress:
    """A one-line progress bar on ``stream`` (a line per file when it is not a terminal)."""

    def __init__(self, total: int, skipped: int, stream: TextIO | None = None,
                 enabled: bool = True) -> None:
        self.total, self.finished, self.failed = total, skipped, 0
        self.frames = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self._todo = total - skipped

    def update(self, outcome: dict[str, Any]) -> None:
        """Count one finished file and redraw."""
        self.finished += 1
        self.failed += outcome["status"] != "done"
        self.frames += int(outcome.get("frames", 0))
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        width = 24
        filled = int(width * self.finished / max(1, self.total))
        rate = self.frames / elapsed if elapsed > 0 else 0.0
        done_now = self.finished - (self.total - self._todo)
        eta = elapsed / done_now * (self.total - self.finished) if done_now else 0.0
        line = (f"[fleet] [{'#' * filled}{'.' * (width - filled)}] {self.finished}/{self.total}"
                f" files, {self.failed} failed, {rate:.1f} fps, ETA {eta:.0f} s")
        if self.tty:
            self.stream.write("\r" + line)
        else:
            what = "done" if outcome["status"] == "done" else f"FAILED ({outcome.get('reason')})"
            self.stream.write(f"{line}: {outcome['source']} {what}\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line on a terminal."""
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
