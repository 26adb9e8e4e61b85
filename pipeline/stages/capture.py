"""Capture stage: decode frames from the source into free ring slots, send handles downstream.

Slot credits: the ring has a fixed number of slots; publish returns a slot when it has
finished with it. For files and folders capture waits for a free slot (backpressure reaches
the decoder): nothing is dropped or reordered. For live feeds a reader thread keeps only
the newest frame, so the pipeline never falls behind the camera.

Admission (live feeds): besides a free slot, a live frame needs room at the model's door.
The infer stage reports each batch it takes (an ``Admission``, on its own channel
``admissions``); capture keeps at most one batch waiting for the model, so every frame it
sends is in the model's next batch and waits at most one inference time before its own. Without this gate a partial batch (closed by
``max_wait_ms``) would leave more than a batch queued and the newest frame a whole extra
inference behind.

Replay: capture keeps the handle of every frame it sent until publish releases its slot.
When the supervisor restarts a downstream stage it sends ``replay``: capture sends those
frames again, in order (and end-of-stream again, if it was sent); publish drops what it has
already. A restarted capture reclaims every slot (older handles turn stale) and resumes at
publish's last committed frame (files: decoded again up to there; live feeds: carry on).
"""

from __future__ import annotations

import time
from collections import deque

import zmq

from pipeline.policies.slot_credits import SlotCredits
from pipeline.sources.paced import PacedSource
from pipeline.sources.reconnect import status_message
from pipeline.sources.stream import LatestFrameReader
from pipeline.stage_messages import (
    Admission,
    EndOfStream,
    EventKind,
    FrameHandle,
    SlotRelease,
    Status,
)
from pipeline.stages.base import Stage, StopRequested
from pipeline.stages.progress import read_progress
from pipeline.transport import sockets

LIVE_POLL_MS = 50


