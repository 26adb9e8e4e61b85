"""``--realtime``: play any source at its own frame rate, as a live feed would deliver it.

A recording standing in for a camera: frames are released at their presentation times and
the source reports itself live, so the pipeline applies the live delivery policy (latest
frame wins) exactly as it would for a real feed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace

from pipeline.sources.base import Frame, Source, SourceInfo


class PacedSource(Source):
    """Wraps a source; ``frames()`` sleeps until each frame's presentation time."""

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.uri = getattr(inner, "uri", "")
        if hasattr(inner, "render_on_demand"):
            # a synthetic scene played live: only the frames the pipeline takes are rendered
            inner.render_on_demand = True
        self._stop = threading.Event()

    def info(self) -> SourceInfo:
        return replace(self.inner.info(), live=True)

    def frames(self) -> Iterator[Frame]:
        origin: tuple[float, float] | None = None  # (wall clock, media seconds) of the first frame
        fps = self.inner.info().fps
        for index, frame in enumerate(self.inner.frames()):
            if frame.pts is not None and frame.time_base is not None:
                media_s = float(frame.pts * frame.time_base)
            else:
                media_s = index / float(fps or 30)
            if origin is None:
                origin = (time.monotonic(), media_s)
            delay = origin[0] + (media_s - origin[1]) - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            if self._stop.is_set():
                return
            frame.capture_ns = time.time_ns()  # "captured" when the feed delivers it
            yield frame

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self.inner.close()
