"""Live network streams (RTSP, RTMP, HTTP, UDP, SRT, TCP, ...) decoded with PyAV, with reconnection.

:class:`StreamSource` opens anything FFmpeg can read from a URL::

    src = open_source("rtsp://user:pass@cam.local:554/stream1", on_status=print)
    for frame in src.frames():   # never ends by itself: the stream is reconnected
        ...

Behaviour:

* **Opening.** The URL is opened with ``av.open(url, options, timeout=(open_timeout_s,
  read_timeout_s))`` and read until the first frame decodes, which gives the exact frame
  size. A stream that cannot be opened raises :class:`SourceError` naming the URL
  (password masked) and FFmpeg's reason once the open timeout has passed, unless
  ``wait_for_online=True``: then the constructor returns at once and :meth:`info` /
  :meth:`frames` wait, reconnecting with the backoff, until the stream is up.
* **Options.** RTSP goes over TCP by default (``transport="udp"`` etc. to change it);
  ``fflags=nobuffer`` (``low_latency``, on except for http(s)) drops what the probe read, so
  a feed starts at its newest key frame rather than with a burst of stale frames; the probe is
  limited to 0.5 s (``analyzeduration``) so opening is quick. ``av_options`` adds or
  overrides any FFmpeg option.
* **Losing the link.** A read error, a read that blocks longer than ``read_timeout_s``, a
  stream that sends data but nothing decodable for ``read_timeout_s``, or the end of the
  stream (a server going away closes its connection) emit ``offline`` and start
  reconnecting: before each attempt a ``reconnecting`` event with the attempt number and
  the jittered exponential delay (:class:`~pipeline.sources.reconnect.Backoff`), then
  ``online`` when a frame decodes again, and frames resume. ``max_attempts`` bounds the
  attempts per outage; when they run out an ``eos`` event is emitted and ``frames()``
  raises :class:`SourceError`. A finite stream (one that reports a duration, e.g. an HTTP
  MP4) ends with ``eos`` instead of being replayed, unless ``reconnect_on_eof=True``.
* **Frames** are upright RGB like every source; ``index`` keeps increasing across
  reconnections; ``capture_ns`` is the wall clock when the frame was decoded; ``pts`` are
  in the time base of the first connection and stay increasing across reconnections (a new
  connection's timestamps are shifted to continue from the last frame plus the wall-clock
  gap). Frames of a reconnected stream whose size changed are scaled to the size
  :meth:`info` reported, so buffers sized from it stay valid (noted in the ``online``
  event's detail).
* **Stopping.** :meth:`stop` (any thread) makes ``frames()`` return: at once during a
  backoff wait, within ``read_timeout_s`` / ``open_timeout_s`` during a blocking read or
  open (FFmpeg calls cannot be interrupted sooner). :meth:`close` stops and releases the
  connection; a stopped source stays stopped.

* **Live delivery.** :class:`LatestFrameReader` runs ``frames()`` in a thread and hands the
  consumer only the newest frame with the number skipped before it, so a slow consumer never
  makes latency grow, and queues the status events for the consumer's thread.

Status events (``online``, ``offline``, ``reconnecting``, ``eos``) go to ``on_status`` and
are kept in ``source.status.events``; counters are ``source.status.reconnects`` and
``source.status.offline_s`` (see :mod:`pipeline.sources.reconnect`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av

from pipeline.sources.base import Frame, Source, SourceError, SourceInfo
from pipeline.sources.reconnect import Backoff, LinkStatus, StatusCallback
from pipeline.sources.video_file import (
    _frame_rotation,
    _quarter_turns,
    _reason,
    _to_fraction,
    budgeted_codec_threads,
    frame_to_rgb,
)

__all__ = ["StreamSource", "LiveAVSource", "LatestFrameReader", "redact_url", "STREAM_SCHEMES"]

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "rtp", "srt", "tcp")

# Errors that no retry can fix: the FFmpeg build lacks the protocol/format, or an option is wrong.
_PERMANENT = tuple(
    getattr(av, name)
    for name in ("ProtocolNotFoundError", "DemuxerNotFoundError", "OptionNotFoundError")
    if hasattr(av, name)
)


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


class _ConnectError(Exception):
    """One connection attempt failed; ``permanent`` when retrying cannot help."""

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class _LinkLost(Exception):
    """The open connection stopped delivering frames."""


@dataclass
class _Connection:
    container: Any  # av InputContainer
    stream: Any  # av VideoStream
    first: Any  # the first decoded av.VideoFrame, not yet yielded (None once yielded)
    time_base: Fraction | None
    pts_shift: Fraction | None = None  # output pts = raw pts * time_base / out_tb + shift

    def close(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close cleanly
            log.debug("closing a live container failed", exc_info=True)


class LiveAVSource(Source):
    """The reconnecting PyAV reader shared by :class:`StreamSource` and the camera source.

    Subclasses implement :meth:`_open_container` (and may adjust :attr:`kind`).
    """

    kind = "stream"

    def __init__(
        self,
        uri: str,
        *,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        backoff_factor: float = 2.0,
        backoff_jitter: float = 0.2,
        backoff_seed: int | None = None,
        on_status: StatusCallback | None = None,
        stream_id: str = "0",
        wait_for_online: bool = False,
        reconnect_on_eof: bool | None = None,
        thread_type: str = "SLICE",
        thread_count: int | None = None,
    ) -> None:
        self.uri = str(uri)
        if not open_timeout_s > 0 or not read_timeout_s > 0:
            raise SourceError(
                f"open_timeout_s and read_timeout_s must be > 0, got {open_timeout_s} and {read_timeout_s}"
            )
        self.open_timeout_s = float(open_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        try:
            self.backoff = backoff or Backoff(
                backoff_initial_s, backoff_max_s, backoff_factor, backoff_jitter, max_attempts, seed=backoff_seed
            )
        except ValueError as exc:
            raise SourceError(f"{self.kind} '{self.display_uri}': {exc}") from None
        if backoff is not None and max_attempts is not None:
            self.backoff.max_attempts = max_attempts
        self.status = LinkStatus(stream_id, on_status)
        self.reconnect_on_eof = reconnect_on_eof
        self.thread_type = thread_type
        # None: the stage's budget (see video_file.budgeted_codec_threads)
        self.thread_count = budgeted_codec_threads() if thread_count is None else thread_count
        self.decode_errors = 0  # packets the decoder rejected (corrupt/lost data)
        self.frames_read = 0
        self._stop = threading.Event()
        self._io = threading.Lock()  # held while a connection is being used or replaced
        self._conn: _Connection | None = None
        self._info: SourceInfo | None = None
        self._index = 0
        self._last_pts: int | None = None
        self._last_wall: float | None = None  # monotonic time of the last yielded frame
        self._size: tuple[int, int] | None = None  # (width, height) every frame is given
        self._finite = False  # the stream reports a duration: EOF is the end, not an outage
        self._last_error = "not connected"
        self._ended = False
        self._end_lock = threading.Lock()

        try:
            conn = self._connect()
        except _ConnectError as exc:
            if exc.permanent or not wait_for_online:
                raise SourceError(self._open_error(exc.reason)) from None
            self.status.offline(exc.reason)
            self._last_error = exc.reason
        else:
            self._conn = conn
            self._went_online(conn)

    # -- to implement ------------------------------------------------------------------------

    def _open_container(self) -> Any:
        """Open and return the av container (raise av/OS errors or ``_ConnectError``)."""
        raise NotImplementedError

    def _container_error(self, exc: BaseException) -> str:
        """Reason text for an exception raised while opening."""
        return _reason(exc)

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

    def _connect(self) -> _Connection:
        """Open the container and decode up to the first frame (bounded by the open timeout)."""
        started = time.monotonic()
        try:
            container = self._open_container()
        except _ConnectError:
            raise
        except _PERMANENT as exc:
            raise _ConnectError(self._container_error(exc), permanent=True) from None
        except (av.FFmpegError, OSError, ValueError) as exc:
            reason = self._container_error(exc)
            if time.monotonic() - started >= self.open_timeout_s * 0.95:
                reason = f"no answer within {self.open_timeout_s:g} s ({reason})"
            raise _ConnectError(reason) from None
        try:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["none"]
                raise _ConnectError(f"no video stream (streams found: {', '.join(kinds)})")
            stream = container.streams.best("video") or container.streams.video[0]
            stream.thread_type = self.thread_type
            stream.codec_context.thread_count = self.thread_count
            deadline = started + self.open_timeout_s + self.read_timeout_s
            decoded = self._decode(container, stream, deadline=deadline)
            try:
                first = next(decoded, None)
            finally:
                decoded.close()
            if first is None:
                raise _ConnectError("the stream ended before its first frame")
            duration = container.duration
            self._finite = duration is not None and duration > 0
            return _Connection(container, stream, first, _to_fraction(stream.time_base))
        except _LinkLost as exc:
            container.close()
            raise _ConnectError(f"no frame: {exc}") from None
        except BaseException:
            container.close()
            raise

    def _went_online(self, conn: _Connection) -> None:
        """Record the stream's description (first time) and emit ``online``."""
        first = conn.first
        turns = _quarter_turns(_frame_rotation(first, conn.stream))
        width, height = int(first.width), int(first.height)
        if turns % 2:
            width, height = height, width
        cc = conn.stream.codec_context
        detail = f"{width}x{height} {cc.name}"
        if self._info is None:
            self._size = (width, height)
            fps = (
                _to_fraction(conn.stream.average_rate)
                or _to_fraction(conn.stream.guessed_rate)
                or _to_fraction(getattr(conn.stream, "base_rate", None))
            )
            self._info = SourceInfo(
                width=width,
                height=height,
                fps=fps,
                frame_count=None,
                time_base=conn.time_base or Fraction(1, 1_000_000),
                live=True,
                extra={
                    "kind": self.kind,
                    "uri": self.display_uri,
                    "container": conn.container.format.name,
                    "codec": cc.name,
                    "pix_fmt": first.format.name,
                    "rotation": _frame_rotation(first, conn.stream),
                    **self._extra_info(),
                },
            )
        elif (width, height) != self._size:
            detail += f" (scaled to {self._size[0]}x{self._size[1]}, the size the source started with)"
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

    def _reconnect_loop(self, reason: str) -> _Connection | None:
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
            except _ConnectError as exc:
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
        """Decoded frames of one connection; raises ``_LinkLost``, returns at end of stream.

        A read that blocked for the whole read timeout means the link stalled (PyAV's
        timeout cut it short, and what it returns is truncated), so it counts as lost at once.
        """
        last_frame = time.monotonic()
        packets = container.demux(stream)
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.FFmpegError, OSError, ValueError) as exc:
                if time.monotonic() - t0 >= self.read_timeout_s - 0.01:
                    raise _LinkLost(f"no data for {self.read_timeout_s:g} s") from None
                raise _LinkLost(_reason(exc)) from None
            now = time.monotonic()
            if now - t0 >= self.read_timeout_s - 0.01:
                raise _LinkLost(f"no data for {self.read_timeout_s:g} s")
            try:
                decoded = packet.decode()
            except EOFError:
                decoded = []
            except (av.FFmpegError, ValueError):
                self.decode_errors += 1
                decoded = []
            if decoded:
                last_frame = now
            elif now - last_frame >= self.read_timeout_s:
                raise _LinkLost(f"data but no decodable frame for {self.read_timeout_s:g} s")
            if deadline is not None and not decoded and now >= deadline:
                raise _LinkLost(f"no decodable frame within {self.open_timeout_s:g} s")
            yield from decoded

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
            except _LinkLost as exc:
                reason, ended = str(exc), False
            self._drop_connection()
            self._last_error = reason
            if ended and (self.reconnect_on_eof is False or (self.reconnect_on_eof is None and self._finite)):
                self._end("end of stream")
                return
            self.status.offline(reason)

    def _to_frame(self, av_frame: Any, conn: _Connection) -> Frame:
        now_ns = time.time_ns()
        turns = _quarter_turns(_frame_rotation(av_frame, conn.stream))
        assert self._size is not None and self._info is not None
        out_w, out_h = self._size
        want_w, want_h = (out_h, out_w) if turns % 2 else (out_w, out_h)
        if (av_frame.width, av_frame.height) != (want_w, want_h):
            av_frame = av_frame.reformat(width=want_w, height=want_h)
        image = frame_to_rgb(av_frame, turns)
        frame = Frame(
            image=image,
            index=self._index,
            pts=self._out_pts(av_frame.pts, conn),
            time_base=self._info.time_base,
            capture_ns=now_ns,
        )
        self._index += 1
        self.frames_read += 1
        return frame

    def _out_pts(self, raw: int | None, conn: _Connection) -> int:
        """Timestamps in the first connection's time base, increasing across reconnections."""
        assert self._info is not None and self._info.time_base is not None
        out_tb = self._info.time_base
        now = time.monotonic()
        gap = round(Fraction(now - self._last_wall) / out_tb) if self._last_wall is not None else 0
        self._last_wall = now
        if raw is None or conn.time_base is None:
            pts = (self._last_pts + max(1, gap)) if self._last_pts is not None else 0
        else:
            scaled = Fraction(raw) * conn.time_base / out_tb
            if conn.pts_shift is None:
                # First frame of a connection: the first connection keeps the stream's own
                # timestamps; later ones continue from the last frame plus the wall-clock gap.
                target = scaled if self._last_pts is None else self._last_pts + max(1, gap)
                conn.pts_shift = target - scaled
            pts = round(scaled + conn.pts_shift)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts


