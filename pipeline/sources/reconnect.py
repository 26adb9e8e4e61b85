"""Reconnection for live sources: a jittered exponential backoff and link status events.

:class:`Backoff` says how long to wait before each reconnect attempt::

    delay(n) = min(max_s, initial_s * factor ** (n - 1)) * U(1 - jitter, 1 + jitter), capped at max_s

for attempt ``n = 1, 2, ...``; after ``max_attempts`` attempts it says stop (``None``).
:meth:`Backoff.reset` starts over (called when the link is back).

:class:`ReconnectPolicy` is the one object a live source takes for all of this: its open and
read timeouts and its backoff parameters (``source.reconnect`` of the config builds it).

:class:`LinkStatus` tracks one source's link and reports every change as an event dict::

    {"event": "online" | "offline" | "reconnecting" | "eos",
     "stream": str, "time_ns": int (wall clock), "detail": str,
     "attempt": int, "delay_s": float}       # the last two only on "reconnecting"

to an ``on_status(event)`` callback, and keeps the counters ``reconnects`` (successful
reconnections) and ``offline_s`` (total seconds offline, the current outage included).
:func:`status_message` turns an event into the ``segstream.status`` consumer message of
docs/PROTOCOL.md.

Event order for one source: ``online`` (first open) -> ``offline`` (link lost) ->
``reconnecting`` (once per attempt, before its wait) -> ``online`` (back) ... -> ``eos``
(the source ended for good: stopped, end of a finite stream, or reconnection gave up).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

from pipeline import messages

__all__ = [
    "Backoff",
    "ReconnectPolicy",
    "RECONNECT_OPTIONS",
    "LinkStatus",
    "StatusCallback",
    "EVENTS",
    "status_message",
]

log = logging.getLogger(__name__)

ONLINE, OFFLINE, RECONNECTING, EOS = "online", "offline", "reconnecting", "eos"
EVENTS = (ONLINE, OFFLINE, RECONNECTING, EOS)

StatusCallback = Callable[[dict[str, Any]], None]


class Backoff:
    """Jittered exponential backoff.

    Args:
        initial_s: base delay before the first attempt (> 0).
        max_s: cap on every delay, jitter included (>= initial_s).
        factor: growth per attempt (>= 1).
        jitter: relative spread in [0, 1): each delay is the base times a uniform factor in
            ``[1 - jitter, 1 + jitter]`` (then capped at ``max_s``), so many clients that
            lost the same server do not all come back at the same instant.
        max_attempts: attempts allowed before giving up (``None``: forever; 0: never retry).
        seed: seed of a private random generator (tests); ignored when ``rng`` is given.
        rng: a ``random.Random`` to draw the jitter from.
    """

    def __init__(
        self,
        initial_s: float = 0.5,
        max_s: float = 10.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        max_attempts: int | None = None,
        *,
        seed: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not initial_s > 0:
            raise ValueError(f"backoff initial_s must be > 0, got {initial_s}")
        if not max_s >= initial_s:
            raise ValueError(f"backoff max_s must be >= initial_s ({initial_s}), got {max_s}")
        if not factor >= 1:
            raise ValueError(f"backoff factor must be >= 1, got {factor}")
        if not 0 <= jitter < 1:
            raise ValueError(f"backoff jitter must be in [0, 1), got {jitter}")
        if max_attempts is not None and max_attempts < 0:
            raise ValueError(f"max_attempts must be >= 0 or None, got {max_attempts}")
        self.initial_s = float(initial_s)
        self.max_s = float(max_s)
        self.factor = float(factor)
        self.jitter = float(jitter)
        self.max_attempts = max_attempts
        self._rng = rng if rng is not None else random.Random(seed)
        self.attempts = 0  # attempts handed out since the last reset

    def base_delay(self, attempt: int) -> float:
        """The delay before attempt ``attempt`` (1-based) without jitter."""
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        # Stop multiplying once past the cap (no float overflow on long outages).
        delay = self.initial_s
        for _ in range(attempt - 1):
            delay *= self.factor
            if delay >= self.max_s:
                return self.max_s
        return min(delay, self.max_s)

    def bounds(self, attempt: int) -> tuple[float, float]:
        """Smallest and largest delay the jitter can give for ``attempt``."""
        base = self.base_delay(attempt)
        return base * (1 - self.jitter), min(self.max_s, base * (1 + self.jitter))

    @property
    def exhausted(self) -> bool:
        return self.max_attempts is not None and self.attempts >= self.max_attempts

    def next_delay(self) -> float | None:
        """The wait before the next attempt, or ``None`` when no attempt is left."""
        if self.exhausted:
            return None
        self.attempts += 1
        base = self.base_delay(self.attempts)
        spread = self._rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0
        return min(self.max_s, base * (1 + spread))

    def reset(self) -> None:
        """Start over (the link is back)."""
        self.attempts = 0

    def __iter__(self) -> Iterator[float]:
        """Delays until exhausted (forever when ``max_attempts`` is None)."""
        while (delay := self.next_delay()) is not None:
            yield delay

    def __repr__(self) -> str:
        return (
            f"Backoff(initial_s={self.initial_s}, max_s={self.max_s}, factor={self.factor}, "
            f"jitter={self.jitter}, max_attempts={self.max_attempts})"
        )


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a live source (network stream, camera) opens, notices a lost link and retries.

    A plain description, validated by the source that uses it (its errors then name the
    source); every reconnecting source takes one as ``reconnect=``, and
    :func:`~pipeline.sources.open_source` also accepts the fields as loose keywords.

    Attributes:
        open_timeout_s: how long opening (connect, handshake, probe, first frame) may take.
        read_timeout_s: how long a read may block, or data come without a decodable frame,
            before the link counts as lost.
        max_attempts: reconnect attempts per outage before giving up (``None``: forever).
        backoff_initial_s, backoff_max_s, backoff_factor, backoff_jitter, backoff_seed:
            the :class:`Backoff` between attempts (``initial_s``, ``max_s``, ``factor``,
            ``jitter``, ``seed``).
    """

    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    max_attempts: int | None = None
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    backoff_factor: float = 2.0
    backoff_jitter: float = 0.2
    backoff_seed: int | None = None

    def new_backoff(self) -> Backoff:
        """A fresh :class:`Backoff` with these parameters (raises ``ValueError`` on bad ones)."""
        return Backoff(
            self.backoff_initial_s,
            self.backoff_max_s,
            self.backoff_factor,
            self.backoff_jitter,
            self.max_attempts,
            seed=self.backoff_seed,
        )


