"""The worker actor of ``fleet streams``: one normal pipeline for its group of streams.

The actor starts its pipeline in its constructor, so a restart is all it takes to move:
when a node dies, Ray restarts the actor (``max_restarts=-1``) on a node that is alive and
runs the constructor again with the same streams, which starts a new pipeline there on a
new endpoint; the driver's directory picks the new endpoint up at its next poll.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.fleet.child import ChildPipeline, sweep_dead_pipelines

__all__ = ["StreamWorker", "stream_pipeline_args", "free_port", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str) -> int:
    """A TCP port free on ``host`` now (the pipeline binds it a moment later)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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

        sweep_dead_pipelines()  # e.g. this worker's own pipeline, if its node died here
        self.index = index
        self.streams = streams
        self.node = ray.get_runtime_context().get_node_id()
        node_ip = ray.util.get_node_ip_address()
        host = node_ip if publish_host == "node" else publish_host
        self.endpoint = f"tcp://{host}:{free_port(host)}"
        self.host = node_ip
        args = stream_pipeline_args([s["uri"] for s in streams], self.endpoint, pipeline_args,
                                    remote=not is_loopback(host))
        log = Path(tempfile.gettempdir()) / f"segstream-fleet-{run_id}-w{index}-{os.getpid()}.log"
        self.child = ChildPipeline(args, log, run_id)
        self.since = time.time()

    def info(self) -> dict[str, Any]:
        """Where this worker publishes, and whether its pipeline still runs."""
        code = self.child.poll()
        return {
            "worker": self.index, "endpoint": self.endpoint, "node": self.node,
            "host": self.host, "since": self.since, "pid": self.child.pid,
            "running": code is None, "exit_code": code,
            "error": None if code is None else self.child.error_line(),
        }

    def stop(self) -> int:
        """Stop the pipeline (it drains) and remove its log; returns its exit code."""
        code = self.child.stop()
        self.child.log_path.unlink(missing_ok=True)
        return code
