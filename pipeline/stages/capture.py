"""Capture stage: decode frames from the source into free ring slots, send handles downstream.

Slot credits: the ring has a fixed number of slots; publish returns a slot when it has
finished with it. For files and folders capture waits for a free slot (backpressure reaches
the decoder): nothing is dropped or reordered. For live feeds a reader thread keeps only
the newest frame, so the pipeline never falls behind the camera.
"""

from __future__ import annotations

from collections import deque

import zmq

from pipeline.sources import open_source
from pipeline.sources.paced import PacedSource
from pipeline.sources.reconnect import status_message
from pipeline.sources.stream import LatestFrameReader
from pipeline.stages.base import Stage
from pipeline.transport import sockets

LIVE_POLL_MS = 50


class CaptureStage(Stage):
    name = "capture"

    def setup(self) -> None:
        hwm = self.config.transport.queue_depth
        self.releases = sockets.pull(self.ctx, self.plan.endpoints["release"], hwm=1000, bind=True)
        self.downstream = sockets.push(self.ctx, self.plan.endpoints["preprocess_in"], hwm=hwm, lossless=True)
        src = self.config.source
        self.source = open_source(src.uri)
        if src.realtime:
            self.source = PacedSource(self.source)
        self.free_slots: deque[int] = deque(range(self.plan.ring_slots))
        self.live = self.source.info().live
        self.seq = 0
        self.stats.update(frames_read=0, frames_dropped=0, decode_errors=0)

    def _collect_releases(self, block: bool) -> None:
        if block and not self.free_slots:
            message = self.recv(self.releases)
            self.free_slots.append(message[0]["slot"])
        while self.releases.poll(0, zmq.POLLIN):
            header, _ = sockets.recv(self.releases)
            self.free_slots.append(header["slot"])

    def loop(self) -> None:
        if self.live:
            self._loop_live()
        else:
            self._loop_lossless()
        self.send(self.downstream, {"type": "eos", "frames": self.stats["frames_read"]})

    def _send_frame(self, frame, dropped: int) -> None:
        slot = self.free_slots.popleft()
        with self.busy():
            height, width = frame.image.shape[:2]
            self.ring.frame(slot, height, width)[...] = frame.image
            gen = self.ring.bump_generation(slot)
        tb = frame.time_base
        header = {
            "type": "frame",
            "stream": self.plan.stream_id,
            "seq": self.seq,
            "slot": slot,
            "gen": gen,
            "h": height,
            "w": width,
            "pts": frame.pts,
            "tb": None if tb is None else [tb.numerator, tb.denominator],
            "capture_ns": frame.capture_ns,
            "dropped": dropped,
        }
        self.forward(self.downstream, header)
        self.seq += 1

    def _loop_lossless(self) -> None:
        """Files and folders: every frame, in order; wait for a free slot (backpressure)."""
        max_frames = self.config.source.max_frames
        frames = self.source.frames()
        while not self.drain_requested and (max_frames is None or self.seq < max_frames):
            self.tick()
            with self.busy():
                frame = next(frames, None)
            if frame is None:
                break
            self._collect_releases(block=True)
            self._send_frame(frame, dropped=0)
            self.stats["frames_read"] = self.seq
        self.stats["decode_errors"] = int(getattr(self.source, "decode_errors", 0))
        self.source.close()

    def _loop_live(self) -> None:
        """Live feeds: the newest frame wins when a slot frees up; older ones are dropped
        (counted in the next frame's ``dropped``), never reordered. Latency stays bounded
        by the ring size, whatever the model's speed."""
        max_frames = self.config.source.max_frames
        src = self.config.source
        reader = LatestFrameReader(self.source, policy=src.live_policy, capacity=self.config.transport.queue_depth)
        pending_drops = 0
        try:
            while not self.drain_requested and (max_frames is None or self.seq < max_frames):
                self.tick()
                self._forward_status(reader.pop_events())
                self._collect_releases(block=False)
                if not self.free_slots:
                    self.releases.poll(LIVE_POLL_MS)
                    continue
                item = reader.get(timeout=LIVE_POLL_MS / 1000)
                if item is None:
                    if reader.finished:
                        break
                    continue
                frame, dropped = item
                pending_drops += dropped
                self._send_frame(frame, dropped=pending_drops)
                pending_drops = 0
        finally:
            reader.close()
            # exact: every frame the source delivered was either sent or dropped
            self.stats["frames_read"] = reader.frames_read
            self.stats["frames_dropped"] = reader.frames_read - self.seq
            self._forward_status(reader.pop_events())
            status = getattr(self.source, "status", None)
            if status is not None:
                self.stats.update(reconnects=status.reconnects, offline_s=round(status.offline_s, 3))

    def _forward_status(self, events: list[dict]) -> None:
        """Status events travel in-band, in order with the frames, to the publish stage."""
        for event in events:
            self.send(self.downstream, {"type": "status", "status": status_message(event, self.plan.stream_id)})
