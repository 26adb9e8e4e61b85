"""One normal multi-process pipeline (``run_pipeline.py``) as a child of a Ray worker.

The fleet never runs frames itself: every file or group of streams is handled by the same
five-stage pipeline a user starts by hand, as a subprocess on the worker's node. This module
starts it so that it can never outlive its worker:

* the kernel sends it SIGTERM when the worker dies (``PR_SET_PDEATHSIG``): a node that Ray
  loses takes its pipelines down, and their supervisors drain and remove their rings and
  sockets as on Ctrl-C (their stages already die with them, see ``pipeline/stages``);
* it runs in its own session, so :meth:`ChildPipeline.stop` can signal the supervisor and
  then, if it lingers, kill the whole group (supervisor and stages) at once.

Every child carries ``SEGSTREAM_FLEET_RUN`` in its environment (its stages inherit it), so
a test or an operator can find every process a fleet run started.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["FLEET_ENV", "PIPELINE_SCRIPT", "ChildPipeline", "fleet_processes", "last_error_line",
           "sweep_dead_pipelines"]

FLEET_ENV = "SEGSTREAM_FLEET_RUN"
PIPELINE_SCRIPT = Path(__file__).resolve().parents[2] / "run_pipeline.py"
_PR_SET_PDEATHSIG = 1


def _die_with(parent_pid: int) -> None:
    """In the child, before exec: SIGTERM when the parent (the Ray worker) dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: stop() and Ray's own cleanup remain
        pass
    if os.getppid() != parent_pid:  # the worker died before prctl took effect
        os._exit(1)


class ChildPipeline:
    """A running ``run_pipeline.py ARGS`` whose stderr goes to ``log_path``.

    Args:
        args: the pipeline's command-line arguments (after the script name).
        log_path: file that receives the pipeline's stdout and stderr.
        fleet_run: the fleet run id, exported as ``SEGSTREAM_FLEET_RUN``.
    """

    def __init__(self, args: list[str], log_path: Path, fleet_run: str) -> None:
        self.args = list(args)
        self.log_path = Path(log_path)
        env = {**os.environ, FLEET_ENV: fleet_run}
        parent = os.getpid()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(PIPELINE_SCRIPT), *self.args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                cwd=PIPELINE_SCRIPT.parent,  # configs/default.yaml is found from the repo root
                start_new_session=True, preexec_fn=lambda: _die_with(parent),
            )

    @property
    def pid(self) -> int:
        """The pipeline supervisor's process id (also its process group id)."""
        return self.process.pid

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the pipeline to end and return its exit code."""
        return self.process.wait(timeout)

    def stop(self, grace_s: float = 15.0) -> int:
        """End the pipeline: SIGTERM (it drains, as on Ctrl-C), then SIGKILL of the whole
        process group after ``grace_s``. Returns the exit code."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
                return self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:  # the stages share the supervisor's group: none may linger after it
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.process.wait()

    def error_line(self) -> str:
        """The pipeline's one-line error (``error: ...``) from its log, or a short fallback."""
        return last_error_line(self.log_path, self.process.returncode)


def last_error_line(log_path: Path, returncode: int | None) -> str:
    """The last ``error:`` line a pipeline wrote to ``log_path`` (without the prefix), else
    the last non-empty line, else the exit code."""
    try:
        lines = [ln.strip() for ln in Path(log_path).read_text(errors="replace").splitlines()]
    except OSError:
        lines = []
    lines = [ln for ln in lines if ln]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line.removeprefix("error:").strip()
    if lines:
        return lines[-1][:300]
    return f"pipeline exited with code {returncode}"


def fleet_processes(run_id: str | None = None) -> list[int]:
    """Process ids on this host that a fleet run started (its pipelines and their stages),
    found by ``SEGSTREAM_FLEET_RUN`` in their environment; of one run, or of any."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            value = proc.environ().get(FLEET_ENV)
        except (psutil.Error, OSError):  # gone, a zombie, or another user's
            continue
        if value is not None and (run_id is None or value == run_id):
            found.append(proc.pid)
    return found


def sweep_dead_pipelines() -> list[str]:
    """Remove the rings (/dev/shm) and run directories of pipelines on this host whose
    supervisor is gone. Needed because Ray SIGKILLs a dying worker's children (its
    ``kill_child_processes_on_worker_exit``): a pipeline killed with its node cannot clean
    up itself. Only owners that are dead are touched, so running pipelines are safe."""
    from pipeline.supervision.processes import remove_stale_run_dirs
    from pipeline.transport.shm import remove_stale_segments

    return remove_stale_segments() + remove_stale_run_dirs()
