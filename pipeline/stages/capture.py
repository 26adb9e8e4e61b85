"""Capture stage: decode frames from the sources into free ring slots, send handles downstream.

One loop serves every run: it goes round the streams' feeds (:mod:`pipeline.stages.
capture_feeds`; one file is the one-feed case) and sends a frame whenever the credits allow.
What differs between runs comes from the plan's decisions, not from separate loops:

* **feeds**: fixed batching (one file or folder) reads in this thread, every frame in order,
  one per free slot, so backpressure reaches the decoder and nothing is dropped or
  reordered; timed batching (live feeds, several streams) reads each stream in a background
  thread through its delivery policy (live: the newest frame wins, so the pipeline never
  falls behind the camera; a file among several streams: ``block``, lossless). Several
  streams are taken round-robin, so infer batches across them; one that ends or fails
  publishes ``eos`` and the others go on.
* **the gate** (``RunPlan.admissions()``): without admissions a frame needs a free slot.
  With them (live feeds) it also needs room at the model's door: the infer stage reports
  each batch it takes (an ``Admission``, on its own channel ``admissions``) and capture keeps
  at most one batch waiting for the model, so every frame it sends is in the model's next
  batch and waits at most one inference time before its own. Without this gate a partial
  batch (closed by ``max_wait_ms``) would leave more than a batch queued and the newest
  frame a whole extra inference behind. The policy is :class:`~pipeline.policies.
  slot_credits.SlotCredits`.

Replay: capture keeps the handle of every frame it sent until publish releases its slot.
When the supervisor restarts a downstream stage it sends ``replay``: capture sends those
frames again, in order (and end-of-stream again, if it was sent); publish drops what it has
already. A restarted capture reclaims every slot (older handles turn stale) and resumes at
publish's last committed frame (files: decoded again up to there; live feeds: carry on).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import zmq

from pipeline.policies.slot_credits import SlotCredits
from pipeline.sources.base import Frame
from pipeline.sources.paced import PacedSource
from pipeline.sources.reconnect import status_message
from pipeline.stage_messages import (
    Admission,
    EndOfStream,
    EventKind,
    FrameHandle,
    SlotRelease,
    Status,
)
from pipeline.stages.base import Stage, StopRequested
from pipeline.stages.capture_feeds import (
    Feed,
    FileFeed,
    QueuedFeed,
    admission_interval_s,
    feed_stats,
    frame_handle,
    resume_seq,
    stream_deliveries,
)
from pipeline.stages.progress import read_progress
from pipeline.transport import sockets

LIVE_POLL_MS = 50
IDLE_MS = 5  # several streams and none has a frame: wait this long before looking again


class CaptureStage(Stage):
    name = "capture"

    def setup(self) -> None:
        hwm = self.config.transport.queue_depth
        # decided by the planner; asking a feed that is not online yet would wait for it here
        self.admitting = self.plan.admissions()
        self.releases = sockets.pull(self.ctx, self.plan.endpoints["release"], hwm=1000, bind=True)
        # live feeds: infer reports the batches it takes (admission); files need no such gate
        self.admissions = None
        if self.admitting:
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
        self.credits = SlotCredits(self.plan.ring_slots, self.config.batching.batch_size,
                                   admission_interval_s(self.plan))
        # a restarted capture: every slot is ours again; handles still travelling are stale
        for slot in range(self.plan.ring_slots):
            self.ring.bump_generation(slot)
        self.eos: EndOfStream | None = None  # sent end-of-stream (sent again on replay)
        progress = read_progress(self.plan.run_dir).get("streams", {})
        # (stream id, delivery, seq to resume at) per stream, in the order of source.uris
        self.streams = [(sid, delivery, resume_seq(progress, sid, delivery))
                        for sid, delivery in stream_deliveries(self.plan, src.live_policy)]
        self.several = len(self.streams) > 1  # one stream failing must not stop the others
        self.stats.update(frames_read=0, frames_dropped=0, decode_errors=0, replays=0,
                          resumed_at=self.streams[0][2])

    # -- credits: releases, admissions, replays ------------------------------------------
    def _collect_releases(self) -> None:
        """Take in slot releases (from publish) and batch admissions (from infer); replay
        the frames in flight when the supervisor asks."""
        self.tick()
        self._replay_if_requested()
        while self.releases.poll(0, zmq.POLLIN):
            release = SlotRelease.from_parts(*sockets.recv(self.releases))
            self.credits.release(release.slot, release.gen)
        while self.admissions is not None and self.admissions.poll(0, zmq.POLLIN):
            admission = Admission.from_parts(*sockets.recv(self.admissions))
            self.credits.taken(admission.count, time.monotonic(), admission.batch_s)
        self.stats["ring_slots_in_use"] = len(self.credits.in_flight)

    def _wait_for_credits(self, timeout_ms: int) -> None:
        """Sleep until a slot release or an admission arrives, or ``timeout_ms`` passes."""
        self.credit_poller.poll(timeout_ms)

    def _may_send(self) -> bool:
        """A free slot, and with admissions (live feeds) room in the model's next batch."""
        if self.admitting:
            return self.credits.can_admit_live(time.monotonic())
        return self.credits.has_free()

    def _replay_if_requested(self) -> None:
        if not self.replay_requested:
            return
        self.replay_requested = False
        self.stats["replays"] += 1
        for header in self.credits.replay(self.ring.generation):
            self.forward(self.downstream, FrameHandle.from_parts(header, []))
        if self.eos is not None:
            self.send_message(self.downstream, self.eos)

    # -- the loop ------------------------------------------------------------------------
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
                self._collect_releases()
                self._wait_for_credits(LIVE_POLL_MS)
            raise StopRequested
        self._wait_for_start()
        feeds = self._feeds = self._open_feeds()
        try:
            self._capture(feeds)
        finally:
            self._close_feeds(feeds)
        # per stream, how many frames publish must have seen before it can finish
        self.eos = EndOfStream(self.stats["frames_read"], {feed.id: feed.seq for feed in feeds})
        self.send_message(self.downstream, self.eos)

    def _open_feeds(self) -> list[Feed]:
        """One feed per stream: fixed batching (one file) reads in this thread; otherwise a
        background reader applies the stream's delivery policy."""
        limit = self.config.source.max_frames
        if self.plan.fixed_batch_size() is not None:
            (sid, _, seq), = self.streams
            return [FileFeed(sid, self.sources[0], seq, limit, self.busy)]
        depth = self.config.transport.queue_depth
        return [QueuedFeed(sid, source, seq, limit, delivery, depth)
                for source, (sid, delivery, seq) in zip(self.sources, self.streams, strict=True)]

    def _capture(self, feeds: list[Feed]) -> None:
        """The capture loop: whenever the credits allow, send the next frame of the feeds
        (round-robin), until every feed has ended or the supervisor asks to drain."""
        active = deque(feeds)
        while active and not self.drain_requested:
            self.tick()
            for feed in feeds:
                self._forward_status(feed.pop_events(), feed.id)
            self._collect_releases()
            if not self._may_send():
                self._wait_for_credits(LIVE_POLL_MS)
                continue
            taken = self._next_frame(active)
            if taken is not None:
                self._send_frame(*taken)
            elif len(active) > 1:
                self._wait_for_credits(IDLE_MS)  # nothing ready in any stream: wait a moment

    def _next_frame(self, active: deque[Feed]) -> tuple[Feed, Frame, int] | None:
        """The next feed in turn with a frame ready, the frame and the frames dropped before
        it; None if none is ready. One feed is waited for (up to ``LIVE_POLL_MS``: it wakes
        as a frame arrives); of several, none is. A feed that has ended leaves ``active``."""
        timeout_s = LIVE_POLL_MS / 1000 if len(active) == 1 else 0.0
        for _ in range(len(active)):
            feed = active[0]
            active.rotate(-1)
            try:
                item = feed.get(timeout_s)
            except Exception as err:  # noqa: BLE001 - one stream failing must not stop the others
                if not self.several:
                    raise  # the only stream: the stage fails (and is restarted or ends the run)
                self._end_stream(feed, active, f"failed: {err}")
                return None
            if item is not None:
                return feed, *item
            if feed.finished:
                self._end_stream(feed, active, "end of stream")
                return None
        return None

    def _end_stream(self, feed: Feed, active: deque[Feed], detail: str) -> None:
        """``feed`` has ended; with several streams, say so in-band (``eos``)."""
        active.remove(feed)
        if self.several:
            self._forward_status([{"event": "eos", "detail": detail}], feed.id)

    def current_stats(self) -> dict[str, Any]:
        """The feeds' counters as they go (heartbeats carry them to the run's metrics)."""
        self.stats.update(feed_stats(getattr(self, "_feeds", [])))
        return self.stats

    def _close_feeds(self, feeds: list[Feed]) -> None:
        for feed in feeds:
            feed.close()
            self._forward_status(feed.pop_events(), feed.id)
        self.stats.update(feed_stats(feeds))

    def _send_frame(self, feed: Feed, frame: Frame, dropped: int) -> None:
        slot = self.credits.take()
        with self.busy():
            height, width = frame.image.shape[:2]
            # new generation before and after the write: a stage still holding an older
            # handle of this slot sees it stale from the first byte written
            self.ring.bump_generation(slot)
            self.ring.frame(slot, height, width)[...] = frame.image
            gen = self.ring.bump_generation(slot)
        handle = frame_handle(frame, feed.id, feed.seq, slot, gen, dropped)
        # the credits keep the header (a plain dict with ``gen``) to replay it from
        self.credits.sent(slot, handle.to_parts()[0])
        self.forward(self.downstream, handle)
        feed.advance()

    def _forward_status(self, events: list[dict], stream: str) -> None:
        """Status events travel in-band, in order with the frames, to the publish stage."""
        for event in events:
            self.send_message(self.downstream, Status(status_message(event, stream)))
