"""The supervisor: plans a run, starts the five stage processes, watches them, shuts down.

Start-up is two-phase: the infer stage starts first and reports the loaded model's spec
(class names, input sizes, model id); the other stages start with that spec in their plan.
Every exit path (normal end, Ctrl-C/SIGTERM, a crashed or hung stage, bad input) ends in
``_cleanup``: no stage process, shared-memory segment or ipc socket outlives the run.

The parts live in :mod:`pipeline.supervision`: the config checks, source probing and plan
(``planning``), the stage processes (``processes``), the stages' typed stats
(``stage_stats``) and the report built from them (``report``). This module keeps the run's
lifecycle: start-up order, the event loop, restarts and shutdown.
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
import uuid
from pathlib import Path
from typing import Any

import zmq

from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError, StageError
from pipeline.plan import STAGES, RunPlan
from pipeline.planner import combined, decide
from pipeline.policies.restart import RestartPolicy
from pipeline.resources import ResourcePlan, plan_resources, usable_cores
from pipeline.sources.base import SourceInfo
from pipeline.stage_messages import Control, ControlKind, EventKind
from pipeline.supervision.metrics import MetricsServer, RunMetrics, metrics_address, restart_reason
from pipeline.supervision.planning import build_plan, check_before_start, probe_streams
from pipeline.supervision.processes import (
    LOG_DIR,
    RUN_DIR_PREFIX,
    StageState,
    end_processes,
    launch_stage,
    remove_stale_run_dirs,
    salvage_video,
    stage_failure,
)
from pipeline.supervision.report import RunFacts, build_report
from pipeline.supervision.stage_stats import RunStats
from pipeline.transport import sockets
from pipeline.transport.shm import FrameRing, remove_stale_segments, segment_name

__all__ = ["LOG_DIR", "RUN_DIR_PREFIX", "AbortedError", "StageState", "Supervisor", "remove_stale_run_dirs"]

log = logging.getLogger("segstream")

MODEL_LOAD_TIMEOUT_S = 300.0
EXIT_GRACE_S = 30.0  # after the last "done", how long stages get to exit on their own


class AbortedError(PipelineError):
    """Stopped by a signal without draining: a second Ctrl-C/SIGTERM, or one before any
    frame was read (nothing to drain). Exits with 130 like a drained Ctrl-C."""

    exit_code = 130


class Supervisor:
    """Runs one pipeline to completion. ``run()`` returns the report or raises PipelineError."""

    def __init__(self, config: PipelineConfig, verbose: bool = False) -> None:
        self.config = config
        self.verbose = verbose
        self.run_id = uuid.uuid4().hex[:8]
        self.stages = {name: StageState(name) for name in STAGES}
        self.ring: FrameRing | None = None
        self.run_dir: Path | None = None
        self.ctx: zmq.Context | None = None
        self.control: zmq.Socket | None = None
        self._signals = 0
        self._draining = False
        self._start_sent = False  # every stage is ready: capture may begin reading
        self._exiting = False  # the run is complete: stages are told to exit
        self._completed = False
        self._plan_path: Path | None = None
        self.restart_log: list[dict[str, Any]] = []
        sup = config.supervision
        self.restart_policy = RestartPolicy(sup.max_restarts, sup.restart_window_s, sup.restart_backoff_s,
                                            sup.restart_backoff_max_s)
        self._capture_started = False
        self._progress = None
        self._started = time.monotonic()
        self.publish_endpoint: str | None = None
        self.stream_infos: list[SourceInfo] = []
        self.resources: ResourcePlan = plan_resources(usable_cores(), **config.resources.plan_options())
        self.metrics: RunMetrics | None = None  # observability.metrics: served while the run lasts
        self.metrics_server: MetricsServer | None = None

    # -- planning ------------------------------------------------------------------------
    def _validate(self) -> SourceInfo:
        """Fail on a config that cannot run, before anything starts; probe every stream."""
        check_before_start(self.config)
        self._serve_metrics()  # a port in use fails here, before any stage starts
        self.stream_infos = probe_streams(self.config)
        return combined(self.stream_infos)

    def _plan(self, info: SourceInfo) -> RunPlan:
        decisions = decide(self.config, self.stream_infos, usable_cores())  # before anything exists
        self.resources = decisions.resources
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-"))
        self.ring = FrameRing.create(segment_name(self.run_id), decisions.ring_slots, decisions.frame_bytes,
                                     decisions.input_bytes, decisions.overlay_bytes)
        if self.metrics is not None:
            self.metrics.set_ring_slots(decisions.ring_slots)
        return build_plan(self.config, self.run_id, self.run_dir, self.ring.name, self.stream_infos, info,
                          decisions)

    def _serve_metrics(self) -> None:
        """``observability.metrics``: serve the run's metrics (README "Metrics") from now
        until ``_cleanup``."""
        address = self.config.observability.metrics
        if address is None:
            return
        host, port = metrics_address(address, self.config.output.allow_remote)
        self.metrics = RunMetrics([str(i) for i in range(len(self.config.source.uris))])
        self.metrics_server = MetricsServer(self.metrics.registry, host, port)
        self.metrics_server.start()
        log.info("metrics on %s", self.metrics_server.url)

    def metrics_snapshot(self) -> str | None:
        """The run's metrics now (after ``run()``: as it ended), in the Prometheus text
        format; None without ``observability.metrics``."""
        return None if self.metrics is None else self.metrics.exposition()

    # -- processes -----------------------------------------------------------------------
    def _start(self, name: str, plan_path: Path) -> None:
        state = self.stages[name]
        state.process = launch_stage(name, plan_path, self.run_dir, self.resources.budget(name), self.verbose)
        state.last_seen = time.monotonic()

    def _failure(self, state: StageState) -> StageError:
        return stage_failure(state, self.run_dir, self.run_id)

    # -- event loop ----------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals += 1

    def _handle_event(self, event: dict[str, Any]) -> None:
        state = self.stages.get(event.get("stage", ""))
        if state is None:
            return
        state.last_seen = time.monotonic()
        if self.metrics is not None:
            self.metrics.handle_event(event)
        kind = event["type"]
        if kind == EventKind.READY:
            state.ready = True
            state.info = event
            if state.replay_due:
                state.replay_due = False
                sockets.send(self.control, *Control(ControlKind.REPLAY).to_parts())
        elif kind == EventKind.STARTED:
            self._capture_started = True
        elif kind == EventKind.DONE:
            state.done = True
            state.stats = event.get("stats", {})
        elif kind == EventKind.PROGRESS and self._progress is not None:
            self._progress.update(event["frames"] - self._progress.n)

    def _poll(self, events: zmq.Socket, timeout_ms: int) -> None:
        if events.poll(timeout_ms):
            while events.poll(0):
                header, _ = sockets.recv(events)
                self._handle_event(header)
        if self._signals and not self._start_sent:
            raise AbortedError("aborted by signal")  # starting up: nothing to drain, no model to wait for
        if self._signals and not self._draining:
            self._draining = True
            log.warning("stopping: draining frames in flight (Ctrl-C again to abort)")
        if self._signals > 1:
            raise AbortedError("aborted by signal")
        if self._draining:
            sockets.send(self.control, *Control(ControlKind.DRAIN).to_parts())
        elif self._start_sent and not self._capture_started and self.stages["capture"].ready:
            sockets.send(self.control, *Control(ControlKind.START).to_parts())  # again until capture acknowledges
        now = time.monotonic()
        for state in self.stages.values():
            if state.restart_at is not None:
                if now >= state.restart_at:  # its backoff is over
                    state.restart_at = None
                    self._start(state.name, self._plan_path)
                continue
            if state.process is None:
                continue
            code = state.process.poll()
            if code is not None and not self._exiting:
                self._restart_or_fail(state, self._failure(state))
                continue
            limit = self.config.transport.stage_timeout_s if state.ready else MODEL_LOAD_TIMEOUT_S
            if code is None and now - state.last_seen > limit:
                error = StageError(f"stage '{state.name}' stopped responding (no heartbeat for {limit:.0f} s)")
                self._restart_or_fail(state, error, hung=True)

    def _restart_or_fail(self, state: StageState, error: StageError, hung: bool = False) -> None:
        """A stage died or hung: schedule its restart (backoff and limits decided by
        ``self.restart_policy``) and have capture replay the frames in flight once it is
        ready; or end the run with ``error``."""
        reported = self.run_dir is not None and (self.run_dir / f"{state.name}.error").exists()
        now = time.monotonic()
        state.restart_times = self.restart_policy.recent(state.restart_times, now)
        decision = self.restart_policy.decide(state.restart_times, now, reported)
        if not decision.restart or self._plan_path is None:
            if decision.recent and not reported:
                error = StageError(f"{error} ({decision.reason})")
            raise error
        if hung:
            state.process.kill()
        state.process.wait()
        state.restarts += 1
        state.restart_times.append(now)
        self.restart_log.append({"stage": state.name, "reason": str(error).split(": ", 1)[-1], "at_s": round(now - self._started, 3)})
        if self.metrics is not None:
            self.metrics.on_restart(state.name, restart_reason(hung, reported))
        sup = self.config.supervision
        log.warning("%s; restarting it in %.1f s (restart %d of %d within %g s)",
                    error, decision.delay_s, decision.recent + 1, sup.max_restarts, sup.restart_window_s)
        state.ready = state.done = False
        state.replay_due = state.name != "capture"  # a new capture resumes on its own
        if state.name == "capture":
            self._capture_started = False  # it waits for "start" again
        state.restart_at = now + decision.delay_s  # started by _poll when due: the loop keeps serving

    def _wait_ready(self, events: zmq.Socket, names: list[str]) -> None:
        while not all(self.stages[n].ready for n in names):
            self._poll(events, 100)

    # -- run -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        remove_stale_segments()
        remove_stale_run_dirs()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            info = self._validate()
            plan = self._plan(info)
            self.ctx = zmq.Context()
            events = sockets.pull(self.ctx, plan.endpoints["events"], hwm=10000)
            self.control = self.ctx.socket(zmq.PUB)
            self.control.setsockopt(zmq.LINGER, 0)
            self.control.bind(plan.endpoints["control"])
            plan_path = self._plan_path = self.run_dir / "plan.json"
            plan.save(plan_path)
            self._start("infer", plan_path)
            self._wait_ready(events, ["infer"])
            plan.spec = self.stages["infer"].info["spec"]
            plan.semantic_spec = self.stages["infer"].info.get("semantic_spec") or {}
            infer = self.stages["infer"].info
            log.info("model %s on %s (%s)", plan.spec.get("model_id"), infer.get("backend"), infer.get("selection"))
            plan.save(plan_path)
            others = [n for n in STAGES if n != "infer"]
            for name in others:
                self._start(name, plan_path)
            self._wait_ready(events, others)
            self._start_sent = True
            sockets.send(self.control, *Control(ControlKind.START).to_parts())
            self.publish_endpoint = self.stages["publish"].info.get("publish_endpoint")
            if self.publish_endpoint:
                log.info("publishing results on %s", self.publish_endpoint)
            for key, what in (("preview_url", "live preview"), ("foxglove_url", "Foxglove live server")):
                if self.stages["publish"].info.get(key):
                    log.info("%s on %s", what, self.stages["publish"].info[key])
            self._open_progress(info)
            started = time.monotonic()
            # publish finishes last, once it has every frame up to end-of-stream
            while not self.stages["publish"].done:
                self._poll(events, 100)
            self._completed = True
            self._collect_final_stats(events)
            self._join_all()
            return self._report(plan, time.monotonic() - started)
        finally:
            if self._progress is not None:
                self._progress.close()
            self._cleanup()  # before the handlers go back: a Ctrl-C must not cut it short
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _open_progress(self, info: SourceInfo) -> None:
        if not (self.config.output.progress and sys.stderr.isatty()):
            return
        from tqdm import tqdm

        total = info.frame_count
        if self.config.source.max_frames is not None:
            total = min(total or self.config.source.max_frames, self.config.source.max_frames)
        self._progress = tqdm(total=total, unit="frame", desc="segmenting", dynamic_ncols=True)

    def _collect_final_stats(self, events: zmq.Socket) -> None:
        """Publish is done; the others reported at end-of-stream (a restarted one may report
        again): take in what is queued."""
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not all(s.done for s in self.stages.values()):
            self._poll(events, 50)

    def _join_all(self) -> None:
        """Publish is done: tell every stage to exit (repeatedly: PUB is fire-and-forget)."""
        self._exiting = True
        deadline = time.monotonic() + EXIT_GRACE_S
        for state in self.stages.values():
            while state.process.poll() is None and time.monotonic() < deadline:
                sockets.send(self.control, *Control(ControlKind.EXIT).to_parts())
                try:
                    state.process.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
            if state.process.poll() is None:
                log.warning("stage '%s' did not exit after finishing; terminating it", state.name)

    def _cleanup(self) -> None:
        end_processes(state.process for state in self.stages.values())
        if self.metrics_server is not None:
            self.metrics_server.stop()  # the port is free again when run() returns
        if self.ctx is not None:
            self.ctx.destroy(linger=0)
        if not self._completed and self.config.output.video and self._plan_path is not None:
            salvage_video(self.config, self.run_id)  # only a run that got as far as starting stages wrote segments
        if self.ring is not None:
            self.ring.close()
            self.ring.unlink()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- report --------------------------------------------------------------------------
    def _report(self, plan: RunPlan, processing_s: float) -> dict[str, Any]:
        """The report, from the stages' last ``done`` stats (typed: a missing or mistyped
        field fails here, see :mod:`pipeline.supervision.stage_stats`)."""
        stats = RunStats.parse({name: state.stats for name, state in self.stages.items()})
        facts = RunFacts(
            run_id=self.run_id,
            source=self.config.source.uri,
            model=plan.panoptic_labels().model_id if plan.semantic_spec else plan.spec.get("model_id"),
            backend_selection=self.stages["infer"].info.get("selection"),
            device=self.config.model.device,
            batch_size=self.config.batching.batch_size,
            resources=self.resources,
            wall_s=time.monotonic() - self._started,
            processing_s=processing_s,
            interrupted=self._draining,
            restarts=self.restart_log,
        )
        return build_report(stats, facts)
