"""The latest frame and live stats of each previewed stream, shared between the publish
loop (one writer) and the HTTP handler threads (any number of viewers).

The writer never waits for a viewer: :meth:`StreamFeed.offer` swaps the "latest frame"
reference under a lock held for a few instructions, and wakes the viewers. Each viewer
waits on the feed's condition for a version newer than the one it last sent, then takes
the JPEG of the latest frame, encoded once (outside that lock) however many viewers there
are. A feed holds one raw frame and one JPEG at most (latest wins), so memory is bounded
whatever the viewers do. The writer hands frames only while a viewer is connected, and at
most one per ``min_interval_s``: without viewers the pipeline pays nothing.
"""

from __future__ import annotations

import io
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

MIN_INTERVAL_S = 0.1  # at most 10 preview frames a second per stream
JPEG_QUALITY = 80
FPS_WINDOW_S = 5.0
LATENCY_WINDOW = 50  # latency p50 over the last this many frames


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """An RGB ``[h, w, 3]`` uint8 image as JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class StreamFeed:
    """One stream's latest frame (raw and JPEG) and its live stats."""

    def __init__(self, stream_id: str, label: str, min_interval_s: float = MIN_INTERVAL_S) -> None:
        self.id, self.label = stream_id, label
        self.min_interval_s = min_interval_s
        self._cond = threading.Condition()
        self._encode_lock = threading.Lock()  # viewers encode one at a time; the writer never takes it
        self._raw: np.ndarray | None = None
        self._version = 0  # of the latest frame offered
        self._jpeg: tuple[int, bytes] | None = None  # (version, JPEG) of the latest encoded
        self._viewers = 0
        self._last_offer = -1e18
        self.closed = False
        self._times: deque[float] = deque()
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._stats: dict[str, Any] = {"frames": 0, "dropped": 0, "instances": 0, "status": None}

    # -- writer (the publish loop) --------------------------------------------------------
    def wants_frame(self, now: float | None = None) -> bool:
        """True if a viewer is connected and the last frame offered is old enough."""
        if self._viewers <= 0 or self.closed:
            return False
        return (time.monotonic() if now is None else now) - self._last_offer >= self.min_interval_s

    def offer(self, image: np.ndarray) -> None:
        """Make ``image`` (RGB, not modified afterwards by the caller) the latest frame."""
        with self._cond:
            self._raw = image
            self._version += 1
            self._last_offer = time.monotonic()
            self._cond.notify_all()

    def record(self, frames: int, dropped: int, instances: int, latency_ms: float | None) -> None:
        """A frame was published: the stream's totals so far and this frame's numbers."""
        now = time.monotonic()
        with self._cond:
            self._stats.update(frames=frames, dropped=dropped, instances=instances)
            self._times.append(now)
            while self._times and now - self._times[0] > FPS_WINDOW_S:
                self._times.popleft()
            if latency_ms is not None:
                self._latencies.append(latency_ms)

    def set_status(self, event: str) -> None:
        with self._cond:
            self._stats["status"] = event

    # -- viewers --------------------------------------------------------------------------
    @contextmanager
    def viewer(self) -> Iterator[None]:
        """While inside, frames are offered to this feed."""
        with self._cond:
            self._viewers += 1
        try:
            yield
        finally:
            with self._cond:
                self._viewers -= 1

    @property
    def viewers(self) -> int:
        return self._viewers

    @property
    def version(self) -> int:
        return self._version

    def next_jpeg(self, after: int, timeout: float) -> tuple[int, bytes] | None:
        """The latest frame as ``(version, JPEG)`` once its version is above ``after``
        (waiting at most ``timeout`` s); None on timeout, or once the feed is closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._version > after or self.closed, timeout) or self.closed:
                return None
        return self.latest_jpeg()

    def latest_jpeg(self) -> tuple[int, bytes] | None:
        """The latest frame as ``(version, JPEG)``, encoded once; None before the first."""
        with self._encode_lock:
            with self._cond:
                raw, version, cached = self._raw, self._version, self._jpeg
            if cached is not None and cached[0] == version or raw is None:
                return cached  # None before the first frame
            encoded = (version, encode_jpeg(raw))  # outside the condition: the writer goes on
            with self._cond:
                if self._jpeg is None or self._jpeg[0] < version:
                    self._jpeg = encoded
                    if self._version == version:
                        self._raw = None  # encoded: keep the JPEG only (until the next frame)
                return self._jpeg

    def stats(self) -> dict[str, Any]:
        """fps (recent), latency p50, frames, drops, instances of the last frame, status."""
        now = time.monotonic()
        with self._cond:
            times = [t for t in self._times if now - t <= FPS_WINDOW_S]
            latencies = list(self._latencies)
            stats = dict(self._stats)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        if stats["status"] is None:
            stats["status"] = "online" if stats["frames"] else "starting"
        return {"stream": self.id, "source": self.label, "fps": round(fps, 2),
                "latency_p50_ms": round(float(np.median(latencies)), 1) if latencies else None,
                "viewers": self._viewers, **stats}

    def close(self) -> None:
        """Wake every viewer: the feed ends."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class PreviewHub:
    """The feeds of a run's streams, by stream id."""

    def __init__(self, streams: Sequence[tuple[str, str]], min_interval_s: float = MIN_INTERVAL_S) -> None:
        self.feeds = {sid: StreamFeed(sid, label, min_interval_s) for sid, label in streams}

    def close(self) -> None:
        for feed in self.feeds.values():
            feed.close()
