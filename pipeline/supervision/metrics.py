"""Prometheus metrics of a run (``observability.metrics``, ``--metrics HOST:PORT``).

The stages already tell the supervisor what they do, and the metrics are made of that only:

* every stage's heartbeat (each ``transport.heartbeat_s``) and its ``done`` carry its
  counters (``stats``: busy time; capture per stream frames read and dropped, decode errors,
  link counters and the ring slots in use; infer frames and batches; publish per stream
  frames finished);
* publish's ``progress`` events carry the capture-to-publish latencies of the frames it
  published since the previous one (``latencies_ms``) and the source status events it
  relayed (``status``);
* the supervisor itself knows the restarts.

:class:`RunMetrics` turns those into metrics in a private registry (never the process-wide
one): :meth:`~RunMetrics.handle_event` takes an event as received, :meth:`~RunMetrics.
on_restart` a restart. It has no sockets or processes (tests feed it dicts).
:class:`MetricsServer` serves the registry over HTTP while the run lasts.

A stage's own counters go back when it restarts (to zero, or to where it resumes); the
metrics count their increases only, so a counter never goes back, and what a restarted
stage does again (replayed frames) counts again. Without restarts every counter ends equal
to the run report's number.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError
from pipeline.transport.sockets import http_address

if TYPE_CHECKING:  # prometheus_client is the optional ``metrics`` extra: imported only when on
    from prometheus_client import CollectorRegistry, Counter, Gauge

KEY = "observability.metrics"
#: capture to publish, seconds: a frame of a CPU model takes from tens of ms to seconds
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RATE_WINDOW_S = 5.0  # fps, busy ratio and batch size are over about this much recent time
#: why a stage was restarted (``segstream_restarts_total`` label ``reason``)
RESTART_REASONS = ("died", "hung", "error")


def restart_reason(hung: bool, reported: bool) -> str:
    """The ``reason`` label of a restart: the stage stopped responding, reported an error
    of its own, or died without one (a signal, the OOM killer)."""
    return "hung" if hung else "error" if reported else "died"


def metrics_address(address: str, allow_remote: bool) -> tuple[str, int]:
    """``HOST:PORT`` of the metrics endpoint as ``(host, port)`` (``sockets.http_address``);
    a :class:`ConfigError` too when ``prometheus_client`` (the ``metrics`` extra) is missing."""
    found = http_address(KEY, address, allow_remote, "metrics", 9108)
    try:
        import prometheus_client  # noqa: F401 - only whether it is there
    except ImportError:
        raise ConfigError(f"{KEY}: '{address}' needs the prometheus_client package "
                          "(pip install 'segstream[metrics]')") from None
    return found


def _number(value: Any) -> float | None:
    """``value`` if it is a number (not a bool), else None: metrics never fail a run."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class _Window:
    """Recent ``(time, values...)`` samples of cumulative values, for rates over about
    ``window_s`` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, tuple[float, ...]]] = deque()

    def add(self, now: float, *values: float) -> tuple[float, tuple[float, ...]] | None:
        """Add a sample; the time and the values' increases since the oldest sample kept,
        or None while there is no earlier sample."""
        self.samples.append((now, values))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()
        then, old = self.samples[0]
        if now <= then:
            return None
        return now - then, tuple(new - before for new, before in zip(values, old, strict=True))


class RunMetrics:
    """The metrics of one run, from the stages' events (see the module's docstring)."""

    def __init__(self, streams: Sequence[str] = (), clock: Callable[[], float] = time.monotonic) -> None:
        """``streams``: the run's stream ids (their series exist from the start, at zero)."""
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._last: dict[tuple[str, ...], float] = {}  # a stage counter's last reported value
        self._totals: dict[tuple[str, ...], float] = {}  # the metric each one counts into
        self._windows: dict[tuple[str, ...], _Window] = {}
        self._define()
        for stream in streams:
            for counter in (self.frames_read, self.frames_dropped, self.frames_published):
                counter.labels(stream)

    def _define(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        r = self.registry

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(f"segstream_{name}", doc, labels, registry=r)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(f"segstream_{name}", doc, labels, registry=r)

        self.frames_read = counter("frames_read", "Frames the source delivered (sent or dropped)", "stream")
        self.frames_dropped = counter("frames_dropped", "Frames dropped by the live delivery policy", "stream")
        self.frames_processed = counter("frames_processed", "Frames the model ran on (all streams)")
        self.frames_published = counter("frames_published", "Frames the publish stage finished", "stream")
        self.decode_errors = counter("decode_errors", "Frames the source could not decode", "stream")
        self.reconnects = counter("reconnects", "Times a live feed came back after an outage", "stream")
        self.offline = counter("offline_seconds", "Seconds a live feed was offline", "stream")
        self.batches = counter("batches", "Batches the model ran")
        self.busy_seconds = counter("stage_busy_seconds", "Seconds a stage spent on frames", "stage")
        self.restarts = counter("restarts", "Stage restarts by the supervisor", "stage", "reason")
        self.status_events = counter("status_events", "Source status events", "stream", "event")
        self.input_fps = gauge("input_fps", "Frames read per second, recent", "stream")
        self.output_fps = gauge("output_fps", "Frames published per second, recent", "stream")
        self.busy_ratio = gauge("stage_busy_ratio", "Share of recent time a stage spent on frames", "stage")
        self.batch_size = gauge("batch_size", "Mean size of the recent batches")
        self.ring_slots = gauge("ring_slots", "Frame slots in the shared-memory ring")
        self.ring_in_use = gauge("ring_slots_in_use", "Ring slots holding frames in flight")
        self.stream_online = gauge("stream_online", "1 while a live feed is online, else 0", "stream")
        self.latency = Histogram("segstream_latency_seconds", "Capture to publish, end to end, per frame",
                                 buckets=LATENCY_BUCKETS_S, registry=r)

    # -- input -----------------------------------------------------------------------------
    def handle_event(self, event: Mapping[str, Any]) -> None:
        """Take in one stage event as the supervisor received it (any kind)."""
        stage = str(event.get("stage", ""))
        stats = event.get("stats")
        if isinstance(stats, Mapping):
            self.update_from_stats(stage, stats)
        latencies = event.get("latencies_ms")
        if isinstance(latencies, list):
            self.observe_latencies(latencies)
        for status in event.get("status") or ():
            if isinstance(status, Mapping):
                self.on_status(str(status.get("stream", "0")), str(status.get("event", "")))

    def update_from_stats(self, stage: str, stats: Mapping[str, Any]) -> None:
        """A stage's counters (``self.stats`` of :mod:`pipeline.stages`), as reported now."""
        now = self._clock()
        busy = self._count(self.busy_seconds, (stage, "busy_s"), stats.get("busy_s"), stage)
        rate = None if busy is None else self._rate((stage, "busy"), now, busy)
        if rate is not None:
            self.busy_ratio.labels(stage).set(min(1.0, rate[0]))
        if stage == "capture":
            self._capture(stats, now)
        elif stage == "infer":
            self._infer(stats, now)
        elif stage == "publish":
            self._publish(stats, now)

    def on_restart(self, stage: str, reason: str) -> None:
        """The supervisor restarts ``stage`` (``reason``: one of :data:`RESTART_REASONS`)."""
        self.restarts.labels(stage, reason).inc()

    def on_status(self, stream: str, event: str) -> None:
        """A source status event (``online``, ``offline``, ``reconnecting``, ``eos``)."""
        self.status_events.labels(stream, event).inc()
        self.stream_online.labels(stream).set(1.0 if event == "online" else 0.0)

    def observe_latencies(self, latencies_ms: Iterable[Any]) -> None:
        """Capture-to-publish latencies of published frames, in milliseconds."""
        for value in latencies_ms:
            ms = _number(value)
            if ms is not None and ms >= 0:
                self.latency.observe(ms / 1000)

    def set_ring_slots(self, slots: int) -> None:
        """The ring's size (the supervisor creates it)."""
        self.ring_slots.set(slots)

    # -- output ----------------------------------------------------------------------------
    def exposition(self) -> str:
        """The metrics now, in the Prometheus text format (what ``/metrics`` serves)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

    # -- the stages' stats -----------------------------------------------------------------
    def _capture(self, stats: Mapping[str, Any], now: float) -> None:
        streams = stats.get("streams")
        for stream, counts in (streams.items() if isinstance(streams, Mapping) else ()):
            if not isinstance(counts, Mapping):
                continue
            for key, counter in (("read", self.frames_read), ("dropped", self.frames_dropped),
                                 ("decode_errors", self.decode_errors), ("reconnects", self.reconnects),
                                 ("offline_s", self.offline)):
                total = self._count(counter, ("capture", str(stream), key), counts.get(key), str(stream))
                if key == "read" and total is not None:
                    self._fps(self.input_fps, "input", str(stream), now, total)
        in_use = _number(stats.get("ring_slots_in_use"))
        if in_use is not None:
            self.ring_in_use.set(in_use)

    def _infer(self, stats: Mapping[str, Any], now: float) -> None:
        frames = self._count(self.frames_processed, ("infer", "frames_processed"), stats.get("frames_processed"))
        batches = self._count(self.batches, ("infer", "batches"), stats.get("batches"))
        rate = None if frames is None or batches is None else self._rate(("infer", "batch"), now, frames, batches)
        if rate is not None and rate[1] > 0:
            self.batch_size.set(rate[0] / rate[1])

    def _publish(self, stats: Mapping[str, Any], now: float) -> None:
        streams = stats.get("streams")
        for stream, counts in (streams.items() if isinstance(streams, Mapping) else ()):
            if isinstance(counts, Mapping) and "frames" in counts:
                total = self._count(self.frames_published, ("publish", str(stream), "frames"),
                                    counts.get("frames"), str(stream))
                if total is not None:
                    self._fps(self.output_fps, "output", str(stream), now, total)

    # -- helpers ---------------------------------------------------------------------------
    def _count(self, counter: Counter, key: tuple[str, ...], value: Any, *labels: str) -> float | None:
        """Count a stage counter's increase since its last report (none when it went back,
        after a restart) into ``counter``; the metric's total, or None if ``value`` is not
        a number."""
        number = _number(value)
        if number is None:
            return None
        last = self._last.get(key, 0.0)
        self._last[key] = number
        grown = max(0.0, number - last)
        self._totals[key] = total = self._totals.get(key, 0.0) + grown
        (counter.labels(*labels) if labels else counter).inc(grown)
        return total

    def _rate(self, key: tuple[str, ...], now: float, *totals: float) -> tuple[float, ...] | None:
        """Per second increases of ``totals`` over the recent window; None until known."""
        window = self._windows.setdefault(key, _Window(RATE_WINDOW_S))
        found = window.add(now, *totals)
        if found is None:
            return None
        span, grown = found
        return tuple(g / span for g in grown)

    def _fps(self, gauge: Gauge, side: str, stream: str, now: float, total: float) -> None:
        """``gauge`` (``side``: input or output) of ``stream``: its frames per second, recent."""
        rate = self._rate(("fps", side, stream), now, total)
        if rate is not None:
            gauge.labels(stream).set(rate[0])


class MetricsServer:
    """Serves a registry at ``http://HOST:PORT/metrics`` from a daemon thread, from
    :meth:`start` to :meth:`stop` (after which the port is free again)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host, self.port = host, port
        self._server: Any = None
        self._thread: Any = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        """Bind and serve; a port in use (or a host that is not here) is a :class:`ConfigError`."""
        from prometheus_client import start_http_server

        address = f"{self.host}:{self.port}"
        try:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        except (OSError, OverflowError) as err:
            reason = getattr(err, "strerror", None) or str(err)
            raise ConfigError(f"{KEY}: cannot serve metrics on '{address}': {reason}") from None
        self.port = self._server.server_port  # port 0: the one the system chose

    def stop(self) -> None:
        """Stop serving and free the port (idempotent)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = self._thread = None
