"""The supervisor: plans a run, starts the five stage processes, watches them, shuts down.

Start-up is two-phase: the infer stage starts first and reports the loaded model's spec
(class names, input sizes, model id); the other stages start with that spec in their plan.
Every exit path (normal end, Ctrl-C/SIGTERM, a crashed or hung stage, bad input) ends in
``_cleanup``: no stage process, shared-memory segment or ipc socket outlives the run.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from engines.registry import get_model_entry
from pipeline.config import HOPS, PipelineConfig
from pipeline.errors import ConfigError, PipelineError, StageError
from pipeline.output_paths import check_output_paths
from pipeline.plan import STAGES, RunPlan, source_info_to_dict
from pipeline.planner import combined, decide
from pipeline.policies.restart import RestartPolicy
from pipeline.resources import ResourcePlan, plan_resources, usable_cores
from pipeline.sinks.segmented_video import salvage_segments, stream_video_path
from pipeline.sources.base import SourceInfo
from pipeline.stage_messages import Control, ControlKind, EventKind
from pipeline.transport import sockets
from pipeline.transport.shm import FrameRing, pid_alive, remove_stale_segments, segment_name

log = logging.getLogger("segstream")

RUN_DIR_PREFIX = "segstream-run-"
LOG_DIR = Path(tempfile.gettempdir()) / "segstream-logs"
MODEL_LOAD_TIMEOUT_S = 300.0
EXIT_GRACE_S = 30.0  # after the last "done", how long stages get to exit on their own


class AbortedError(PipelineError):
    """Stopped by a signal without draining: a second Ctrl-C/SIGTERM, or one before any
    frame was read (nothing to drain). Exits with 130 like a drained Ctrl-C."""

    exit_code = 130


@dataclass
class StageState:
    name: str
    process: subprocess.Popen | None = None
    ready: bool = False
    done: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)
    info: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    restart_times: list[float] = field(default_factory=list)  # monotonic, within the window
    replay_due: bool = False  # restarted: ask capture to replay once this process is ready
    restart_at: float | None = None  # monotonic time a scheduled restart is due (backoff)


def _receiver_of(sender: str) -> str:
    return STAGES[STAGES.index(sender) + 1]


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

    # -- planning ------------------------------------------------------------------------
    def _validate(self) -> SourceInfo:
        out = self.config.output
        endpoints = [out.publish] if out.publish else []
        endpoints += [e for e in self.config.transport.hops.values() if e != "ipc"]
        for endpoint in endpoints:
            if not sockets.is_loopback_endpoint(endpoint) and not out.allow_remote:
                raise ConfigError(
                    f"endpoint '{endpoint}' is not a loopback address: set output.allow_remote "
                    "(--allow-remote) to bind it"
                )
        for key, path in (("output.curve_secret_key", out.curve_secret_key),
                          ("output.curve_authorized_dir", out.curve_authorized_dir)):
            if path is not None and not Path(path).exists():
                raise ConfigError(f"{key}: '{path}' does not exist")
        check_output_paths(self.config)  # a bad path fails now, not once the model has loaded
        get_model_entry(self.config.model.name)  # unknown model: fail before anything starts
        self.stream_infos = []
        for uri in self.config.source.uris:
            source = self.config.source.open(uri)
            try:
                info = source.info()
            finally:
                source.close()
            if self.config.source.realtime:
                info.live = True
            self.stream_infos.append(info)
        return combined(self.stream_infos)

    def _plan(self, info: SourceInfo) -> RunPlan:
        decisions = decide(self.config, self.stream_infos, usable_cores())  # before anything exists
        self.resources = decisions.resources
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-"))
        endpoints = {
            "events": f"ipc://{self.run_dir}/events.sock",
            "control": f"ipc://{self.run_dir}/control.sock",
            "release": f"ipc://{self.run_dir}/release.sock",
            "admissions": f"ipc://{self.run_dir}/admissions.sock",  # bound by capture for live feeds
        }
        inline = []
        for sender in HOPS:
            receiver = _receiver_of(sender)
            endpoint = self.config.transport.hops.get(sender, "ipc")
            if endpoint == "ipc":
                endpoint = f"ipc://{self.run_dir}/{receiver}.sock"
            elif endpoint.startswith("tcp://"):
                inline.append(sender)
            endpoints[f"{receiver}_in"] = endpoint
        slots = decisions.ring_slots
        self.ring = FrameRing.create(
            segment_name(self.run_id), slots, decisions.frame_bytes, decisions.input_bytes, decisions.overlay_bytes
        )
        return RunPlan(
            run_id=self.run_id,
            run_dir=str(self.run_dir),
            config=self.config.model_dump(),
            endpoints=endpoints,
            inline_hops=inline,
            ring_name=self.ring.name,
            ring_slots=slots,
            spec={},
            source=source_info_to_dict(info),
            streams=[
                {"id": str(i), "uri": uri, "info": source_info_to_dict(stream_info)}
                for i, (uri, stream_info) in enumerate(zip(self.config.source.uris, self.stream_infos, strict=True))
            ],
            resources=self.resources.to_dict(),
            decisions={"batching": decisions.batching, "batch_size": decisions.batch_size,
                       "commit_every": decisions.commit_every, "segment_frames": decisions.segment_frames,
                       "delivery": decisions.delivery, "admissions": decisions.admissions},
        )

    # -- processes -----------------------------------------------------------------------
    def _start(self, name: str, plan_path: Path) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        stderr = None if self.verbose else open(self.run_dir / f"{name}.log", "wb")  # noqa: SIM115
        cmd = [sys.executable, "-m", "pipeline.stages", name, str(plan_path), str(os.getpid())]
        # thread pools read their size and wait policy once, at load: set before the start
        env = {**os.environ, **self.resources.budget(name).environment()}
        self.stages[name].process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, env=env
        )
        self.stages[name].last_seen = time.monotonic()
        if stderr is not None:
            stderr.close()

    def _failure(self, state: StageState) -> StageError:
        error_file = self.run_dir / f"{state.name}.error"
        code = state.process.poll() if state.process else None
        if error_file.exists():
            message = error_file.read_text().strip()
        elif code is not None and code < 0:
            message = f"crashed (killed by signal {signal.Signals(-code).name})"
        else:
            message = f"crashed (exit code {code})"
        self._keep_log(state.name)
        return StageError(f"stage '{state.name}' failed: {message}")

    def _keep_log(self, name: str) -> None:
        log_file = self.run_dir / f"{name}.log" if self.run_dir else None
        if log_file and log_file.exists() and "Traceback" in log_file.read_text(errors="replace"):
            kept = LOG_DIR / f"{self.run_id}-{name}.log"
            shutil.copy(log_file, kept)
            log.error("full log of stage '%s': %s", name, kept)

    # -- event loop ----------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals += 1

    def _handle_event(self, event: dict[str, Any]) -> None:
        state = self.stages.get(event.get("stage", ""))
        if state is None:
            return
        state.last_seen = time.monotonic()
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
            self._open_progress(info)
            started = time.monotonic()
            # publish finishes last, once it has every frame up to end-of-stream
            while not self.stages["publish"].done:
                self._poll(events, 100)
            self._completed = True
            self._collect_final_stats(events)
            self._join_all()
            return self._report(plan, info, time.monotonic() - started)
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
        alive = [s.process for s in self.stages.values() if s.process is not None and s.process.poll() is None]
        for proc in alive:
            proc.terminate()
        deadline = time.monotonic() + 3.0
        for proc in alive:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.ctx is not None:
            self.ctx.destroy(linger=0)
        if not self._completed and self.config.output.video and self._plan_path is not None:
            self._salvage_video()  # only a run that got as far as starting stages wrote segments
        if self.ring is not None:
            self.ring.close()
            self.ring.unlink()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _salvage_video(self) -> None:
        """A failed or aborted run: keep the overlay segments that were finished as a
        playable video, and leave no segment files behind."""
        uris = self.config.source.uris
        for index in range(len(uris)):
            path = stream_video_path(self.config.output.video, str(index), len(uris))
            try:
                kept = salvage_segments(path, self.run_id)
            except Exception as err:  # noqa: BLE001 - already failing; report and go on
                log.warning("could not keep the partial overlay video %s: %s", path, err)
                continue
            if kept:
                log.warning("partial overlay video (%d finished segment(s)) kept in %s", kept, path)

    # -- report --------------------------------------------------------------------------
    def _report(self, plan: RunPlan, info: SourceInfo, processing_s: float) -> dict[str, Any]:
        stats = {name: state.stats for name, state in self.stages.items()}
        wall_s = time.monotonic() - self._started
        done = stats["publish"].get("frames_done", 0)
        report = {
            "run_id": self.run_id,
            "source": self.config.source.uri,
            "streams": stats["publish"].get("streams", {}),
            "model": plan.spec.get("model_id"),
            "backend": stats["infer"].get("backend"),
            "backend_selection": self.stages["infer"].info.get("selection"),
            "device": self.config.model.device,
            "batch_size": self.config.batching.batch_size,
            "frames_read": stats["capture"].get("frames_read", 0),
            "frames_processed": stats["infer"].get("frames_processed", 0),
            "frames_written": stats["publish"].get("frames_written", 0),
            "frames_published": stats["publish"].get("frames_published", 0),
            "frames_dropped": stats["capture"].get("frames_dropped", 0),
            "decode_errors": stats["capture"].get("decode_errors", 0),
            "reconnects": stats["capture"].get("reconnects", 0),
            "offline_s": stats["capture"].get("offline_s", 0.0),
            "status_events": stats["publish"].get("status_events", {}),
            "batches": stats["infer"].get("batches", 0),
            "batch_s_max": round(stats["infer"].get("batch_s_max", 0.0), 4),
            "wall_s": round(wall_s, 3),
            "startup_s": round(wall_s - processing_s, 3),
            "processing_s": round(processing_s, 3),
            "fps": round(done / processing_s, 3) if processing_s > 0 else 0.0,
            "latency_ms": stats["publish"].get("latency_ms", {"p50": None, "p95": None, "p99": None}),
            "stages": {
                name: {
                    "busy_s": round(s.get("busy_s", 0.0), 3),
                    "busy_fraction": round(s.get("busy_s", 0.0) / processing_s, 3) if processing_s else 0.0,
                    # CPU time of every thread of the stage while frames flowed, per frame
                    "core_ms_per_frame": round(s.get("cpu_s", 0.0) / done * 1000, 2) if done else None,
                    "threads": self.resources.budget(name).threads,
                }
                for name, s in stats.items()
            },
            "resources": self.resources.to_dict(),
            "interrupted": self._draining,
            "restarts": self.restart_log,
            "duplicates_dropped": stats["publish"].get("duplicates_dropped", 0),
        }
        return report