class CaptureStage(Stage):
    name = "capture"

    def setup(self) -> None:
        hwm = self.config.transport.queue_depth
        # from the plan: asking a feed that is not online yet would wait for it here
        self.live = bool(self.plan.source.get("live"))
        self.releases = sockets.pull(self.ctx, self.plan.endpoints["release"], hwm=1000, bind=True)
        # live feeds: infer reports the batches it takes (admission); files need no such gate
        self.admissions = None
        if self.live:
            self.admissions = sockets.pull(self.ctx, self.plan.endpoints["admissions"], hwm=1000, bind=True)
        self.credit_poller = zmq.Poller()  # wakes on a release or an admission
        for sock in (self.releases, self.admissions):
            if sock is not None:
                self.credit_poller.register(sock, zmq.POLLIN)
        self.downstream = sockets.push(self.ctx, self.plan.endpoints["preprocess_in"], hwm=hwm, lossless=True)
        src = self.config.source
        # a feed that is down when this process starts (a restart during an outage) is retried
        # like any outage: the run's start-up check already showed the URI is right
        self.sources = [src.open(uri, wait_for_online=True) for uri in src.uris]
        if src.realtime:
            self.sources = [PacedSource(source) for source in self.sources]
        self.source = self.sources[0]
        fps = self.plan.source.get("fps")
        # live feeds: admission is timed by the feed's frame interval (see SlotCredits.taken)
        interval = fps[1] / fps[0] if self.plan.admissions() and fps and fps[0] > 0 else None
        self.credits = SlotCredits(self.plan.ring_slots, self.config.batching.batch_size, interval)
        # a restarted capture: every slot is ours again; handles still travelling are stale
        for slot in range(self.plan.ring_slots):
            self.ring.bump_generation(slot)
        self.eos: EndOfStream | None = None  # sent end-of-stream (sent again on replay)
        self.resume = read_progress(self.plan.run_dir).get("streams", {})
        self.seq = self._resume_seq(self.plan.stream_id, self.live)
        self.stats.update(frames_read=0, frames_dropped=0, decode_errors=0, replays=0, resumed_at=self.seq)

    def _resume_seq(self, stream: str, live: bool) -> int:
        """Where a restarted capture carries on: files at the last frame publish committed
        (the ones after it are decoded and sent again), live feeds after the last published."""
        progress = self.resume.get(stream, {})
        return int(progress.get("next" if live else "committed", 0))

    def _collect_releases(self, block: bool) -> None:
        """Take in slot releases (from publish) and batch admissions (from infer); replay
        the frames in flight when the supervisor asks."""
        while True:
            self.tick()
            self._replay_if_requested()
            while self.releases.poll(0, zmq.POLLIN):
                release = SlotRelease.from_parts(*sockets.recv(self.releases))
                self.credits.release(release.slot, release.gen)
            while self.admissions is not None and self.admissions.poll(0, zmq.POLLIN):
                admission = Admission.from_parts(*sockets.recv(self.admissions))
                self.credits.taken(admission.count, time.monotonic(), admission.batch_s)
            if not block or self.credits.has_free():
                return
            self._wait_for_credits(LIVE_POLL_MS)

    def _wait_for_credits(self, timeout_ms: int) -> None:
        """Sleep until a slot release or an admission arrives, or ``timeout_ms`` passes."""
        self.credit_poller.poll(timeout_ms)

    def _replay_if_requested(self) -> None:
        if not self.replay_requested:
            return
        self.replay_requested = False
        self.stats["replays"] += 1
        for header in self.credits.replay(self.ring.generation):
            self.forward(self.downstream, FrameHandle.from_parts(header, []))
        if self.eos is not None:
            self.send_message(self.downstream, self.eos)

    def _can_send_live(self) -> bool:
        return self.credits.can_admit_live(time.monotonic())

    def _wait_for_start(self) -> None:
        """Read nothing until every stage is ready: a live frame read while a downstream
        stage is still loading would carry that load time as latency."""
        while not (self.start_requested or self.drain_requested):
            self.tick()
            self.control.poll(LIVE_POLL_MS)
        self.emit(EventKind.STARTED)

    def loop(self) -> None:
        if self.eos is not None:
            # after end-of-stream: hand out slot releases and replays until told to exit
            while not self.exit_requested:
                self._collect_releases(block=False)
                self._wait_for_credits(LIVE_POLL_MS)
            raise StopRequested
        self._wait_for_start()
        if len(self.sources) > 1:
            totals = self._loop_streams()
        elif self.live:
            self._loop_live()
            totals = {self.plan.stream_id: self.seq}
        else:
            self._loop_lossless()
            totals = {self.plan.stream_id: self.seq}
        # per stream, how many frames publish must have seen before it can finish
        self.eos = EndOfStream(self.stats["frames_read"], totals)
        self.send_message(self.downstream, self.eos)

    def _send_frame(self, frame, dropped: int, stream: str | None = None, seq: int | None = None) -> None:
        slot = self.credits.take()
        with self.busy():
            height, width = frame.image.shape[:2]
            # new generation before and after the write: a stage still holding an older
            # handle of this slot sees it stale from the first byte written
            self.ring.bump_generation(slot)
            self.ring.frame(slot, height, width)[...] = frame.image
            gen = self.ring.bump_generation(slot)
        tb = frame.time_base
        handle = FrameHandle(
            stream=self.plan.stream_id if stream is None else stream,
            seq=self.seq if seq is None else seq,
            slot=slot,
            gen=gen,
            h=height,
            w=width,
            pts=frame.pts,
            tb=None if tb is None else (tb.numerator, tb.denominator),
            capture_ns=frame.capture_ns,
            dropped=dropped,
        )
        # the credits keep the header (a plain dict with ``gen``) to replay it from
        self.credits.sent(slot, handle.to_parts()[0])
        self.forward(self.downstream, handle)
        if seq is None:
            self.seq += 1

    def _loop_lossless(self) -> None:
        """Files and folders: every frame, in order; wait for a free slot (backpressure)."""
        max_frames = self.config.source.max_frames
        frames = self.source.frames()
        for _ in range(self.seq):  # restarted: publish already has these
            with self.busy():
                next(frames, None)
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
                if not self._can_send_live():
                    self._wait_for_credits(LIVE_POLL_MS)
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

    def _loop_streams(self) -> dict[str, int]:
        """Several streams: one reader thread each (files with the ``block`` policy, so they
        stay lossless; live feeds with the configured policy), taken round-robin whenever a
        slot is free, so the infer stage batches across streams. A stream that ends or
        fails publishes ``eos`` and the others go on. Returns each stream's frame count."""
        src = self.config.source
        depth = self.config.transport.queue_depth
        streams = []
        live_streams = [bool(stream["info"].get("live")) for stream in self.plan.streams]
        for index, (source, live) in enumerate(zip(self.sources, live_streams, strict=True)):
            policy = src.live_policy if live else "block"
            resume = self._resume_seq(str(index), live)
            reader = LatestFrameReader(source, policy=policy, capacity=depth, skip=0 if live else resume)
            streams.append({"id": str(index), "reader": reader, "seq": resume})
        active = deque(streams)
        any_live = any(live_streams)
        try:
            while active and not self.drain_requested:
                self.tick()
                for stream in streams:
                    self._forward_status(stream["reader"].pop_events(), stream["id"])
                self._collect_releases(block=False)
                if not (self._can_send_live() if any_live else self.credits.has_free()):
                    self._wait_for_credits(LIVE_POLL_MS)
                    continue
                sent = False
                for _ in range(len(active)):
                    stream = active[0]
                    active.rotate(-1)
                    try:
                        item = stream["reader"].get(timeout=0)
                    except Exception as err:  # noqa: BLE001 - one stream failing must not stop the others
                        self._end_stream(stream, active, f"failed: {err}")
                        break
                    if item is None:
                        if stream["reader"].finished:
                            self._end_stream(stream, active, "end of stream")
                            break
                        continue
                    frame, dropped = item
                    self._send_frame(frame, dropped, stream=stream["id"], seq=stream["seq"])
                    stream["seq"] += 1
                    sent = True
                    break
                if not sent:
                    self._wait_for_credits(5)  # nothing ready in any stream: wait a moment
        finally:
            for stream in streams:
                reader = stream["reader"]
                reader.close()
                self._forward_status(reader.pop_events(), stream["id"])
                self.stats["frames_read"] += reader.frames_read
                self.stats["frames_dropped"] += reader.frames_read - stream["seq"]
                self.stats["decode_errors"] += int(getattr(reader.source, "decode_errors", 0))
        return {stream["id"]: stream["seq"] for stream in streams}

    def _end_stream(self, stream: dict, active: deque, detail: str) -> None:
        active.remove(stream)
        self._forward_status([{"event": "eos", "detail": detail}], stream["id"])

    def _forward_status(self, events: list[dict], stream: str | None = None) -> None:
        """Status events travel in-band, in order with the frames, to the publish stage."""
        for event in events:
            status = status_message(event, stream or self.plan.stream_id)
            self.send_message(self.downstream, Status(status))
