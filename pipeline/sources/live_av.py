"""The reconnecting PyAV reader behind every live source (network streams, cameras).

A subclass of :class:`LiveAVSource` says how to open its container (a URL: :mod:`~pipeline.
sources.stream`; a V4L2 device: :mod:`~pipeline.sources.camera`); the rest is shared, under
one :class:`~pipeline.sources.reconnect.ReconnectPolicy` (timeouts and backoff):

* **Opening** (``timeout=(open_timeout_s, read_timeout_s)``) reads up to the first decoded
  frame, which gives the exact frame size. A source that cannot be opened raises
  :class:`SourceError` naming the URI (password masked) and FFmpeg's reason once the open
  timeout has passed, unless ``wait_for_online=True``: then the constructor returns at once
  and ``info()`` / ``frames()`` wait, reconnecting with the backoff, until the source is up.
* **Losing the link** (a read error, a read blocked for ``read_timeout_s``, data without a
  decodable frame for that long, or the end of the stream: a server going away closes its
  connection) emits ``offline``, then a ``reconnecting`` event before each attempt (attempt
  number, jittered exponential delay), then ``online`` when a frame decodes again. When
  ``max_attempts`` per outage run out, ``eos`` is emitted and ``frames()`` raises
  :class:`SourceError`. A finite stream (one with a duration, e.g. an HTTP MP4) ends with
  ``eos`` instead, unless ``reconnect_on_eof=True``.
* **Frames** are upright RGB; size, ``index`` and ``pts`` stay continuous across
  reconnections (:class:`~pipeline.sources.live_link.Timeline`); ``capture_ns`` is the wall
  clock when the frame was decoded.
* **Stopping.** ``stop()`` (any thread) makes ``frames()`` return: at once during a backoff
  wait, within ``read_timeout_s`` / ``open_timeout_s`` during a blocking read or open
  (FFmpeg calls cannot be interrupted sooner). ``close()`` stops and releases the
  connection; a stopped source stays stopped.

Status events go to ``on_status`` and are kept in ``source.status.events``, with the
counters ``source.status.reconnects`` and ``offline_s`` (:mod:`pipeline.sources.reconnect`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av

from pipeline.sources.av_frames import (
    av_error_reason,
    budgeted_codec_threads,
    frame_rotation,
    nominal_fps,
    quarter_turns,
    to_fraction,
)
from pipeline.sources.base import Frame, Source, SourceError, SourceInfo
from pipeline.sources.live_link import (
    PERMANENT_ERRORS,
    ConnectError,
    Connection,
    LinkLost,
    Timeline,
    read_frames,
)
from pipeline.sources.reconnect import LinkStatus, ReconnectPolicy, StatusCallback

# ConnectError is re-exported: subclasses raise it from _open_container.
__all__ = ["LiveAVSource", "ConnectError", "redact_url"]


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class LiveAVSource(Source):
    """The reconnecting PyAV reader shared by the stream and camera sources (module docs).

    Subclasses implement :meth:`_open_container` (and may adjust :attr:`kind`,
    :meth:`_container_error`, :meth:`_open_error` and :meth:`_extra_info`).

    Args:
        uri: what the subclass opens (kept for messages, with its password masked).
        reconnect: timeouts and backoff (``None``: the :class:`ReconnectPolicy` defaults).
        on_status: callback for status events (see :mod:`pipeline.sources.reconnect`).
        stream_id: the stream id put into status events.
        wait_for_online: do not fail when the source is down at start; wait for it.
        reconnect_on_eof: reconnect when the stream ends (``None``: unless it has a duration).
        thread_type, thread_count: decoder threading (``"SLICE"`` adds no latency;
            ``thread_count=None``: the stage's codec thread budget).
    """

    kind = "stream"

    def __init__(
        self,
        uri: str,
        *,
        reconnect: ReconnectPolicy | None = None,
        on_status: StatusCallback | None = None,
        stream_id: str = "0",
        wait_for_online: bool = False,
        reconnect_on_eof: bool | None = None,
        thread_type: str = "SLICE",
        thread_count: int | None = None,
    ) -> None:
        self.uri = str(uri)
        policy = reconnect if reconnect is not None else ReconnectPolicy()
        if not policy.open_timeout_s > 0 or not policy.read_timeout_s > 0:
            raise SourceError("open_timeout_s and read_timeout_s must be > 0, "
                              f"got {policy.open_timeout_s} and {policy.read_timeout_s}")
        self.reconnect = policy
        self.open_timeout_s = float(policy.open_timeout_s)
        self.read_timeout_s = float(policy.read_timeout_s)
        try:
            self.backoff = policy.new_backoff()
        except ValueError as exc:
            raise SourceError(f"{self.kind} '{self.display_uri}': {exc}") from None
        self.status = LinkStatus(stream_id, on_status)
        self.reconnect_on_eof = reconnect_on_eof
        self.thread_type = thread_type
        # None: the stage's budget (see av_frames.budgeted_codec_threads)
        self.thread_count = budgeted_codec_threads() if thread_count is None else thread_count
        self.decode_errors = 0  # packets the decoder rejected (corrupt/lost data)
        self.frames_read = 0
        self._stop = threading.Event()
        self._io = threading.Lock()  # held while a connection is being used or replaced
        self._conn: Connection | None = None
        self._info: SourceInfo | None = None
        self._timeline: Timeline | None = None  # made when the source first comes online
        self._finite = False  # the stream reports a duration: EOF is the end, not an outage
        self._last_error = "not connected"
        self._ended = False
        self._end_lock = threading.Lock()

        try:
            conn = self._connect()
        except ConnectError as exc:
            if exc.permanent or not wait_for_online:
                raise SourceError(self._open_error(exc.reason)) from None
            self.status.offline(exc.reason)
            self._last_error = exc.reason
        else:
            self._conn = conn
            self._went_online(conn)

    # -- to implement ------------------------------------------------------------------------

    def _open_container(self) -> Any:
        """Open and return the av container (raise av/OS errors or ``ConnectError``)."""
        raise NotImplementedError

    def _container_error(self, exc: BaseException) -> str:
        """Reason text for an exception raised while opening."""
        return av_error_reason(exc)

    # -- public ------------------------------------------------------------------------------

    @property
    def display_uri(self) -> str:
        return redact_url(self.uri)

    @property
    def on_status(self) -> StatusCallback | None:
        return self.status.on_status

    @on_status.setter
    def on_status(self, callback: StatusCallback | None) -> None:
        self.status.on_status = callback

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Make :meth:`frames` return (thread-safe; see the module docs for how quickly)."""
        self._stop.set()

    def close(self) -> None:
        """Stop, emit ``eos`` (once) and release the connection if no reader holds it."""
        self.stop()
        if self._io.acquire(blocking=False):
            try:
                self._drop_connection()
            finally:
                self._io.release()
        # else: the reader owns the connection and closes it when it sees the stop flag.
        if self.status.state is not None:
            self._end("closed")

    def info(self) -> SourceInfo:
        """Size, frame rate and time base of the stream (waits for it if not online yet)."""
        if self._info is None:
            with self._io:
                if self._conn is None and self._info is None:
                    conn = self._reconnect_loop(self._last_error)
                    if conn is None:
                        raise SourceError(f"{self.kind} '{self.display_uri}' stopped before it came online")
                    self._conn = conn
        assert self._info is not None
        return self._info

    def frames(self) -> Iterator[Frame]:
        """Live frames, reconnecting as needed; returns when stopped or at a finite stream's end.

        Raises:
            SourceError: reconnection gave up (``max_attempts``) or failed permanently.
        """
        # The I/O lock is held while this generator runs and released while it is suspended
        # at a yield, so close() from the consumer's thread can release the connection at
        # once, while close() from another thread leaves it to the reader.
        self._io.acquire()
        try:
            yield from self._frames_locked()
        finally:
            try:
                if self._stop.is_set():
                    self._drop_connection()
                    self._end("stopped")
            finally:
                self._io.release()

    def _yield_unlocked(self, frame: Frame) -> Iterator[Frame]:
        self._io.release()
        try:
            yield frame
        finally:
            self._io.acquire()

    # -- connecting --------------------------------------------------------------------------

    def _open_error(self, reason: str) -> str:
        return f"cannot open {self.kind} '{self.display_uri}': {reason}"

    def _connect(self) -> Connection:
        """Open the container and decode up to the first frame (bounded by the open timeout)."""
        started = time.monotonic()
        try:
            container = self._open_container()
        except ConnectError:
            raise
        except PERMANENT_ERRORS as exc:
            raise ConnectError(self._container_error(exc), permanent=True) from None
        except (av.FFmpegError, OSError, ValueError) as exc:
            reason = self._container_error(exc)
            if time.monotonic() - started >= self.open_timeout_s * 0.95:
                reason = f"no answer within {self.open_timeout_s:g} s ({reason})"
            raise ConnectError(reason) from None
        try:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["none"]
                raise ConnectError(f"no video stream (streams found: {', '.join(kinds)})")
            stream = container.streams.best("video") or container.streams.video[0]
            stream.thread_type = self.thread_type
            stream.codec_context.thread_count = self.thread_count
            deadline = started + self.open_timeout_s + self.read_timeout_s
            decoded = self._decode(container, stream, deadline)
            try:
                first = next(decoded, None)
            finally:
                decoded.close()
            if first is None:
                raise ConnectError("the stream ended before its first frame")
            duration = container.duration
            self._finite = duration is not None and duration > 0
            return Connection(container, stream, first, to_fraction(stream.time_base))
        except LinkLost as exc:
            container.close()
            raise ConnectError(f"no frame: {exc}") from None
        except BaseException:
            container.close()
            raise

    def _went_online(self, conn: Connection) -> None:
        """Record the stream's description (first time) and emit ``online``."""
        first = conn.first
        turns = quarter_turns(frame_rotation(first, conn.stream))
        width, height = int(first.width), int(first.height)
        if turns % 2:
            width, height = height, width
        cc = conn.stream.codec_context
        detail = f"{width}x{height} {cc.name}"
        if self._timeline is None:
            # the first connection fixes the size and time base of every frame to come
            self._timeline = Timeline(width, height, conn.time_base or Fraction(1, 1_000_000))
            extra = {"kind": self.kind, "uri": self.display_uri, "container": conn.container.format.name,
                     "codec": cc.name, "pix_fmt": first.format.name,
                     "rotation": frame_rotation(first, conn.stream), **self._extra_info()}
            self._info = SourceInfo(width, height, fps=nominal_fps(conn.stream),
                                    time_base=self._timeline.time_base, live=True, extra=extra)
        elif (width, height) != self._timeline.size:
            out_w, out_h = self._timeline.size
            detail += f" (scaled to {out_w}x{out_h}, the size the source started with)"
        self.status.online(detail)

    def _extra_info(self) -> dict[str, Any]:
        return {}

    def _end(self, detail: str) -> None:
        """Emit ``eos`` once: the source is finished for good."""
        with self._end_lock:
            if self._ended:
                return
            self._ended = True
        self.status.eos(detail)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def _reconnect_loop(self, reason: str) -> Connection | None:
        """Retry with the backoff until connected (returns it), stopped (None) or out of attempts."""
        last = reason
        while not self._stop.is_set():
            delay = self.backoff.next_delay()
            if delay is None:
                attempts = self.backoff.attempts
                message = (
                    f"{self.kind} '{self.display_uri}' offline: gave up after {attempts} reconnect "
                    f"attempt{'s' if attempts != 1 else ''} (last error: {last})"
                )
                self._end(message)
                raise SourceError(message)
            self.status.reconnecting(self.backoff.attempts, delay, last)
            if self._stop.wait(delay):
                return None
            try:
                conn = self._connect()
            except ConnectError as exc:
                if exc.permanent:
                    self._end(exc.reason)
                    raise SourceError(self._open_error(exc.reason)) from None
                last = exc.reason
                continue
            if self._stop.is_set():
                conn.close()
                return None
            self.backoff.reset()
            self._went_online(conn)
            return conn
        return None

    # -- reading -----------------------------------------------------------------------------

    def _decode(self, container: Any, stream: Any, deadline: float | None = None) -> Iterator[Any]:
        return read_frames(container, stream, self.reconnect, self._stop, self._count_bad_packet, deadline)

    def _count_bad_packet(self) -> None:
        self.decode_errors += 1

    def _frames_locked(self) -> Iterator[Frame]:
        while not self._stop.is_set():
            if self._conn is None:
                conn = self._reconnect_loop(self._last_error)
                if conn is None:
                    return
                self._conn = conn
            conn = self._conn
            try:
                if conn.first is not None:
                    first, conn.first = conn.first, None
                    yield from self._yield_unlocked(self._to_frame(first, conn))
                    if self._stop.is_set() or self._conn is not conn:
                        continue
                decoded = self._decode(conn.container, conn.stream)
                try:
                    for av_frame in decoded:
                        yield from self._yield_unlocked(self._to_frame(av_frame, conn))
                        if self._stop.is_set() or self._conn is not conn:
                            break
                finally:
                    decoded.close()
                if self._stop.is_set() or self._conn is not conn:
                    continue
                reason = "end of stream"
                ended = True
            except LinkLost as exc:
                reason, ended = str(exc), False
            self._drop_connection()
            self._last_error = reason
            if ended and (self.reconnect_on_eof is False or (self.reconnect_on_eof is None and self._finite)):
                self._end("end of stream")
                return
            self.status.offline(reason)

    def _to_frame(self, av_frame: Any, conn: Connection) -> Frame:
        assert self._timeline is not None  # set by _went_online before any frame
        frame = self._timeline.frame(av_frame, conn)
        self.frames_read += 1
        return frame
