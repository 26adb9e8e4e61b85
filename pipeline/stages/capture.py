"""Capture stage: decode frames from the source into free ring slots, send handles downstream.

Slot credits: the ring has a fixed number of slots; publish returns a slot when it has
finished with it. In lossless mode capture waits for a free slot (backpressure reaches the
decoder); nothing is ever dropped or reordered.
"""

from __future__ import annotations

import time
from collections import deque

import zmq

from pipeline.sources import open_source
from pipeline.stages.base import Stage
from pipeline.transport import sockets


class FramePacer:
    """Releases frames at their presentation times (``--realtime``: a file plays like a feed)."""

    def __init__(self) -> None:
        self._origin: tuple[float, float] | None = None  # (wall clock, media seconds) of frame 0

    def wait(self, frame, tick) -> None:
        if frame.pts is None or frame.time_base is None:
            return
        media_s = float(frame.pts * frame.time_base)
        if self._origin is None:
            self._origin = (time.monotonic(), media_s)
            return
        due = self._origin[0] + (media_s - self._origin[1])
        while (remaining := due - time.monotonic()) > 0:
            time.sleep(min(remaining, 0.05))
            tick()


class CaptureStage(Stage):
    name = "capture"

    def setup(self) -> None:
        hwm = self.config.transport.queue_depth
        self.releases = sockets.pull(self.ctx, self.plan.endpoints["release"], hwm=1000, bind=True)
        self.downstream = sockets.push(self.ctx, self.plan.endpoints["preprocess_in"], hwm=hwm, lossless=True)
        src = self.config.source
        self.source = open_source(src.uri)
        self.pacer = FramePacer() if src.realtime else None
        self.free_slots: deque[int] = deque(range(self.plan.ring_slots))
        self.stats.update(frames_read=0, decode_errors=0)

    def _collect_releases(self, block: bool) -> None:
        if block and not self.free_slots:
            message = self.recv(self.releases)
            self.free_slots.append(message[0]["slot"])
        while self.releases.poll(0, zmq.POLLIN):
            header, _ = sockets.recv(self.releases)
            self.free_slots.append(header["slot"])

    def loop(self) -> None:
        seq = 0
        max_frames = self.config.source.max_frames
        frames = self.source.frames()
        while not self.drain_requested and (max_frames is None or seq < max_frames):
            self.tick()
            with self.busy():
                frame = next(frames, None)
            if frame is None:
                break
            if self.pacer is not None:
                self.pacer.wait(frame, self.tick)
            self._collect_releases(block=True)
            slot = self.free_slots.popleft()
            with self.busy():
                height, width = frame.image.shape[:2]
                self.ring.frame(slot, height, width)[...] = frame.image
                gen = self.ring.bump_generation(slot)
            tb = frame.time_base
            header = {
                "type": "frame",
                "stream": self.plan.stream_id,
                "seq": seq,
                "slot": slot,
                "gen": gen,
                "h": height,
                "w": width,
                "pts": frame.pts,
                "tb": None if tb is None else [tb.numerator, tb.denominator],
                "capture_ns": frame.capture_ns,
                "dropped": 0,
            }
            self.forward(self.downstream, header)
            seq += 1
            self.stats["frames_read"] = seq
        self.stats["decode_errors"] = int(getattr(self.source, "decode_errors", 0))
        self.source.close()
        self.send(self.downstream, {"type": "eos", "frames": seq})
