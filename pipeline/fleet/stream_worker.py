"""The worker actor of ``fleet streams``: one normal pipeline for its group of streams.

The actor starts its pipeline in its constructor, so a restart is all it takes to move:
when a node dies, Ray restarts the actor (``max_restarts=-1``) on a node that is alive and
runs the constructor again with the same streams, which starts a new pipeline there on a
new endpoint; the driver's directory picks the new endpoint up at its next poll.

A pipeline that ends by itself while its node lives (killed by the OOM killer, a feed that
stayed away past its reconnect attempts) is started again by its worker, after a backoff,
by :data:`RELAUNCH_POLICY` (the supervisor's restart policy: a crash loop gives up). One
that ended cleanly (its streams ended: exit 0) or refused its input (exit 2: it would
refuse again) is not: its streams show ``failed`` with the pipeline's error line.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.fleet.child import ChildPipeline, sweep_dead_pipelines
from pipeline.policies.restart import RestartDecision, RestartPolicy
from pipeline.transport.sockets import free_tcp_port, is_loopback_endpoint

__all__ = ["StreamWorker", "stream_pipeline_args", "relaunch_decision", "RELAUNCH_POLICY"]

# at most 5 relaunches of a worker's pipeline within 10 minutes, after 1, 2, 4 ... 30 s
RELAUNCH_POLICY = RestartPolicy(max_restarts=5, window_s=600.0, backoff_s=1.0, backoff_max_s=30.0)
EXIT_DONE, EXIT_BAD_INPUT = 0, 2  # run_pipeline.py's exit codes that a relaunch would not change


def relaunch_decision(exit_code: int, history: list[float], now: float,
                      policy: RestartPolicy = RELAUNCH_POLICY) -> RestartDecision:
    """Whether a stream pipeline that exited with ``exit_code`` is started again, given the
    times of its earlier relaunches (``history``)."""
    if exit_code == EXIT_DONE:
        return RestartDecision(False, reason="its streams ended")
    return policy.decide(history, now, reported_error=exit_code == EXIT_BAD_INPUT)


def stream_pipeline_args(uris: list[str], endpoint: str, extra: list[str],
                         remote: bool) -> list[str]:
    """``run_pipeline.py`` arguments for streams ``uris`` published on ``endpoint``: one
    pipeline, one PUB socket, the streams as topics ``0``, ``1``, ... in this order."""
    args = [a for uri in uris for a in ("--source", uri)]
    args += ["--publish", endpoint, "--output", "none", "--no-progress", *extra]
    if remote and "--allow-remote" not in extra:
        args.append("--allow-remote")  # the fleet publishes for consumers on other hosts
    return args


class StreamWorker:
    """Runs one pipeline for ``streams`` on whatever node Ray placed this actor.

    Args:
        index: the worker's number (stable across restarts).
        streams: ``{"name", "uri", "width", "height"}`` per stream.
        pipeline_args: pass-through ``run_pipeline.py`` arguments.
        publish_host: ``node`` (this node's address) or an address to publish on.
        run_id: the fleet run id (``SEGSTREAM_FLEET_RUN`` of the pipeline).
    """

    def __init__(self, index: int, streams: list[dict[str, Any]], pipeline_args: list[str],
                 publish_host: str, run_id: str) -> None:
        import ray

        self.index = index
        self.streams = streams
        self.pipeline_args, self.run_id = pipeline_args, run_id
        self.node = ray.get_runtime_context().get_node_id()
        self.host = ray.util.get_node_ip_address()
        self.publish_host = self.host if publish_host == "node" else publish_host
        self.relaunches: list[float] = []  # monotonic times of this worker's relaunches
        self._relaunch_at: float | None = None
        self._launch()

    def _launch(self) -> None:
        """Start the pipeline on a fresh port (first, or after the last one ended)."""
        sweep_dead_pipelines()  # e.g. this worker's own pipeline, if it or its node died here
        host = f"[{self.publish_host}]" if ":" in self.publish_host else self.publish_host
        self.endpoint = f"tcp://{host}:{free_tcp_port(self.publish_host)}"
        args = stream_pipeline_args([s["uri"] for s in self.streams], self.endpoint, self.pipeline_args,
                                    remote=not is_loopback_endpoint(self.endpoint))
        log = Path(tempfile.gettempdir()) / f"segstream-fleet-{self.run_id}-w{self.index}-{os.getpid()}.log"
        log.unlink(missing_ok=True)  # the last pipeline's log: its error line was read
        self.child = ChildPipeline(args, log, self.run_id)
        self.since = time.time()

    def info(self) -> dict[str, Any]:
        """Where this worker publishes, and whether its pipeline still runs (or is about to
        be started again). The driver's polls (twice a second) are also what relaunches it."""
        code = self.child.poll()
        now = time.monotonic()
        error = None if code is None else self.child.error_line()
        if code is not None and self._relaunch_at is None:
            decision = relaunch_decision(code, self.relaunches, now)
            if decision.restart:
                self._relaunch_at = now + decision.delay_s
        if self._relaunch_at is not None and now >= self._relaunch_at:
            self._relaunch_at = None
            self.relaunches.append(now)
            self._launch()
            code, error = None, None
        return {
            "worker": self.index, "endpoint": self.endpoint, "node": self.node,
            "host": self.host, "since": self.since, "pid": self.child.pid,
            "running": code is None, "relaunching": self._relaunch_at is not None, "exit_code": code,
            "relaunches": len(self.relaunches), "error": error,
        }

    def stop(self) -> int:
        """Stop the pipeline (it drains) and remove its log; returns its exit code."""
        code = self.child.stop()
        self.child.log_path.unlink(missing_ok=True)
        return code