# The keyword names open_source() folds into a ReconnectPolicy (the config's names too).
RECONNECT_OPTIONS = tuple(f.name for f in fields(ReconnectPolicy))


class LinkStatus:
    """The link state of one live source, its status events and counters.

    Thread-safe: the source's reader thread reports, anyone may read the counters.

    Args:
        stream: the stream id put into events (the capture stage's stream id).
        on_status: called with every event dict (exceptions are logged, not raised: a
            broken status consumer must not stop the video).
        history: how many recent events :attr:`events` keeps.
    """

    def __init__(self, stream: str = "0", on_status: StatusCallback | None = None, history: int = 64) -> None:
        self.stream = str(stream)
        self.on_status = on_status
        self.events: deque[dict[str, Any]] = deque(maxlen=history)
        self.state: str | None = None  # last event name
        self.reconnects = 0  # times the link came back after being offline
        self._offline_total_s = 0.0
        self._offline_since: float | None = None  # monotonic time of the current outage
        self._lock = threading.Lock()

    # -- reporting ---------------------------------------------------------------------------

    def online(self, detail: str = "") -> dict[str, Any]:
        with self._lock:
            if self._offline_since is not None:
                self._offline_total_s += time.monotonic() - self._offline_since
                self._offline_since = None
                self.reconnects += 1
        return self._emit(ONLINE, detail)

    def offline(self, detail: str = "") -> dict[str, Any]:
        with self._lock:
            if self._offline_since is None:
                self._offline_since = time.monotonic()
        return self._emit(OFFLINE, detail)

    def reconnecting(self, attempt: int, delay_s: float, detail: str = "") -> dict[str, Any]:
        with self._lock:
            if self._offline_since is None:  # reconnecting without a prior offline (first open)
                self._offline_since = time.monotonic()
        text = f"attempt {attempt} in {delay_s:.2f} s" + (f": {detail}" if detail else "")
        return self._emit(RECONNECTING, text, attempt=attempt, delay_s=round(delay_s, 4))

    def eos(self, detail: str = "") -> dict[str, Any]:
        with self._lock:
            if self._offline_since is not None:
                self._offline_total_s += time.monotonic() - self._offline_since
                self._offline_since = None
        return self._emit(EOS, detail)

    def _emit(self, name: str, detail: str, **extra: Any) -> dict[str, Any]:
        event = {"event": name, "stream": self.stream, "time_ns": time.time_ns(), "detail": detail, **extra}
        with self._lock:
            self.state = name
            self.events.append(event)
        callback = self.on_status
        if callback is not None:
            try:
                callback(dict(event))
            except Exception:  # noqa: BLE001 - status reporting must not stop the video
                log.exception("on_status callback failed for %s event of stream %s", name, self.stream)
        return event

    # -- counters ----------------------------------------------------------------------------

    @property
    def offline_s(self) -> float:
        """Total seconds spent offline, the ongoing outage included."""
        with self._lock:
            total = self._offline_total_s
            if self._offline_since is not None:
                total += time.monotonic() - self._offline_since
            return total

    @property
    def is_online(self) -> bool:
        return self.state == ONLINE

    def counters(self) -> dict[str, Any]:
        """``{"state", "reconnects", "offline_s"}`` for metrics and stage stats."""
        return {"state": self.state, "reconnects": self.reconnects, "offline_s": round(self.offline_s, 3)}


def status_message(event: dict[str, Any], stream: str | None = None) -> dict[str, Any]:
    """The ``segstream.status`` consumer header (docs/PROTOCOL.md) for one event dict.

    Only the documented keys go on the wire (a new key would be a minor version bump).
    Publish it with ``messages.encode_envelope(header["stream"], header)``.
    """
    if event.get("event") not in EVENTS:
        raise ValueError(f"unknown status event {event.get('event')!r}")
    return {
        "schema": messages.SCHEMA_STATUS,
        "version": messages.version_header(),
        "stream": str(stream if stream is not None else event.get("stream", "0")),
        "event": event["event"],
        "time_ns": int(event.get("time_ns") or time.time_ns()),
        "detail": str(event.get("detail", "")),
    }
