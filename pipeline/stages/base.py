"""What every stage process shares: sockets to the supervisor, heartbeats, busy timing,
blocking sends that stay responsive, and the shared-memory ring.

Frame messages between stages carry a header with at least::

    {"type": "frame", "seq": int, "slot": int, "gen": int, "h": int, "w": int,
     "pts": int | None, "tb": [num, den] | None, "capture_ns": int, "dropped": int}

and ``{"type": "eos"}`` ends the stream. Each stage forwards EOS after its last frame and
reports its statistics to the supervisor, then keeps serving until the supervisor says
``exit``: after a stage restart, frames in flight are replayed through every stage.

A frame whose ring slot has since been rewritten (a replayed duplicate, or a frame of a
capture process that died) is *stale*: stages drop it and count it, never use it.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Any

import numpy as np
import zmq

from pipeline.plan import RunPlan
from pipeline.resources import apply_budget
from pipeline.transport import sockets
from pipeline.transport.shm import FrameRing, RingOverwriteError

_TRACE = bool(os.environ.get("SEGSTREAM_TRACE"))  # log every stage message to stderr
POLL_MS = 100  # granularity of heartbeats / stop checks while waiting


class StopRequested(Exception):
    """The supervisor asked for an immediate stop (abort, not drain)."""


class Stage:
    """Base class: subclasses implement ``setup`` and ``loop``."""

    name = "stage"

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

    def loop(self) -> None:
        """Process messages until EOS."""
        raise NotImplementedError

    def run(self) -> None:
        budget = self.plan.stage_budget(self.name)
        apply_budget(budget)
        self.setup()
        apply_budget(budget)  # again: setup may have loaded OpenCV, which sizes its own pool
        self.warm_up()
        self._cpu_at_ready = time.process_time()
        self.emit("ready", **self.ready_info())
        # ``loop`` returns at each end-of-stream; keep serving (replays after a restart
        # elsewhere) until the supervisor has seen the whole pipeline finish and says exit.
        while True:
            self.loop()
            # CPU time of every thread of this process since ready: what its work cost
            self.stats["cpu_s"] = time.process_time() - self._cpu_at_ready
            self.emit("done", stats=self.stats)

    def ready_info(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.ring.close()
        self.ctx.destroy()  # each socket's own LINGER: data hops flush, the rest is bounded

    # -- supervisor link -----------------------------------------------------------------
    def emit(self, kind: str, **fields: Any) -> None:
        """Send an event to the supervisor (never blocks the stage for long)."""
        sockets.send(self.events, {"stage": self.name, "type": kind, **fields})

    def tick(self) -> None:
        """Heartbeat when due and react to control messages; call often while waiting."""
        now = time.monotonic()
        if now - self._last_heartbeat >= self._heartbeat_every:
            self._last_heartbeat = now
            self.emit("heartbeat")
        while self.control.poll(0):
            header, _ = sockets.recv(self.control)
            if header.get("type") == "start":
                self.start_requested = True
            elif header.get("type") == "replay":
                self.replay_requested = True
            elif header.get("type") == "drain":
                self.drain_requested = True
            elif header.get("type") == "exit":
                self.exit_requested = True
            elif header.get("type") == "abort":
                raise StopRequested

    @contextmanager
    def busy(self):
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

    def send(self, sock: zmq.Socket, header: dict, buffers: list | tuple = ()) -> None:
        """Blocking send (backpressure) that keeps heartbeating while downstream is full."""
        while not sock.poll(POLL_MS, zmq.POLLOUT):
            self.tick()
        sockets.send(sock, header, buffers)
        if _TRACE:
            print(f"[{self.name}] sent {header.get('type')} {header.get('seq')}", file=sys.stderr, flush=True)

    # -- frames in the ring --------------------------------------------------------------
    def blank_frame(self) -> np.ndarray:
        """A black frame of the source's (largest) size, for :meth:`warm_up`."""
        return np.zeros((self.plan.source["height"], self.plan.source["width"], 3), np.uint8)

    def is_stale(self, header: dict) -> bool:
        """True (and counted) if the frame's slot no longer holds this frame."""
        if self.ring.generation(header["slot"]) == header["gen"]:
            return False
        self.stats["stale_dropped"] += 1
        return True

    @contextmanager
    def unless_stale(self):
        """Drop (and count) a frame whose slot is rewritten while this stage works on it."""
        try:
            yield
        except RingOverwriteError:
            self.stats["stale_dropped"] += 1

    def frame_view(self, header: dict) -> np.ndarray:
        self.ring.check(header["slot"], header["gen"])
        return self.ring.frame(header["slot"], header["h"], header["w"])

    def inline_payload(self, sender: str, header: dict) -> tuple[list[str], list[np.ndarray]]:
        """Pixel data to put inside the message when the hop from ``sender`` is tcp://:
        the region names and their arrays (frame, model input, overlay: what exists)."""
        if sender not in self.plan.inline_hops or header.get("type") != "frame":
            return [], []
        slot, h, w = header["slot"], header["h"], header["w"]
        names, arrays = ["frame"], [self.ring.frame(slot, h, w)]
        if "in_shape" in header:
            names.append("input")
            arrays.append(self.ring.model_input(slot, tuple(header["in_shape"])))
        if sender == "postprocess" and self.ring.layout.overlay_bytes:
            names.append("overlay")
            arrays.append(self.ring.overlay(slot, h, w))
        return names, arrays

    def absorb_inline(self, header: dict, buffers: list) -> list:
        """Write inline pixel data (tcp hop) into our ring slot; return the other buffers."""
        names = header.pop("inline", [])
        if not names:
            return buffers
        slot, h, w = header["slot"], header["h"], header["w"]
        self.ring.check(slot, header["gen"])
        for name, buffer in zip(names, buffers, strict=False):
            if name == "frame":
                self.ring.frame(slot, h, w)[...] = np.frombuffer(buffer, np.uint8).reshape(h, w, 3)
            elif name == "overlay":
                self.ring.overlay(slot, h, w)[...] = np.frombuffer(buffer, np.uint8).reshape(h, w, 3)
            else:
                shape = tuple(header["in_shape"])
                self.ring.model_input(slot, shape)[...] = np.frombuffer(buffer, np.float32).reshape(shape)
        return buffers[len(names):]

    def relay(self, header: dict) -> bool:
        """Pass a non-frame message (``eos``, in-band ``status``) downstream, in order with
        the frames. Returns True for end-of-stream, when the stage's loop should end."""
        self.send(self.downstream, header)
        return header["type"] == "eos"

    def forward(self, sock: zmq.Socket, header: dict, buffers: list | tuple = ()) -> None:
        """Send a frame message downstream, inlining pixels on tcp hops."""
        names, payload = self.inline_payload(self.name, header)
        if payload:
            header = {**header, "inline": names}
        self.send(sock, header, [*payload, *buffers])
