"""The stage processes of a run: start one, say why one failed, end them all, and clear what
runs that are gone left behind (run directories, partial overlay videos).

Each stage is ``python -m pipeline.stages NAME PLAN.json SUPERVISOR_PID`` with its thread
budget in the environment; its stderr goes to ``<run dir>/<stage>.log`` (kept in
:data:`LOG_DIR` when it holds a traceback) and a stage that fails on purpose writes one
line to ``<run dir>/<stage>.error``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.errors import StageError
from pipeline.resources import StageBudget
from pipeline.sinks.segmented_video import salvage_segments, stream_video_path
from pipeline.transport.shm import pid_alive

log = logging.getLogger("segstream")

RUN_DIR_PREFIX = "segstream-run-"
LOG_DIR = Path(tempfile.gettempdir()) / "segstream-logs"


@dataclass
class StageState:
    """What the supervisor knows of one stage: its process and its last events."""

    name: str
    process: subprocess.Popen | None = None
    ready: bool = False
    done: bool = False
    stats: dict[str, Any] = field(default_factory=dict)  # of its last "done" (typed in the report)
    last_seen: float = field(default_factory=time.monotonic)
    info: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    restart_times: list[float] = field(default_factory=list)  # monotonic, within the window
    replay_due: bool = False  # restarted: ask capture to replay once this process is ready
    restart_at: float | None = None  # monotonic time a scheduled restart is due (backoff)


def launch_stage(name: str, plan_path: Path, run_dir: Path, budget: StageBudget,
                 verbose: bool = False) -> subprocess.Popen:
    """Start stage ``name`` of the run planned in ``plan_path``."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    stderr = None if verbose else open(run_dir / f"{name}.log", "wb")  # noqa: SIM115
    cmd = [sys.executable, "-m", "pipeline.stages", name, str(plan_path), str(os.getpid())]
    # thread pools read their size and wait policy once, at load: set before the start
    env = {**os.environ, **budget.environment()}
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, env=env)
    finally:
        if stderr is not None:
            stderr.close()


def stage_failure(state: StageState, run_dir: Path, run_id: str) -> StageError:
    """Why ``state``'s process ended: its own one-line error, else how it died."""
    error_file = run_dir / f"{state.name}.error"
    code = state.process.poll() if state.process else None
    if error_file.exists():
        message = error_file.read_text().strip()
    elif code is not None and code < 0:
        message = f"crashed (killed by signal {signal.Signals(-code).name})"
    else:
        message = f"crashed (exit code {code})"
    keep_log(run_dir, run_id, state.name)
    return StageError(f"stage '{state.name}' failed: {message}")


def keep_log(run_dir: Path | None, run_id: str, name: str) -> None:
    """Copy a stage's log out of the run directory if it holds a traceback."""
    log_file = run_dir / f"{name}.log" if run_dir else None
    if log_file and log_file.exists() and "Traceback" in log_file.read_text(errors="replace"):
        kept = LOG_DIR / f"{run_id}-{name}.log"
        shutil.copy(log_file, kept)
        log.error("full log of stage '%s': %s", name, kept)


def end_processes(processes: Iterable[subprocess.Popen | None], grace_s: float = 3.0) -> None:
    """Terminate every process still running; kill those that outlast ``grace_s``."""
    alive = [p for p in processes if p is not None and p.poll() is None]
    for proc in alive:
        proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in alive:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def salvage_video(config: PipelineConfig, run_id: str) -> None:
    """A failed or aborted run: keep the overlay segments that were finished as a playable
    video, and leave no segment files behind."""
    uris = config.source.uris
    for index in range(len(uris)):
        path = stream_video_path(config.output.video, str(index), len(uris))
        try:
            kept = salvage_segments(path, run_id)
        except Exception as err:  # noqa: BLE001 - already failing; report and go on
            log.warning("could not keep the partial overlay video %s: %s", path, err)
            continue
        if kept:
            log.warning("partial overlay video (%d finished segment(s)) kept in %s", kept, path)


def remove_stale_run_dirs() -> list[str]:
    """Delete the run directories (sockets, logs, progress) of supervisors that are gone
    (e.g. SIGKILLed: nothing of theirs could clean up)."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*"):
        pid = path.name.removeprefix(RUN_DIR_PREFIX).split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed
