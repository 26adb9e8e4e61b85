"""What every stage process shares: sockets to the supervisor, heartbeats, busy timing,
blocking sends that stay responsive, the shared-memory ring, and the frame loop.

Stages exchange the typed messages of :mod:`pipeline.stage_messages`: a frame message names
the frame's ring slot (its ``handle``: stream, seq, slot, generation, size, timestamps), and
:class:`~pipeline.stage_messages.EndOfStream` ends the stream. Each stage relays end-of-
stream (and in-band status) after its last frame and reports its statistics to the
supervisor, then keeps serving until the supervisor says ``exit``: after a stage restart,
frames in flight are replayed through every stage.

A frame whose ring slot has since been rewritten (a replayed duplicate, or a frame of a
capture process that died) is *stale*: stages drop it and count it, never use it.

:meth:`Stage.loop` is the loop of a stage that turns one frame message into one other:
receive, relay non-frames in order, drop stale frames, take in inline pixels (tcp hops),
``process`` (counted as busy time), forward. Preprocess and postprocess implement only
``decode_frame`` and ``process``; capture, infer (batches) and publish (the ledger) have
loops of their own built from the same parts.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import zmq

from pipeline.plan import RunPlan
from pipeline.resources import apply_budget
from pipeline.stage_messages import (
    Control,
    ControlKind,
    DataMessage,
    EndOfStream,
    Event,
    EventKind,
    FrameHandle,
    FrameMessage,
    InlinePixels,
    MessageError,
    Status,
    decode,
)
from pipeline.transport import sockets
from pipeline.transport.shm import FrameRing, RingOverwriteError

_TRACE = bool(os.environ.get("SEGSTREAM_TRACE"))  # log every stage message to stderr
POLL_MS = 100  # granularity of heartbeats / stop checks while waiting
log = logging.getLogger(__name__)


class StopRequested(Exception):
    """The supervisor asked for an immediate stop (abort, not drain)."""


class Stage:
    """Base class: subclasses implement ``setup`` and either ``decode_frame`` and
    ``process`` (one frame in, one out: the loop here does the rest) or ``loop``."""

    name = "stage"
    upstream: zmq.Socket  # set in ``setup`` by stages that use :meth:`loop`
    downstream: zmq.Socket

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan
        self.config = plan.pipeline_config()
        self.ctx = zmq.Context()
        self.events = sockets.push(self.ctx, plan.endpoints["events"], hwm=1000)
        self.control = sockets.subscriber(self.ctx, plan.endpoints["control"])
        self.ring = FrameRing.attach(plan.ring_name)
        self.stats: dict[str, Any] = {"busy_s": 0.0, "stale_dropped": 0}
        self.drain_requested = False
        self.exit_requested = False
        self.start_requested = False
        self.replay_requested = False  # capture: a downstream stage was restarted
        self._heartbeat_every = self.config.transport.heartbeat_s
        self._last_heartbeat = 0.0
        self._cpu_at_ready = 0.0

    # -- lifecycle -----------------------------------------------------------------------
    def setup(self) -> None:
        """Open sockets, load models (runs before ``ready`` is reported)."""

    def warm_up(self) -> None:
        """Run the frame path once on a blank frame (runs before ``ready`` is reported), so
        first-call costs (kernel selection, lazy library loading, allocator growth) are paid
        before the first real frame rather than added to its latency."""

    def decode_frame(self, header: dict[str, Any], buffers: Sequence[Any]) -> FrameMessage:
        """The frame message of this stage's upstream hop, from a received header and buffers."""
        raise NotImplementedError

    def process(self, message: FrameMessage) -> FrameMessage | None:
        """One frame's work (busy time); the message to forward, or None for nothing."""
        raise NotImplementedError

    def loop(self) -> None:
        """Process messages until end-of-stream: relay end-of-stream and status in order with
        the frames; drop stale frames (counted, also when the slot is rewritten mid-work);
        take in inline pixels; ``process``; forward the result."""
        while True:
            message = self.receive(self.upstream)
            if not isinstance(message, FrameMessage):
                if self.relay(message):
                    return
                continue
            if self.is_stale(message.handle):
                continue
            with self.unless_stale():
                message = self.absorb_inline(message)
                with self.busy():
                    result = self.process(message)
                if result is not None:
                    self.forward(self.downstream, result)

    def run(self) -> None:
        budget = self.plan.stage_budget(self.name)
        apply_budget(budget)
        self.setup()
        apply_budget(budget)  # again: setup may have loaded OpenCV, which sizes its own pool
        self.warm_up()
        self._cpu_at_ready = time.process_time()
        self.emit(EventKind.READY, **self.ready_info())
        # ``loop`` returns at each end-of-stream; keep serving (replays after a restart
        # elsewhere) until the supervisor has seen the whole pipeline finish and says exit.
        while True:
            self.loop()
            # CPU time of every thread of this process since ready: what its work cost
            self.stats["cpu_s"] = time.process_time() - self._cpu_at_ready
            self.emit(EventKind.DONE, stats=self.stats)

    def ready_info(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.ring.close()
        self.ctx.destroy()  # each socket's own LINGER: data hops flush, the rest is bounded

    # -- supervisor link -----------------------------------------------------------------
    def emit(self, kind: EventKind, **fields: Any) -> None:
        """Send an event to the supervisor (never blocks the stage for long)."""
        sockets.send(self.events, *Event(self.name, kind, fields).to_parts())

    def current_stats(self) -> dict[str, Any]:
        """The stage's counters as of now, for a heartbeat (a stage whose counters live
        elsewhere brings them up to date here, once per heartbeat, not once per frame)."""
        return self.stats

    def tick(self) -> None:
        """Heartbeat when due and react to control messages; call often while waiting."""
        now = time.monotonic()
        if now - self._last_heartbeat >= self._heartbeat_every:
            self._last_heartbeat = now
            self.emit(EventKind.HEARTBEAT, stats=self.current_stats())  # the counters so far: the run's metrics
        while self.control.poll(0):
            try:
                kind = Control.from_parts(*sockets.recv(self.control)).kind
            except MessageError as err:  # a kind this stage does not know: not ours to act on
                log.warning("ignored control message: %s", err)
                continue
            if kind is ControlKind.START:
                self.start_requested = True
            elif kind is ControlKind.REPLAY:
                self.replay_requested = True
            elif kind is ControlKind.DRAIN:
                self.drain_requested = True
            elif kind is ControlKind.EXIT:
                self.exit_requested = True
            elif kind is ControlKind.ABORT:
                raise StopRequested

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Count the enclosed time as this stage's busy time."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stats["busy_s"] += time.perf_counter() - start

    # -- messaging -----------------------------------------------------------------------
    def recv(self, sock: zmq.Socket, timeout_ms: int | None = None) -> tuple[dict, list] | None:
        """Wait for one message, heartbeating meanwhile; None if ``timeout_ms`` passes."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        while True:
            self.tick()
            if self.exit_requested:
                raise StopRequested
            wait = POLL_MS
            if deadline is not None:
                wait = int(min(POLL_MS, max(0.0, deadline - time.monotonic()) * 1000))
            if sock.poll(wait, zmq.POLLIN):
                message = sockets.recv(sock)
                if _TRACE:
                    print(f"[{self.name}] got {message[0].get('type')} {message[0].get('seq')}", file=sys.stderr, flush=True)
                return message
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def receive(self, sock: zmq.Socket, timeout_ms: int | None = None) -> DataMessage | None:
        """:meth:`recv` one message of a data hop, typed; None if ``timeout_ms`` passes."""
        message = self.recv(sock, timeout_ms)
        return None if message is None else decode(*message, self.decode_frame)

    def send(self, sock: zmq.Socket, header: dict, buffers: list | tuple = ()) -> None:
        """Blocking send (backpressure) that keeps heartbeating while downstream is full."""
        while not sock.poll(POLL_MS, zmq.POLLOUT):
            self.tick()
        sockets.send(sock, header, buffers)
        if _TRACE:
            print(f"[{self.name}] sent {header.get('type')} {header.get('seq')}", file=sys.stderr, flush=True)

    def send_message(self, sock: zmq.Socket, message: Any) -> None:
        """:meth:`send` a typed message (anything with ``to_parts``)."""
        self.send(sock, *message.to_parts())

    # -- frames in the ring --------------------------------------------------------------
    def blank_frame(self) -> np.ndarray:
        """A black frame of the source's (largest) size, for :meth:`warm_up`."""
        return np.zeros((self.plan.source["height"], self.plan.source["width"], 3), np.uint8)

    def is_stale(self, handle: FrameHandle) -> bool:
        """True (and counted) if the frame's slot no longer holds this frame."""
        if self.ring.generation(handle.slot) == handle.gen:
            return False
        self.stats["stale_dropped"] += 1
        return True

    @contextmanager
    def unless_stale(self) -> Iterator[None]:
        """Drop (and count) a frame whose slot is rewritten while this stage works on it."""
        try:
            yield
        except RingOverwriteError:
            self.stats["stale_dropped"] += 1

    def frame_view(self, handle: FrameHandle) -> np.ndarray:
        """The frame's pixels in the ring (a view), after checking the slot still holds it."""
        self.ring.check(handle.slot, handle.gen)
        return self.ring.frame(handle.slot, handle.h, handle.w)

    def inline_payload(self, sender: str, message: FrameMessage) -> InlinePixels | None:
        """The slot's pixels to put inside the message when the hop from ``sender`` is
        tcp:// (frame, model input, overlay: what exists), as views of the ring (no copy)."""
        if sender not in self.plan.inline_hops:
            return None
        handle, in_shape = message.handle, message.in_shape
        return InlinePixels(
            frame=self.ring.frame(handle.slot, handle.h, handle.w),
            input=None if in_shape is None else self.ring.model_input(handle.slot, tuple(in_shape)),
            overlay=(self.ring.overlay(handle.slot, handle.h, handle.w)
                     if sender == "postprocess" and self.ring.layout.overlay_bytes else None),
        )

    def absorb_inline(self, message: FrameMessage) -> FrameMessage:
        """Write inline pixels (tcp hop) into our ring slot; the message without them."""
        pixels = message.inline
        if pixels is None:
            return message
        handle = message.handle
        self.ring.check(handle.slot, handle.gen)
        for name, array in zip(*pixels.parts(), strict=True):
            if name == "frame":
                self.ring.frame(handle.slot, handle.h, handle.w)[...] = array
            elif name == "overlay":
                self.ring.overlay(handle.slot, handle.h, handle.w)[...] = array
            else:
                self.ring.model_input(handle.slot, array.shape)[...] = array
        return message.with_inline(None)

    def relay(self, message: EndOfStream | Status) -> bool:
        """Pass a non-frame message (end-of-stream, in-band status) downstream, in order
        with the frames. Returns True for end-of-stream, when the stage's loop should end."""
        self.send_message(self.downstream, message)
        return isinstance(message, EndOfStream)

    def forward(self, sock: zmq.Socket, message: FrameMessage) -> None:
        """Send a frame message downstream, inlining pixels on tcp hops."""
        pixels = self.inline_payload(self.name, message)
        self.send_message(sock, message if pixels is None else message.with_inline(pixels))
