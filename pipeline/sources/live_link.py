"""One connection of a live PyAV source, and the timeline that joins its connections.

:class:`~pipeline.sources.live_av.LiveAVSource` opens a :class:`Connection` per outage-free
stretch of a feed. This module holds what concerns one connection: its failure types
(:class:`ConnectError` while opening, :class:`LinkLost` once open), :func:`read_frames`,
which turns a stalled or undecodable feed into :class:`LinkLost` within the read timeout,
and :class:`Timeline`, which makes the frames of successive connections look like one
source: the first connection's size, an index and timestamps that only grow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from pipeline.sources.av_frames import (
    av_error_reason,
    decode_packet,
    frame_rotation,
    frame_to_rgb,
    quarter_turns,
)
from pipeline.sources.base import Frame
from pipeline.sources.reconnect import ReconnectPolicy

__all__ = ["PERMANENT_ERRORS", "ConnectError", "LinkLost", "Connection", "read_frames", "Timeline"]

log = logging.getLogger(__name__)

# Errors that no retry can fix: the FFmpeg build lacks the protocol/format, or an option is wrong.
PERMANENT_ERRORS = tuple(
    getattr(av, name)
    for name in ("ProtocolNotFoundError", "DemuxerNotFoundError", "OptionNotFoundError")
    if hasattr(av, name)
)


class ConnectError(Exception):
    """One connection attempt failed; ``permanent`` when retrying cannot help.

    Raised by :meth:`LiveAVSource._open_container` implementations for failures FFmpeg does
    not see (e.g. a camera device that is missing): the source retries them like an outage.
    """

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class LinkLost(Exception):
    """The open connection stopped delivering frames (the text says why)."""


@dataclass
class Connection:
    """An open container and its video stream."""

    container: Any  # av InputContainer
    stream: Any  # av VideoStream
    first: Any  # the first decoded av.VideoFrame, not yet yielded (None once yielded)
    time_base: Fraction | None
    pts_shift: Fraction | None = None  # output pts = raw pts * time_base / out_tb + shift

    def close(self) -> None:
        """Close the container; a broken connection that fails to close is only logged."""
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close cleanly
            log.debug("closing a live container failed", exc_info=True)


def read_frames(
    container: Any,
    stream: Any,
    policy: ReconnectPolicy,
    stop: threading.Event,
    on_bad_packet: Callable[[], None],
    deadline: float | None = None,
) -> Iterator[Any]:
    """Decoded frames of one connection until ``stop`` is set; returns at end of stream.

    Raises :class:`LinkLost` when a read fails, blocks for ``policy.read_timeout_s``, or data
    comes without a decodable frame for that long; with a ``deadline`` (monotonic, while
    opening), also when no frame has decoded by then. A read that blocked for the whole read
    timeout means the link stalled (PyAV's timeout cut it short, and what it returns is
    truncated), so it counts as lost at once. Packets the decoder rejects are reported to
    ``on_bad_packet`` and skipped.
    """
    read_timeout_s = policy.read_timeout_s
    last_frame = time.monotonic()
    packets = container.demux(stream)
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            packet = next(packets)
        except StopIteration:
            return
        except (av.FFmpegError, OSError, ValueError) as exc:
            if time.monotonic() - t0 >= read_timeout_s - 0.01:
                raise LinkLost(f"no data for {read_timeout_s:g} s") from None
            raise LinkLost(av_error_reason(exc)) from None
        now = time.monotonic()
        if now - t0 >= read_timeout_s - 0.01:
            raise LinkLost(f"no data for {read_timeout_s:g} s")
        decoded = decode_packet(packet)
        if decoded is None:  # corrupt or lost data: counted, and the link is still up
            on_bad_packet()
            decoded = []
        if decoded:
            last_frame = now
        elif now - last_frame >= read_timeout_s:
            raise LinkLost(f"data but no decodable frame for {read_timeout_s:g} s")
        if deadline is not None and not decoded and now >= deadline:
            raise LinkLost(f"no decodable frame within {policy.open_timeout_s:g} s")
        yield from decoded


class Timeline:
    """Frames of successive connections as one source's frames.

    Every frame is given the size the source started with (upright; a reconnected feed
    whose size changed is scaled, so buffers sized from ``info()`` stay valid), the next
    index, and a timestamp in the first connection's time base that keeps increasing across
    reconnections: a new connection's timestamps are shifted to continue from the last frame
    plus the wall-clock gap.

    Args:
        width, height: the upright size of the first connection's frames.
        time_base: the first connection's time base (the output time base).
    """

    def __init__(self, width: int, height: int, time_base: Fraction) -> None:
        self.size = (width, height)
        self.time_base = time_base
        self.index = 0
        self._last_pts: int | None = None
        self._last_wall: float | None = None  # monotonic time of the last frame made

    def frame(self, av_frame: Any, conn: Connection) -> Frame:
        """The source's next frame from ``av_frame``, decoded on ``conn``."""
        now_ns = time.time_ns()
        turns = quarter_turns(frame_rotation(av_frame, conn.stream))
        out_w, out_h = self.size
        want_w, want_h = (out_h, out_w) if turns % 2 else (out_w, out_h)
        if (av_frame.width, av_frame.height) != (want_w, want_h):
            av_frame = av_frame.reformat(width=want_w, height=want_h)
        frame = Frame(
            image=frame_to_rgb(av_frame, turns),
            index=self.index,
            pts=self._pts(av_frame.pts, conn),
            time_base=self.time_base,
            capture_ns=now_ns,
        )
        self.index += 1
        return frame

    def _pts(self, raw: int | None, conn: Connection) -> int:
        out_tb = self.time_base
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
