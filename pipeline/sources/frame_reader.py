"""Reading any source in a background thread, with a delivery policy between it and the consumer.

The capture stage reads live feeds through :class:`LatestFrameReader` with the configured
policy (``source.live_policy``), and every stream of a multi-stream run too: files and folders
there with ``block``, so they stay lossless. The reader is independent of how frames are
decoded; it only needs :meth:`~pipeline.sources.base.Source.frames` (and, if the source has
them, ``stop()`` and a ``status`` whose events it forwards).

Delivery policies (:data:`LIVE_POLICIES`; frames may be dropped, never reordered):

* ``latest`` (default): keep only the newest frame; the consumer never falls behind the
  feed, and FFmpeg's and the kernel's buffers never fill up (which is what makes latency
  grow on slow consumers);
* ``drop_oldest``: keep the newest ``capacity`` frames, dropping the oldest when full;
* ``block``: keep up to ``capacity`` frames and stop reading when full (nothing dropped
  here; the feed's own buffers absorb the difference, so latency can grow).

:class:`DeliveryQueue` is the policy alone (no thread, no lock, no clock), so it can be
tested table by table like the pipeline's other policies.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from pipeline.sources.base import Frame, Source

__all__ = ["LIVE_POLICIES", "DeliveryQueue", "LatestFrameReader"]

LIVE_POLICIES = ("latest", "drop_oldest", "block")


class DeliveryQueue:
    """The frames waiting for the consumer under one delivery policy.

    Each queued frame carries how many frames were dropped just before it, so the consumer
    learns the exact gap. Not thread-safe: :class:`LatestFrameReader` guards it.

    Args:
        policy: one of :data:`LIVE_POLICIES`.
        capacity: frames kept at most (``latest`` always keeps 1).
    """

    def __init__(self, policy: str = "latest", capacity: int = 1) -> None:
        if policy not in LIVE_POLICIES:
            raise ValueError(f"unknown live policy {policy!r} (choose from {', '.join(LIVE_POLICIES)})")
        self.policy = policy
        self.capacity = 1 if policy == "latest" else max(1, capacity)
        self.dropped_total = 0
        self._queue: deque[tuple[Frame, int]] = deque()  # (frame, frames dropped before it)
        self._dropped = 0  # dropped since the last queued frame

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def must_wait(self) -> bool:
        """True while a ``block`` producer has to wait before :meth:`push` (the queue is full)."""
        return self.policy == "block" and len(self._queue) >= self.capacity

    def push(self, frame: Frame) -> None:
        """Queue ``frame``; when full, ``latest`` / ``drop_oldest`` drop the oldest waiting
        frame first, while ``block`` queues it anyway (its producer waits beforehand, see
        :attr:`must_wait`, unless it is being stopped)."""
        if self.policy != "block" and len(self._queue) >= self.capacity:
            _, carried = self._queue.popleft()
            self.dropped_total += 1
            if self._queue:  # its drops now precede the next frame in line
                head, head_carried = self._queue[0]
                self._queue[0] = (head, head_carried + carried + 1)
            else:
                self._dropped += carried + 1
        self._queue.append((frame, self._dropped))
        self._dropped = 0

    def pop(self) -> tuple[Frame, int] | None:
        """The oldest waiting frame and the frames dropped before it, or ``None`` if empty."""
        return self._queue.popleft() if self._queue else None

    def clear(self) -> None:
        """Discard every waiting frame (nobody will take them any more)."""
        self._queue.clear()


class LatestFrameReader:
    """Reads a source in a background thread and applies a delivery policy (module docs).

    The consumer's loop keeps running (heartbeats, drain requests) while a live source waits
    out a reconnection backoff.

    ::

        reader = LatestFrameReader(open_source(url, stream_id="cam"))
        while running:
            heartbeat()
            for event in reader.pop_events():      # status events, in this thread
                publish(status_message(event))
            item = reader.get(timeout=0.1)         # (frame, dropped) or None
            if item is None:
                if reader.finished:
                    break                          # stopped, or a finite stream ended
                continue
            frame, dropped = item                  # dropped: frames skipped before this one
        reader.close()

    Status events are queued (the source's ``on_status`` is taken over) so the consumer
    handles them in its own thread: ZeroMQ sockets must not be shared between threads.
    An exception the source raises (e.g. reconnection gave up) is re-raised by :meth:`get`
    once the frames before it were taken.

    Args:
        source: the source to read (its ``frames()`` runs in the reader's thread).
        name: the thread's name.
        policy: the delivery policy, one of :data:`LIVE_POLICIES`.
        capacity: frames kept for ``drop_oldest`` and ``block``.
        skip: frames at the start to discard (a restarted capture resuming a file).
    """

    def __init__(
        self, source: Source, name: str = "segstream-live-reader", policy: str = "latest", capacity: int = 1,
        skip: int = 0,
    ) -> None:
        self._frames = DeliveryQueue(policy, capacity)
        self.source = source
        self.frames_read = 0
        self.skip = skip
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._done = False
        self._stopping = False
        self._events: list[dict[str, Any]] = []
        status = getattr(source, "status", None)
        if status is not None:
            self._events.extend(dict(e) for e in status.events)  # what happened before us
            status.on_status = self._queue_event
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def policy(self) -> str:
        return self._frames.policy

    @property
    def capacity(self) -> int:
        return self._frames.capacity

    @property
    def dropped_total(self) -> int:
        """Frames the policy dropped so far."""
        return self._frames.dropped_total

    def _queue_event(self, event: dict[str, Any]) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            for index, frame in enumerate(self.source.frames()):
                if index < self.skip:
                    continue
                with self._cond:
                    self.frames_read += 1
                    while self._frames.must_wait and not self._stopping:
                        self._cond.wait(0.1)
                    self._frames.push(frame)
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer by get()
            self.error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    @property
    def finished(self) -> bool:
        """The source ended (stopped, finished, or failed) and every frame was taken."""
        with self._cond:
            return self._done and not self._frames

    def get(self, timeout: float | None = None) -> tuple[Frame, int] | None:
        """The next frame the policy kept and how many frames were skipped before it.

        Waits up to ``timeout`` seconds (``None``: until a frame or the end); returns
        ``None`` on timeout or at the end. Raises the source's error after the last frame.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._frames and not self._done:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item = self._frames.pop()
            if item is not None:
                self._cond.notify_all()  # room for a blocked reader
                return item
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return None

    def pop_events(self) -> list[dict[str, Any]]:
        """Status events since the last call, oldest first."""
        with self._cond:
            events, self._events = self._events, []
            return events

    def close(self, timeout: float | None = None) -> bool:
        """Stop the source, wait for the thread (default: the source's longest blocking call),
        close the source and discard an untaken frame. Returns False if the thread did not end
        in time."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        stop = getattr(self.source, "stop", None)
        if stop is not None:
            stop()
        if timeout is None:
            timeout = getattr(self.source, "open_timeout_s", 5.0) + getattr(self.source, "read_timeout_s", 5.0) + 1.0
        self._thread.join(timeout)
        alive = self._thread.is_alive()
        self.source.close()
        with self._cond:
            self._frames.clear()  # closed: nobody takes them any more
        return not alive

    def __enter__(self) -> LatestFrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
