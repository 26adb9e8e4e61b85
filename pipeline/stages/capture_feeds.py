"""Capture's per-stream readers ("feeds") and the pure helpers of its frame path.

Capture runs one loop over one or more feeds (:mod:`pipeline.stages.capture`). What differs
between a file and a live feed is here, chosen from the run plan's decisions:

* :class:`FileFeed` (fixed batching: one file or folder): every frame, in order, decoded
  in capture's own thread only when a slot is free for it, so backpressure reaches the
  decoder; a restarted capture decodes the committed frames again and skips them.
* :class:`QueuedFeed` (timed batching: live feeds and several streams): a background
  reader applies the stream's delivery policy (``latest`` / ``drop_oldest`` / ``block``;
  a file among several streams is ``lossless``, read with ``block``).

Both count what they read and sent, so the capture statistics come out the same way for
every kind of run (:func:`feed_stats`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from pipeline.plan import RunPlan
from pipeline.sources.base import Frame, Source
from pipeline.sources.frame_reader import LatestFrameReader
from pipeline.stage_messages import FrameHandle

LOSSLESS = "lossless"  # the planner's delivery of a file or folder


class Feed:
    """One stream as capture reads it: its id, the next ``seq`` to send, and counters.

    ``get(timeout_s)`` returns ``(frame, dropped before it)`` or None; ``finished`` says
    nothing more will come (the source ended, or ``limit`` frames were sent)."""

    def __init__(self, stream_id: str, source: Source, seq: int, limit: int | None) -> None:
        self.id = stream_id
        self.source = source
        self.seq = seq  # the next frame's seq (a restarted capture resumes mid-stream)
        self.limit = limit  # source.max_frames: the stream ends at this seq
        self.sent = 0  # frames this process sent
        self.skipped = 0  # frames decoded again and passed over (a restarted lossless capture)

    @property
    def at_limit(self) -> bool:
        return self.limit is not None and self.seq >= self.limit

    @property
    def finished(self) -> bool:
        return self.at_limit or self._source_finished()

    def get(self, timeout_s: float) -> tuple[Frame, int] | None:
        return None if self.at_limit else self._get(timeout_s)

    def advance(self) -> None:
        """The frame just taken was sent as ``seq``."""
        self.seq += 1
        self.sent += 1

    @property
    def delivered(self) -> int:
        """Frames the source gave this process past the skipped ones (sent or dropped)."""
        raise NotImplementedError

    def _source_finished(self) -> bool:
        raise NotImplementedError

    def _get(self, timeout_s: float) -> tuple[Frame, int] | None:
        raise NotImplementedError

    def pop_events(self) -> list[dict[str, Any]]:
        """The source's status events since the last call, oldest first."""
        return []

    def close(self) -> None:
        self.source.close()


class FileFeed(Feed):
    """A file or folder decoded in capture's thread, one frame per free slot, nothing
    dropped. ``timer`` counts the decoding as the stage's busy time."""

    def __init__(self, stream_id: str, source: Source, seq: int, limit: int | None,
                 timer: Callable[[], AbstractContextManager[Any]]) -> None:
        super().__init__(stream_id, source, seq, limit)
        self._timer = timer
        self._frames: Iterator[Frame] | None = None
        self._ended = False

    @property
    def delivered(self) -> int:
        return self.sent

    def _source_finished(self) -> bool:
        return self._ended

    def _get(self, timeout_s: float) -> tuple[Frame, int] | None:
        if self._ended:
            return None
        with self._timer():
            if self._frames is None:
                self._frames = self.source.frames()
                for _ in range(self.seq):  # restarted: publish already has these
                    next(self._frames, None)
                self.skipped = self.seq
            frame = next(self._frames, None)
        self._ended = frame is None
        return None if frame is None else (frame, 0)