class StreamSource(LiveAVSource):
    """A network stream FFmpeg can open (``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``, ...).

    Args:
        uri: the stream URL, passed to FFmpeg unchanged (its query string is the server's).
        open_timeout_s: how long opening (connect, handshake, probe) may take.
        read_timeout_s: how long a read may block before the link counts as lost.
        transport: RTSP lower transport, ``"tcp"`` (default), ``"udp"``,
            ``"udp_multicast"`` or ``"http"``; only for ``rtsp(s)://``.
        low_latency: ``fflags=nobuffer``: packets read while probing the stream are dropped,
            so a live feed starts at its newest key frame instead of a burst of stale frames
            (``None``: on, except for ``http(s)://``, where a served file would lose its
            first frames).
        av_options: extra FFmpeg options (strings), overriding the ones above.
        max_attempts: reconnect attempts per outage before giving up (``None``: forever).
        backoff: a :class:`Backoff` to use, or its parameters ``backoff_initial_s``,
            ``backoff_max_s``, ``backoff_factor``, ``backoff_jitter``, ``backoff_seed``.
        on_status: callback for status events (see :mod:`pipeline.sources.reconnect`).
        stream_id: the stream id put into status events.
        wait_for_online: do not fail when the stream is down at start; wait for it.
        reconnect_on_eof: reconnect when the stream ends (``None``: unless it has a duration).
        thread_type, thread_count: decoder threading (``"SLICE"`` adds no latency).
    """

    kind = "stream"

    def __init__(
        self,
        uri: str,
        *,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        transport: str | None = None,
        low_latency: bool | None = None,
        av_options: dict[str, Any] | None = None,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        backoff_factor: float = 2.0,
        backoff_jitter: float = 0.2,
        backoff_seed: int | None = None,
        on_status: StatusCallback | None = None,
        stream_id: str = "0",
        wait_for_online: bool = False,
        reconnect_on_eof: bool | None = None,
        thread_type: str = "SLICE",
        thread_count: int | None = None,
    ) -> None:
        uri = str(uri)
        self.scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
        if transport is not None and self.scheme not in ("rtsp", "rtsps"):
            raise SourceError(f"option transport applies to rtsp:// streams only, not '{self.scheme}://'")
        if transport is not None and transport not in ("tcp", "udp", "udp_multicast", "http", "https"):
            raise SourceError(f"unknown RTSP transport {transport!r} (tcp, udp, udp_multicast, http, https)")
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
        super().__init__(
            uri,
            open_timeout_s=open_timeout_s,
            read_timeout_s=read_timeout_s,
            max_attempts=max_attempts,
            backoff=backoff,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            backoff_factor=backoff_factor,
            backoff_jitter=backoff_jitter,
            backoff_seed=backoff_seed,
            on_status=on_status,
            stream_id=stream_id,
            wait_for_online=wait_for_online,
            reconnect_on_eof=reconnect_on_eof,
            thread_type=thread_type,
            thread_count=thread_count,
        )

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
        return _reason(exc)

    def _extra_info(self) -> dict[str, Any]:
        return {"transport": self.transport, "av_options": dict(self.av_options)}


