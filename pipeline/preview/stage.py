"""The publish stage's side of the preview: a hub of the run's streams and its server,
fed with each published frame (its pixels only while someone watches)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.errors import ConfigError
from pipeline.preview import bind_error, preview_address
from pipeline.preview.hub import PreviewHub
from pipeline.preview.server import PreviewServer
from pipeline.sources.live_av import redact_url


class PublishPreview:
    """``observability.preview`` in the publish stage: :meth:`open` serves it (None when off)."""

    def __init__(self, address: str, allow_remote: bool, streams: list[dict[str, Any]]) -> None:
        host, port = preview_address(address, allow_remote)
        self.hub = PreviewHub([(s["id"], redact_url(str(s["uri"]))) for s in streams])
        self.server = PreviewServer(self.hub, host, port)
        try:
            self.server.start()
        except (OSError, OverflowError) as err:
            raise ConfigError(bind_error(address, err)) from None

    @classmethod
    def open(cls, config: Any, plan: Any) -> PublishPreview | None:
        address = config.observability.preview
        return None if address is None else cls(address, config.output.allow_remote, plan.streams)

    @property
    def url(self) -> str:
        return self.server.url

    def frame(self, result: Any, image: np.ndarray | Callable[[], np.ndarray | None], totals: dict[str, int]) -> None:
        """A frame was published: its stats always, its pixels when a viewer wants one now
        (``image``: the overlay drawn, or a function returning the source frame, None if it
        is gone)."""
        feed = self.hub.feeds.get(result.stream)
        if feed is None:
            return
        latency = (time.time_ns() - result.capture_ns) / 1e6 if result.capture_ns else None
        feed.record(totals["frames"], totals["dropped"], len(result.instances), latency)
        if not feed.wants_frame():
            return
        pixels = image() if callable(image) else image
        if pixels is not None:
            feed.offer(pixels)

    def status(self, stream: str, event: str) -> None:
        feed = self.hub.feeds.get(stream)
        if feed is not None:
            feed.set_status(event)

    def close(self) -> None:
        self.server.stop()
