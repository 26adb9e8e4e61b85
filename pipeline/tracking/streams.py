"""Tracking across a run's streams: one tracker and one frame clock per stream.

Streams never share anything: ids of one stream count from 1 whatever the others do. The
frame clock turns a frame's pts into seconds that only move forward, which is what the
trackers' lost-time rule and motion model need; it bridges a feed whose pts restart (a
reconnect) with the wall-clock gap between the two frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from pipeline.tracking.tracker import Assignment, Detections, StreamTracker, TrackerParams

__all__ = ["FrameClock", "RunTracking"]

_FALLBACK_FPS = 30.0  # only when a frame has neither pts nor capture time nor a stream rate


@dataclass
class FrameClock:
    """Seconds of frame time for one stream: pts × time base, kept monotonic."""

    offset: float = 0.0  # added to pts time after a pts reset
    last_t: float | None = None
    last_capture_ns: int = 0

    def time(self, seq: int, pts: int | None, time_base: Fraction | None, capture_ns: int,
             fps: float | None) -> float:
        """The frame's time in seconds; frames must come in order (the caller's ledger)."""
        rate = fps if fps and fps > 0 else _FALLBACK_FPS
        if pts is not None and time_base:
            raw = float(pts * time_base)
        elif capture_ns:
            raw = capture_ns / 1e9
        else:
            raw = seq / rate
        t = raw + self.offset
        if self.last_t is not None and t <= self.last_t:
            # pts went back (a reconnected feed starts again): carry on from the last frame
            # by the wall-clock gap if known, else by one frame period
            gap = (capture_ns - self.last_capture_ns) / 1e9 if capture_ns and self.last_capture_ns else 0.0
            gap = gap if gap > 0 else 1.0 / rate
            self.offset += self.last_t + gap - t
            t = self.last_t + gap
        self.last_t, self.last_capture_ns = t, capture_ns
        return t

    def state(self) -> dict[str, Any]:
        return {"offset": self.offset, "last_t": self.last_t, "last_capture_ns": self.last_capture_ns}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FrameClock:
        return cls(float(state["offset"]), state["last_t"], int(state["last_capture_ns"]))


@dataclass
class RunTracking:
    """Every stream's tracker and clock; created lazily per stream id."""

    params: TrackerParams = field(default_factory=TrackerParams)
    trackers: dict[str, StreamTracker] = field(default_factory=dict)
    clocks: dict[str, FrameClock] = field(default_factory=dict)

    def track(self, stream: str, seq: int, pts: int | None, time_base: Fraction | None, capture_ns: int,
              fps: float | None, frame_size: tuple[int, int], detections: Detections) -> Assignment:
        """Track ids and reported classes for one frame's detections."""
        tracker = self.trackers.get(stream)
        if tracker is None:
            tracker = self.trackers[stream] = StreamTracker(self.params, frame_size)
        clock = self.clocks.setdefault(stream, FrameClock())
        return tracker.update(clock.time(seq, pts, time_base, capture_ns, fps), detections)

    def stream_state(self, stream: str) -> dict[str, Any] | None:
        """One stream's tracker and clock as JSON values (None before its first frame)."""
        if stream not in self.trackers:
            return None
        return {"tracker": self.trackers[stream].state(), "clock": self.clocks[stream].state()}

    def restore(self, stream: str, state: dict[str, Any] | None) -> None:
        """Resume ``stream`` from :meth:`stream_state` (None: from scratch)."""
        self.trackers.pop(stream, None)
        self.clocks.pop(stream, None)
        if state is not None:
            self.trackers[stream] = StreamTracker.from_state(state["tracker"], self.params)
            self.clocks[stream] = FrameClock.from_state(state["clock"])