LIVE_POLICIES = ("latest", "drop_oldest", "block")


class LatestFrameReader:
    """Reads a live source in a background thread and applies the live delivery policy.

    Policies (frames may be dropped, never reordered):

    * ``latest`` (default): keep only the newest frame; the consumer never falls behind the
      feed, FFmpeg's and the kernel's buffers never fill up (which is what makes latency
      grow on slow consumers);
    * ``drop_oldest``: keep the newest ``capacity`` frames, dropping the oldest when full;
    * ``block``: keep up to ``capacity`` frames and stop reading when full (nothing dropped
      here; the feed's own buffers absorb the difference, so latency can grow).

    The consumer's loop keeps running (heartbeats, drain requests) while the source waits
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
    """

    def __init__(
        self, source: Source, name: str = "segstream-live-reader", policy: str = "latest", capacity: int = 1,
        skip: int = 0,
    ) -> None:
        if policy not in LIVE_POLICIES:
            raise ValueError(f"unknown live policy {policy!r} (choose from {', '.join(LIVE_POLICIES)})")
        self.source = source
        self.policy = policy
        self.capacity = 1 if policy == "latest" else max(1, capacity)
        self.dropped_total = 0
        self.frames_read = 0
        self.skip = skip  # frames at the start to discard (a restarted capture resuming a file)
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._queue: deque[tuple[Frame, int]] = deque()  # (frame, frames dropped before it)
        self._dropped = 0  # dropped since the last queued frame
        self._done = False
        self._stopping = False
        self._events: list[dict[str, Any]] = []
        status = getattr(source, "status", None)
        if status is not None:
            self._events.extend(dict(e) for e in status.events)  # what happened before us
            status.on_status = self._queue_event
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

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
                    if self.policy == "block":
                        while len(self._queue) >= self.capacity and not self._stopping:
                            self._cond.wait(0.1)
                    elif len(self._queue) >= self.capacity:
                        _, carried = self._queue.popleft()  # drop the oldest waiting frame
                        self.dropped_total += 1
                        if self._queue:  # its drops now precede the next frame in line
                            head, head_carried = self._queue[0]
                            self._queue[0] = (head, head_carried + carried + 1)
                        else:
                            self._dropped += carried + 1
                    self._queue.append((frame, self._dropped))
                    self._dropped = 0
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
            return self._done and not self._queue

    def get(self, timeout: float | None = None) -> tuple[Frame, int] | None:
        """The newest frame not yet taken and how many frames were skipped before it.

        Waits up to ``timeout`` seconds (``None``: until a frame or the end); returns
        ``None`` on timeout or at the end. Raises the source's error after the last frame.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue and not self._done:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._queue:
                item = self._queue.popleft()
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
            self._queue.clear()  # closed: nobody takes them any more
        return not alive

    def __enter__(self) -> LatestFrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
