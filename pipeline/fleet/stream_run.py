"""The driver side of ``python -m pipeline.fleet streams``.

It shares the streams out (:func:`pipeline.fleet.assign.assign_streams`), starts one
:class:`~pipeline.fleet.stream_worker.StreamWorker` actor per group (spread over the nodes;
Ray restarts an actor on another node when its node dies), serves the directory, and polls
every worker twice a second to keep the directory current.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.fleet import cluster
from pipeline.fleet.assign import assign_streams, load_streams
from pipeline.fleet.child import sweep_dead_pipelines
from pipeline.fleet.directory import (
    DirectoryServer,
    StreamDirectory,
    directory_entries,
    parse_listen,
)
from pipeline.fleet.files import check_pipeline_args
from pipeline.fleet.stream_worker import StreamWorker

__all__ = ["StreamsOptions", "StreamFleet", "run_streams"]

log = logging.getLogger("pipeline.fleet")
POLL_S = 0.5


@dataclass
class StreamsOptions:
    """What ``fleet streams`` runs, and where its directory listens."""

    uris: list[str]
    list_files: list[str] = field(default_factory=list)
    pipeline_args: list[str] = field(default_factory=list)
    address: str | None = None
    local_cpus: int | None = None
    max_per_worker: int = 4
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None
    directory: str = "127.0.0.1:8470"
    publish_host: str = "node"
    duration_s: float | None = None
    progress: bool = True


class StreamFleet:
    """A running streams fleet: its actors, its directory and the poll that links them.
    Use as a context manager (``__exit__`` stops every pipeline and the directory)."""

    def __init__(self, opts: StreamsOptions) -> None:
        check_pipeline_args(opts.pipeline_args)
        self.groups = assign_streams(load_streams(opts.uris, opts.list_files),
                                     opts.max_per_worker, opts.workers)
        host, port = parse_listen(opts.directory)
        self.run_id = uuid.uuid4().hex[:8]
        self.directory = StreamDirectory()
        self.server = DirectoryServer(self.directory, host, port)  # port taken: exit 2 now
        self.actors: list[Any] = []
        self._pending: dict[int, Any] = {}
        self._last_status: dict[str, str] = {}
        try:
            cluster.connect(opts.address, opts.local_cpus)
            self._start(opts)
        except BaseException:
            self.server.close()
            cluster.disconnect()
            raise

    def _start(self, opts: StreamsOptions) -> None:
        import ray

        gpus = opts.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if cluster.cluster_gpus() > 0 else 0.0
        actor = ray.remote(StreamWorker)
        for index, group in enumerate(self.groups):
            streams = [asdict(s) for s in group]
            # max_restarts=-1: a worker whose node died is started again on a live node
            self.actors.append(actor.options(
                name=f"fleet-streams-{self.run_id}-{index}", num_cpus=opts.cpus_per_worker,
                num_gpus=gpus, max_restarts=-1, max_task_retries=0,
                scheduling_strategy="SPREAD").remote(
                index, streams, opts.pipeline_args, opts.publish_host, self.run_id))
            self.directory.update(directory_entries(None, streams, {}))

    @property
    def url(self) -> str:
        """The directory's URL (``http://HOST:PORT/streams``)."""
        return self.server.url

    def poll(self, timeout_s: float = POLL_S) -> None:
        """Ask every worker where it publishes and update the directory."""
        import ray

        for index, actor in enumerate(self.actors):
            if index not in self._pending:
                self._pending[index] = actor.info.remote()
        refs = {ref: index for index, ref in self._pending.items()}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        previous = self.directory.snapshot()
        for ref in ready:
            index = refs[ref]
            del self._pending[index]
            try:
                info = ray.get(ref)
            except ray.exceptions.RayError:  # its node died: Ray is restarting it elsewhere
                info = None
            streams = [asdict(s) for s in self.groups[index]]
            entries = directory_entries(info, streams, previous)
            self._log_changes(entries)
            self.directory.update(entries)

    def _log_changes(self, entries: dict[str, dict[str, Any]]) -> None:
        for name, entry in entries.items():
            state = f"{entry['status']} {entry['endpoint']}"
            if self._last_status.get(name) != state:
                self._last_status[name] = state
                why = f" ({entry['error']})" if entry.get("error") else ""
                log.info("stream %s: %s on %s%s", name, state, entry.get("host"), why)

    def __enter__(self) -> StreamFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every pipeline (each drains), the actors, the directory; leave the cluster."""
        import ray

        try:
            stops = [a.stop.remote() for a in self.actors]
            ray.wait(stops, num_returns=len(stops), timeout=30)
            for a in self.actors:
                ray.kill(a, no_restart=True)
        finally:
            self.server.close()
            cluster.disconnect()
            sweep_dead_pipelines()  # this host's share of pipelines killed with their nodes
            for path in Path(tempfile.gettempdir()).glob(f"segstream-fleet-{self.run_id}-*"):
                path.unlink(missing_ok=True)  # logs of workers whose node died here


def run_streams(opts: StreamsOptions) -> int:
    """Run the streams until Ctrl-C or ``opts.duration_s``; returns the exit code (0)."""
    with StreamFleet(opts) as fleet:
        log.info("%d streams on %d workers; directory: %s",
                 sum(map(len, fleet.groups)), len(fleet.groups), fleet.url)
        end = None if opts.duration_s is None else time.monotonic() + opts.duration_s
        while end is None or time.monotonic() < end:
            fleet.poll()
            time.sleep(POLL_S)
    return 0