class QueuedFeed(Feed):
    """A stream read by a background thread through its delivery policy (see
    :mod:`pipeline.sources.frame_reader`); frames are dropped, never reordered."""

    def __init__(self, stream_id: str, source: Source, seq: int, limit: int | None,
                 delivery: str, capacity: int) -> None:
        super().__init__(stream_id, source, seq, limit)
        lossless = delivery == LOSSLESS
        self.skipped = seq if lossless else 0  # a live feed carries on where it is
        self.reader = LatestFrameReader(source, policy="block" if lossless else delivery, capacity=capacity,
                                        skip=self.skipped)

    @property
    def delivered(self) -> int:
        return self.reader.frames_read

    def _source_finished(self) -> bool:
        return self.reader.finished

    def _get(self, timeout_s: float) -> tuple[Frame, int] | None:
        return self.reader.get(timeout=timeout_s)

    def pop_events(self) -> list[dict[str, Any]]:
        return self.reader.pop_events()

    def close(self) -> None:
        self.reader.close()  # stops the thread, then closes the source


# -- pure helpers ------------------------------------------------------------------------
def stream_deliveries(plan: RunPlan, live_policy: str) -> list[tuple[str, str]]:
    """``(stream id, delivery)`` of every stream, as the planner decided (a plan without
    decisions: ``live_policy`` for live streams, lossless for the others)."""
    streams = plan.streams or [{"id": plan.stream_id, "info": plan.source}]
    delivery = plan.decisions.get("delivery", {})
    return [(s["id"], delivery.get(s["id"], live_policy if s["info"].get("live") else LOSSLESS)) for s in streams]


def resume_seq(progress: dict[str, Any], stream: str, delivery: str) -> int:
    """Where a restarted capture carries on (``progress``: publish's saved streams): files at
    the last frame publish committed (the ones after it are decoded and sent again), live
    feeds after the last published."""
    return int(progress.get(stream, {}).get("committed" if delivery == LOSSLESS else "next", 0))


def admission_interval_s(plan: RunPlan) -> float | None:
    """A live feed's frame interval, which times admissions (``SlotCredits.taken``); None
    when the plan has no admissions or the feed no frame rate."""
    fps = plan.source.get("fps")
    return fps[1] / fps[0] if plan.admissions() and fps and fps[0] > 0 else None


def frame_handle(frame: Frame, stream: str, seq: int, slot: int, gen: int, dropped: int) -> FrameHandle:
    """The handle of ``frame``, written into ``slot`` at generation ``gen``."""
    height, width = frame.image.shape[:2]
    tb = frame.time_base
    return FrameHandle(
        stream=stream, seq=seq, slot=slot, gen=gen, h=height, w=width, pts=frame.pts,
        tb=None if tb is None else (tb.numerator, tb.denominator),
        capture_ns=frame.capture_ns, dropped=dropped,
    )


def feed_stats(feeds: list[Feed]) -> dict[str, Any]:
    """Capture's counters over every feed: exact, every frame read was sent or dropped
    (frames skipped on a resume count as read and sent, as in the run before)."""
    stats: dict[str, Any] = {
        "frames_read": sum(f.skipped + f.delivered for f in feeds),
        "frames_dropped": sum(f.delivered - f.sent for f in feeds),
        "decode_errors": sum(int(getattr(f.source, "decode_errors", 0)) for f in feeds),
    }
    links = [s for s in (getattr(f.source, "status", None) for f in feeds) if s is not None]
    if links:
        stats["reconnects"] = sum(s.reconnects for s in links)
        stats["offline_s"] = round(sum(s.offline_s for s in links), 3)
    stats["streams"] = {f.id: _feed_counts(f) for f in feeds}  # the same, per stream (metrics)
    return stats


def _feed_counts(feed: Feed) -> dict[str, Any]:
    """One feed's counters, as :func:`feed_stats` counts them over every feed."""
    counts: dict[str, Any] = {"read": feed.skipped + feed.delivered, "dropped": feed.delivered - feed.sent,
                              "decode_errors": int(getattr(feed.source, "decode_errors", 0))}
    link = getattr(feed.source, "status", None)
    if link is not None:
        counts.update(reconnects=link.reconnects, offline_s=round(link.offline_s, 3))
    return counts
