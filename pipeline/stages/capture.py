"""Capture stage: decode frames from the source into free ring slots, send handles downstream.

Slot credits: the ring has a fixed number of slots; publish returns a slot when it has
finished with it. In lossless mode capture waits for a free slot (backpressure reaches the
decoder); nothing is ever dropped or reordered.
"""

from __future__ import annotations

from collections import deque

import zmq

from pipeline.sources import open_source
from pipeline.stages.base import Stage
from pipeline.transport import sockets


class CaptureStage(Stage):
    name = "capture"

    def setup(self) -> None:
        hwm = self.config.transport.queue_depth
        self.releases = sockets.pull(self.ctx, self.plan.endpoints["release"], hwm=1000, bind=True)
        self.downstream = sockets.push(self.ctx, self.plan.endpoints["preprocess_in"], hwm=hwm)
        src = self.config.source
        self.source = open_source(src.uri, max_frames=src.max_frames, realtime=src.realtime)
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
