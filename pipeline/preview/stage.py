"""The publish stage's side of the preview: a hub of the run's streams and its server,
fed with each published frame (its pixels only while someone watches)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pipeline.errors import ConfigError
from pipeline.preview import bind_error, preview_address
from pipeline.preview.hub import PreviewHub
from pipeline.preview.server import PreviewServer
from pipeline.sources.live_av import redact_url
from pipeline.transport.shm import RingOverwriteError


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

    def frame(self, ring: Any, result: Any, image: np.ndarray | None, totals: dict[str, int], slot: int,
              gen: int) -> None:
        """A frame was published: its stats always, its pixels (``image``: the overlay drawn,
        else the source frame in ``slot`` of ``ring``) when a viewer wants one now."""
        feed = self.hub.feeds.get(result.stream)
        if feed is None:
            return
        latency = (time.time_ns() - result.capture_ns) / 1e6 if result.capture_ns else None
        feed.record(totals["frames"], totals["dropped"], len(result.instances), latency)
        if not feed.wants_frame():
            return
        if image is None:  # no overlay drawn (--output none): the plain source frame
            image = np.array(ring.frame(slot, result.height, result.width))
            try:
                ring.check(slot, gen)
            except RingOverwriteError:
                return  # being rewritten: no preview of this frame
        feed.offer(image)

    def status(self, stream: str, event: str) -> None:
        feed = self.hub.feeds.get(stream)
        if feed is not None:
            feed.set_status(event)

    def close(self) -> None:
        self.server.stop()
