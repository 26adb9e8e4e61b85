"""Live network streams (RTSP, RTMP, HTTP, UDP, SRT, TCP, ...) decoded with PyAV, with reconnection.

:class:`StreamSource` opens anything FFmpeg can read from a URL::

    src = open_source("rtsp://user:pass@cam.local:554/stream1", on_status=print)
    for frame in src.frames():   # never ends by itself: the stream is reconnected
        ...

How a live source opens, loses its link, reconnects, times its frames and stops is shared
with the camera source and described in :mod:`pipeline.sources.live_av`; the timeouts and
the backoff come as one :class:`~pipeline.sources.reconnect.ReconnectPolicy` (``reconnect=``;
:func:`~pipeline.sources.open_source` also takes its fields as loose keywords). What is
particular to network streams:

* **Options.** RTSP goes over TCP by default (``transport="udp"`` etc. to change it);
  ``fflags=nobuffer`` (``low_latency``, on except for http(s)) drops what the probe read, so
  a feed starts at its newest key frame rather than with a burst of stale frames; the probe is
  limited to 0.5 s (``analyzeduration``) so opening is quick. ``av_options`` adds or
  overrides any FFmpeg option.
* **Finite streams.** One that reports a duration (e.g. an HTTP MP4) ends with ``eos``
  instead of being replayed, unless ``reconnect_on_eof=True``.
* **Passwords** in the URL are masked (:func:`redact_url`) in every message and event.

Live delivery (latest / drop_oldest / block) is :class:`~pipeline.sources.frame_reader.
LatestFrameReader`, re-exported here for its existing importers.
"""

from __future__ import annotations

from typing import Any

import av

from pipeline.sources import NETWORK_SCHEMES
from pipeline.sources.av_frames import av_error_reason
from pipeline.sources.base import SourceError

# Re-exported: these lived here before and are imported from here (the capture stage, tests).
from pipeline.sources.frame_reader import LIVE_POLICIES, LatestFrameReader
from pipeline.sources.live_av import LiveAVSource, redact_url
from pipeline.sources.live_options import live_options

__all__ = [
    "StreamSource",
    "LiveAVSource",
    "LatestFrameReader",
    "LIVE_POLICIES",
    "redact_url",
    "STREAM_SCHEMES",
]

STREAM_SCHEMES = NETWORK_SCHEMES  # the schemes open_source() sends here

_RTSP_TRANSPORTS = ("tcp", "udp", "udp_multicast", "http", "https")


class StreamSource(LiveAVSource):
    """A network stream FFmpeg can open (``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``, ...).

    Args:
        uri: the stream URL, passed to FFmpeg unchanged (its query string is the server's).
        transport: RTSP lower transport, ``"tcp"`` (default), ``"udp"``,
            ``"udp_multicast"`` or ``"http"``; only for ``rtsp(s)://``.
        low_latency: ``fflags=nobuffer``: packets read while probing the stream are dropped,
            so a live feed starts at its newest key frame instead of a burst of stale frames
            (``None``: on, except for ``http(s)://``, where a served file would lose its
            first frames).
        av_options: extra FFmpeg options (strings), overriding the ones above.
        reconnect, on_status, stream_id, wait_for_online, reconnect_on_eof, thread_type,
            thread_count: passed on (``live``) to :class:`~pipeline.sources.live_av.
            LiveAVSource`, as documented there (the signature shows them: :func:`~pipeline.
            sources.live_options.live_options`).
    """

    kind = "stream"

    @live_options()
    def __init__(
        self,
        uri: str,
        *,
        transport: str | None = None,
        low_latency: bool | None = None,
        av_options: dict[str, Any] | None = None,
        **live: Any,
    ) -> None:
        uri = str(uri)
        self.scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
        if transport is not None and self.scheme not in ("rtsp", "rtsps"):
            raise SourceError(f"option transport applies to rtsp:// streams only, not '{self.scheme}://'")
        if transport is not None and transport not in _RTSP_TRANSPORTS:
            raise SourceError(f"unknown RTSP transport {transport!r} ({', '.join(_RTSP_TRANSPORTS)})")
        self.transport = transport or ("tcp" if self.scheme in ("rtsp", "rtsps") else None)
        options: dict[str, str] = {"analyzeduration": "500000"}
        if self.transport:
            options["rtsp_transport"] = self.transport
        if low_latency is None:
            # nobuffer drops the packets read while probing: no stale burst at the start of a
            # live feed (the first frame is the next key frame), but a file served over HTTP
            # would lose its first GOP.
            low_latency = self.scheme not in ("http", "https")
        if low_latency:
            options["fflags"] = "nobuffer"
        if self.scheme == "udp":
            options["overrun_nonfatal"] = "1"  # a full socket buffer drops data, not the stream
        options.update({str(k): str(v) for k, v in (av_options or {}).items()})
        self.av_options = options
        super().__init__(uri, **live)

    def _open_container(self) -> Any:
        return av.open(
            self.uri,
            mode="r",
            options=dict(self.av_options),
            timeout=(self.open_timeout_s, self.read_timeout_s),
            metadata_errors="ignore",
        )

    def _container_error(self, exc: BaseException) -> str:
        if isinstance(exc, getattr(av, "ProtocolNotFoundError", ())):
            return f"protocol '{self.scheme}' is not supported by this FFmpeg build (PyAV's)"
        return av_error_reason(exc)

    def _extra_info(self) -> dict[str, Any]:
        return {"transport": self.transport, "av_options": dict(self.av_options)}
