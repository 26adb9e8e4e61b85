"""Publish stage: encodes the overlay video, publishes results on PUB, saves JSON lines,
and returns each frame's ring slot to capture once nothing needs it any more.

Exactly once, in order: per stream, publish takes the frame with the next seq; an older seq
is a replayed duplicate and a newer one arrived ahead of a replay (it comes again), so both
are dropped. A frame is *committed* once nothing would need it again after a crash of this
stage: its JSON line is written and the overlay segment holding it is closed. Slots are
released at commit, and ``publish.progress.json`` in the run directory records, per stream,
the next and the committed seq, so a restarted publish (or capture) carries on from there.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from pipeline import messages
from pipeline.policies.publish_ledger import Decision, PublishLedger
from pipeline.preview.stage import PublishPreview
from pipeline.results import FrameResult, Instance
from pipeline.sinks.foxglove_live import FoxgloveLive
from pipeline.sinks.json_lines import truncate_uncommitted
from pipeline.sinks.panoptic_png import frame_png_name, panoptic_folder, write_id_png
from pipeline.sinks.segmented_video import SegmentedVideoWriter, stream_video_path
from pipeline.sources.reconnect import status_message
from pipeline.stage_messages import (
    EndOfStream,
    EventKind,
    FrameHandle,
    PostprocessedFrame,
    SlotRelease,
    Status,
)
from pipeline.stages.base import Stage
from pipeline.stages.ipc_file import bound_ipc_file, remove_ipc_file
from pipeline.stages.progress import read_progress, write_progress
from pipeline.tracking import Assignment, Crop, Detections, RunTracking
from pipeline.transport import sockets
from pipeline.transport.shm import RingOverwriteError

PROGRESS_EVERY_S = 0.25


def _as_float(value: Fraction | None) -> float | None:
    return None if value is None else float(value)


class PublishStage(Stage):
    name = "publish"

    def setup(self) -> None:
        hwm = self.config.transport.queue_depth
        out = self.config.output
        self.upstream = sockets.pull(self.ctx, self.plan.endpoints["publish_in"], hwm=hwm)
        self.releases = sockets.push(self.ctx, self.plan.endpoints["release"], hwm=1000)
        self.curve = None
        prepare = None
        if out.curve_secret_key:
            from pipeline.transport.security import secure_publisher

            def prepare(sock):
                self.curve = secure_publisher(sock, out.curve_secret_key, out.curve_authorized_dir)

        self.pub = sockets.publisher(self.ctx, out.publish, prepare=prepare) if out.publish else None
        self.ipc_file = bound_ipc_file(self.pub)
        self.spec = self.plan.model_spec()
        self.panoptic = self.plan.panoptic_labels()  # panoptic mode: both models' classes
        self.class_names = self.panoptic.class_names if self.panoptic else self.spec.class_names
        # what every result says of the model(s): model id, task, untrained (fixed for the run)
        self._model_facts = (self.panoptic.model_id, "panoptic", self.panoptic.untrained) if self.panoptic \
            else (self.spec.model_id, self.spec.task, self.spec.untrained)
        # commits fall on batch boundaries for files, so a replay re-forms whole batches
        self.commit_every = self.plan.fixed_batch_size() or 1
        saved = read_progress(self.plan.run_dir)
        # per stream: next seq to publish, first not committed, held slots (policies/publish_ledger.py)
        resume = {sid: info.get("committed", 0) for sid, info in saved.get("streams", {}).items()}
        self.ledger = PublishLedger([s["id"] for s in self.plan.streams], self.commit_every, resume)
        # trackers resume from the state committed with the frames they saw: replayed frames get the same ids
        self.tracking = RunTracking(self.config.tracking.params()) if self.plan.tracking() else None
        self._committed_tracks: dict[str, dict | None] = dict(saved.get("tracks", {}))
        # the frame clock's fallback when a frame has no pts (looked up once, not per frame)
        self._stream_fps = {s["id"]: _as_float(self.plan.source_info(s["id"]).fps) for s in self.plan.streams}
        for sid, state in self._committed_tracks.items():
            if self.tracking is not None:
                self.tracking.restore(sid, state)
        self._open_outputs(saved)
        self.preview = PublishPreview.open(self.config, self.plan)  # --preview: served from here
        self.foxglove = FoxgloveLive.open(self.config, list(self.class_names))  # --foxglove: likewise
        self.latencies_ms: list[float] = []
        # since the last progress event, which carries them to the supervisor (its metrics)
        self._recent_latencies_ms: list[float] = []
        self._recent_status: list[dict[str, str]] = []
        self.stats.update(frames_written=0, frames_published=0, frames_dropped=0, frames_done=0, status_events={},
                          streams={}, duplicates_dropped=0, early_dropped=0, tracks={})
        self.stats.update(saved.get("stats", {}))
        self.finished = False
        self.eos_sent: set[str] = set()  # streams whose eos status is out
        self._committed_stats = self._stats_snapshot()
        self._last_progress = 0.0

    def _open_outputs(self, saved: dict) -> None:
        """The overlay video writers (one per stream), the results file and (panoptic mode)
        its PNG folder; a resumed run continues them from the committed state ``saved``."""
        out = self.config.output
        self.writers: dict[str, SegmentedVideoWriter] = {}
        if out.video:
            Path(out.video).parent.mkdir(parents=True, exist_ok=True)
            for stream in self.plan.streams:
                info = self.plan.source_info(stream["id"])
                self.writers[stream["id"]] = SegmentedVideoWriter(
                    stream_video_path(out.video, stream["id"], len(self.plan.streams)), info.width, info.height,
                    fps=info.fps or Fraction(30), time_base=info.time_base, codec=out.codec,
                    segment_frames=self.config.segment_frames(),
                    resume=saved.get("video", {}).get(stream["id"]), run=self.plan.run_id,
                    threads=self.plan.stage_budget(self.name).codec_threads,
                    options={k: str(v) for k, v in out.encoder_options.items()},
                )
        self.results_file = None
        committed = {sid: s.committed for sid, s in self.ledger.streams.items()}
        if out.save_results:
            Path(out.save_results).parent.mkdir(parents=True, exist_ok=True)
            if saved:  # drop the lines past the committed frames (they are published again)
                truncate_uncommitted(Path(out.save_results), committed)
            self.results_file = open(out.save_results, "a" if saved else "w")  # noqa: SIM115 - closed in _finish()
        self.mcap = None  # --mcap: ROS 2 messages in MCAP (pipeline/sinks/mcap_recorder.py), resumed likewise
        if out.mcap:
            from pipeline.sinks.mcap_recorder import McapRecorder

            self.mcap = McapRecorder(out.mcap, self.plan.run_id, list(self.class_names), committed if saved else None)
        # panoptic maps are saved as COCO panoptic PNGs next to the results (pipeline/sinks/panoptic_png.py)
        self.panoptic_pngs = panoptic_folder(out.save_results) if out.save_results and self.panoptic else None

    def _save_progress(self) -> None:
        state = {
            "streams": {sid: {"next": s.next, "committed": s.committed} for sid, s in self.ledger.streams.items()},
            "video": {sid: writer.state() for sid, writer in self.writers.items()},
            "stats": self._committed_stats,
            "tracks": self._committed_tracks,
        }
        write_progress(self.plan.run_dir, state)

    def _stats_snapshot(self) -> dict:
        keys = ("frames_written", "frames_published", "frames_dropped", "frames_done", "streams", "tracks")
        return json.loads(json.dumps({k: self.stats[k] for k in keys}))

    def warm_up(self) -> None:
        """Tracking: load the label font and the tracker's code paths before the first frame
        (Pillow's font and the first labels take a noticeable moment, once)."""
        if self.tracking is None:
            return
        from pipeline.ops.track_overlay import draw_tracked
        from pipeline.tracking import StreamTracker

        image = self.blank_frame()
        h, w = image.shape[:2]
        crop = (0, 0, np.ones((min(h, 8), min(w, 8)), bool))
        draw_tracked(image, [crop], np.array([[0, 0, 8, 8]]), [1], [1], self.class_names,
                     self.config.output.overlay_alpha)
        StreamTracker(self.config.tracking.params(), (h, w)).update(
            0.0, Detections(np.array([[0.0, 0.0, 8.0, 8.0]]), np.ones(1), np.ones(1, np.int64), [Crop.of(*crop)]))

    def ready_info(self) -> dict:
        endpoint = self.pub.getsockopt(zmq.LAST_ENDPOINT).decode() if self.pub is not None else None
        return {"publish_endpoint": endpoint, "preview_url": self.preview.url if self.preview else None,
                "foxglove_url": self.foxglove.url if self.foxglove else None}

    def decode_frame(self, header: dict[str, Any], buffers: Sequence[Any]) -> PostprocessedFrame:
        return PostprocessedFrame.from_parts(header, buffers)

    def loop(self) -> None:
        """Like :meth:`Stage.loop`, but the ledger decides: end-of-stream ends the loop only
        once every frame is out, and status goes to consumers, not downstream."""
        while True:
            message = self.receive(self.upstream)
            if isinstance(message, EndOfStream):
                if self.finished or self._complete(message):
                    return
                continue  # frames are missing: a replay is on its way
            if isinstance(message, Status):
                self._publish_status(message.status)
                continue
            handle = message.handle
            if self.is_stale(handle) or not self._in_order(handle):
                continue
            with self.unless_stale():
                message = self.absorb_inline(message)
                with self.busy():
                    segment_closed = self.publish(message)
                self._commit(handle, segment_closed)
                self._progress()

    def _in_order(self, handle: FrameHandle) -> bool:
        """True for the stream's next frame; otherwise drop it (releasing what is safe)."""
        verdict = self.ledger.arrive(handle.stream, handle.seq, handle.slot, handle.gen)
        self.stats["early_dropped"] = self.ledger.early_dropped
        self.stats["duplicates_dropped"] = self.ledger.duplicates_dropped
        for slot, gen in verdict.release:
            self._release(slot, gen)
        return verdict.decision is Decision.PUBLISH

    def _commit(self, handle: FrameHandle, segment_closed: bool) -> None:
        """The frame is out: its slot is held until nothing would need it after a crash of
        this stage (its overlay segment closed; without video, its batch ended)."""
        sid = handle.stream
        released = self.ledger.published(sid, handle.seq, handle.slot, handle.gen,
                                         segment_closed if sid in self.writers else None)
        if released:  # a commit point
            if self.results_file is not None:
                self.results_file.flush()
            if self.mcap is not None:
                self.mcap.commit()
            for slot, gen in released:
                self._release(slot, gen)
            self._committed_stats = self._stats_snapshot()
            if self.tracking is not None:
                self._committed_tracks[sid] = self.tracking.stream_state(sid)
        # files resume at the committed frame; live feeds also need ``next`` (a restarted
        # capture carries on after it), which moves with every frame
        if released or self.plan.source.get("live"):
            self._save_progress()

    def _complete(self, eos: EndOfStream) -> bool:
        """End of stream: finish once every stream's frames are all published."""
        if not self.ledger.complete(eos.totals):
            return False
        self._finish()
        return True

    def _publish_status(self, status: dict) -> None:
        self.stats["status_events"][status["event"]] = self.stats["status_events"].get(status["event"], 0) + 1
        self._recent_status.append({"stream": status["stream"], "event": status["event"]})
        self._progress(force=True)
        if self.preview is not None:
            self.preview.status(status["stream"], status["event"])
        if status["event"] == "eos":
            self.eos_sent.add(status["stream"])
        if self.pub is not None:
            self.pub.send_multipart(messages.encode_envelope(status["stream"], status), copy=False)

    def _release(self, slot: int, gen: int) -> None:
        """Return a slot to capture. Never blocks: capture's release queue is deeper than
        the ring while it is alive."""
        try:
            sockets.send(self.releases, *SlotRelease(slot, gen).to_parts(), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _track(self, message: PostprocessedFrame, overlay: np.ndarray | None) -> Assignment:
        """Track ids and classes of the frame's instances, and the track-coloured overlay drawn."""
        handle = message.handle
        instances = message.instances or ()
        crops = message.crops() or []
        if len(crops) != len(instances):
            raise ValueError(f"frame {handle.seq}: {len(instances)} instances but {len(crops)} masks")
        detections = Detections.of([d["box"] for d in instances], [d["score"] for d in instances],
                                   [d["class_id"] for d in instances], crops)
        boxes = detections.boxes
        assignment = self.tracking.track(handle.stream, handle.seq, handle.pts,
                                         None if handle.tb is None else Fraction(*handle.tb), handle.capture_ns,
                                         self._stream_fps[handle.stream], (handle.h, handle.w), detections)
        if overlay is not None:
            from pipeline.ops.track_overlay import draw_tracked

            draw_tracked(overlay, crops, boxes, assignment.classes, assignment.track_ids, self.class_names,
                         self.config.output.overlay_alpha)
        self.stats["tracks"][handle.stream] = self.tracking.trackers[handle.stream].next_id - 1
        return assignment

    def _result(self, message: PostprocessedFrame, tracked: Assignment | None) -> FrameResult:
        handle = message.handle
        found = message.instances or ()
        track_ids = tracked.track_ids if tracked else [None] * len(found)
        classes = tracked.classes if tracked else [d["class_id"] for d in found]
        return FrameResult(
            stream=handle.stream,
            seq=handle.seq,
            width=handle.w,
            height=handle.h,
            model_id=self._model_facts[0],
            task=self._model_facts[1],
            class_names=list(self.class_names),
            untrained=self._model_facts[2],
            pts=handle.pts,
            time_base=None if handle.tb is None else Fraction(*handle.tb),
            capture_ns=handle.capture_ns,
            dropped_since_last=handle.dropped,
            instances=[
                Instance(d["id"], class_id, d["score"], tuple(d["box"]), d["mask"], track_id)
                for d, class_id, track_id in zip(found, classes, track_ids, strict=True)
            ],
            class_map=message.class_map,
            panoptic=message.panoptic,
            segments=list(message.segments or ()),
        )

    def publish(self, message: PostprocessedFrame) -> bool:
        """Write, send and save one frame's results; True if it closed an overlay segment."""
        handle = message.handle
        writer = self.writers.get(handle.stream)
        overlay = image = None
        if writer is not None or self.mcap is not None:
            # a copy (the overlay, else the frame for --mcap), checked to be this frame's: a restarted
            # capture may be rewriting the slot (a stale frame raises here and is dropped, nothing published)
            image = self.ring.copy_image(handle.slot, handle.h, handle.w, handle.gen, overlay=writer is not None)
            overlay = image if writer is not None else None
        tracked = self._track(message, overlay) if self.tracking is not None else None
        result = self._result(message, tracked)
        self.stats["frames_done"] += 1
        self.stats["frames_dropped"] += result.dropped_since_last
        per_stream = self.stats["streams"].setdefault(result.stream, {"frames": 0, "dropped": 0})
        per_stream["frames"] += 1
        per_stream["dropped"] += result.dropped_since_last
        segment_closed = False
        if writer is not None:
            segment_closed = writer.write(overlay, handle.pts)
            self.stats["frames_written"] += 1
        if self.pub is not None:
            wire_header, wire_buffers = result.to_wire()
            wire_header["publish_ns"] = time.time_ns()
            wire_header["run"] = self.plan.run_id
            self.pub.send_multipart(messages.encode_envelope(result.stream, wire_header, wire_buffers), copy=False)
            self.stats["frames_published"] += 1
        if self.results_file is not None:
            # ``run`` as on the wire: JSON lines carry the header's keys (docs/PROTOCOL.md)
            record = {**result.to_json(), "run": self.plan.run_id}
            if self.panoptic_pngs is not None and result.panoptic is not None:
                record["panoptic"]["file_name"] = name = frame_png_name(result.stream, result.seq)
                write_id_png(self.panoptic_pngs / name, result.panoptic)
            self.results_file.write(json.dumps(record, separators=(",", ":")) + "\n")
        if self.mcap is not None:
            self.mcap.write(result, image, overlay=writer is not None)
        if result.capture_ns:
            self.latencies_ms.append((time.time_ns() - result.capture_ns) / 1e6)
            self._recent_latencies_ms.append(self.latencies_ms[-1])
        if self.preview is not None or self.foxglove is not None:  # live views: pixels only if watched, and
            pixels = image if image is not None else functools.cache(lambda: self._source_frame(handle))  # copied once
            if self.preview is not None:
                self.preview.frame(result, pixels, per_stream)
            if self.foxglove is not None:
                self.foxglove.frame(result, pixels, overlay=writer is not None)
        return segment_closed

    def _source_frame(self, handle: Any) -> np.ndarray | None:
        """A copy of the frame's source pixels; None if its ring slot is being rewritten."""
        try:
            return self.ring.copy_image(handle.slot, handle.h, handle.w, handle.gen)
        except RingOverwriteError:
            return None

    def _progress(self, force: bool = False) -> None:
        """Every ``PROGRESS_EVERY_S`` (or now): frames done, and the latencies and status
        events since the previous progress event."""
        now = time.monotonic()
        if force or now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self.emit(EventKind.PROGRESS, frames=self.stats["frames_done"],
                      latencies_ms=self._recent_latencies_ms, status=self._recent_status)
            self._recent_latencies_ms, self._recent_status = [], []

    def close(self) -> None:
        for live in (getattr(self, "preview", None), getattr(self, "foxglove", None)):
            if live is not None:
                live.close()  # viewers disconnected, the port free
        if self.curve is not None:
            self.curve.stop()
        super().close()
        remove_ipc_file(getattr(self, "ipc_file", None))  # after the context is gone: nothing listens on it any more

    def _finish(self) -> None:
        self.finished = True
        # every stream ends with ``eos`` on the wire, so a consumer can tell the run is over
        # (capture sends it for each stream of a multi-stream run; a single stream ends here)
        for stream in self.plan.streams:
            if stream["id"] not in self.eos_sent:
                self._publish_status(status_message({"event": "eos", "detail": "end of stream"}, stream["id"]))
        for writer in self.writers.values():
            writer.close()
        if self.results_file is not None:
            self.results_file.close()
        if self.mcap is not None:
            self.mcap.close()  # PATH.partial renamed to PATH
        for slot, gen in self.ledger.commit_all():
            self._release(slot, gen)
        self._committed_stats = self._stats_snapshot()
        if self.tracking is not None:
            self._committed_tracks = {sid: self.tracking.stream_state(sid) for sid in self.tracking.trackers}
        self._save_progress()
        if self.latencies_ms:
            p50, p95, p99 = np.percentile(np.asarray(self.latencies_ms), [50, 95, 99])
            self.stats["latency_ms"] = {"p50": float(p50), "p95": float(p95), "p99": float(p99)}
        self._progress(force=True)  # the last latencies
