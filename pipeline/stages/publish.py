"""Publish stage: encodes the overlay video, publishes results on PUB, saves JSON lines,
and returns each frame's ring slot to capture once nothing needs it any more.
"""

from __future__ import annotations

import json
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import zmq

from pipeline import messages
from pipeline.results import FrameResult, Instance
from pipeline.sinks.video_writer import VideoWriter
from pipeline.stages.base import Stage
from pipeline.transport import sockets

PROGRESS_EVERY_S = 0.25


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
        self.spec = self.plan.model_spec()
        self.writers: dict[str, VideoWriter] = {}
        if out.video:
            Path(out.video).parent.mkdir(parents=True, exist_ok=True)
            for stream in self.plan.streams:
                info = self.plan.source_info(stream["id"])
                self.writers[stream["id"]] = VideoWriter(
                    self.video_path(out.video, stream["id"]), info.width, info.height,
                    fps=info.fps or Fraction(30), time_base=info.time_base, codec=out.codec,
                )
        self.results_file = None
        if out.save_results:
            Path(out.save_results).parent.mkdir(parents=True, exist_ok=True)
            self.results_file = open(out.save_results, "w")  # noqa: SIM115 - closed in loop()
        self.latencies_ms: list[float] = []
        self.stats.update(frames_written=0, frames_published=0, frames_dropped=0, frames_done=0, status_events={}, streams={})
        self._last_progress = 0.0

    def video_path(self, path: str, stream: str) -> str:
        """One overlay video per stream: ``out.mp4`` for one stream, ``out-0.mp4``, ``out-1.mp4``... for several."""
        if len(self.plan.streams) <= 1:
            return path
        p = Path(path)
        return str(p.with_name(f"{p.stem}-{stream}{p.suffix}"))

    def ready_info(self) -> dict:
        endpoint = self.pub.getsockopt(zmq.LAST_ENDPOINT).decode() if self.pub is not None else None
        return {"publish_endpoint": endpoint}

    def loop(self) -> None:
        try:
            while True:
                header, buffers = self.recv(self.upstream)
                if header["type"] == "eos":
                    break
                if header["type"] == "status":
                    self._publish_status(header["status"])
                    continue
                buffers = self.absorb_inline(header, buffers)
                with self.busy():
                    self.publish(header, buffers)
                self._release(header["slot"])
                self._progress()
        finally:
            self._finish()

    def _publish_status(self, status: dict) -> None:
        self.stats["status_events"][status["event"]] = self.stats["status_events"].get(status["event"], 0) + 1
        if self.pub is not None:
            self.pub.send_multipart(messages.encode_envelope(status["stream"], status), copy=False)

    def _release(self, slot: int) -> None:
        """Return a slot to capture. Never blocks: once capture has finished reading it
        has left, and its release queue is deeper than the ring while it is alive."""
        try:
            sockets.send(self.releases, {"slot": slot}, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _result(self, header: dict, buffers: list) -> FrameResult:
        tb = header.get("tb")
        class_map = None
        if header.get("semantic"):
            class_map = np.frombuffer(buffers[0], np.uint8).reshape(header["h"], header["w"])
        return FrameResult(
            stream=header["stream"],
            seq=header["seq"],
            width=header["w"],
            height=header["h"],
            model_id=self.spec.model_id,
            task=self.spec.task,
            class_names=list(self.spec.class_names),
            untrained=self.spec.untrained,
            pts=header.get("pts"),
            time_base=None if tb is None else Fraction(*tb),
            capture_ns=header.get("capture_ns", 0),
            dropped_since_last=header.get("dropped", 0),
            instances=[
                Instance(d["id"], d["class_id"], d["score"], tuple(d["box"]), d["mask"])
                for d in header.get("instances", [])
            ],
            class_map=class_map,
        )

    def publish(self, header: dict, buffers: list) -> None:
        result = self._result(header, buffers)
        self.stats["frames_done"] += 1
        self.stats["frames_dropped"] += result.dropped_since_last
        per_stream = self.stats["streams"].setdefault(result.stream, {"frames": 0, "dropped": 0})
        per_stream["frames"] += 1
        per_stream["dropped"] += result.dropped_since_last
        writer = self.writers.get(result.stream)
        if writer is not None:
            writer.write(self.frame_view(header), header.get("pts"))
            self.stats["frames_written"] += 1
        if self.pub is not None:
            wire_header, wire_buffers = result.to_wire()
            wire_header["publish_ns"] = time.time_ns()
            self.pub.send_multipart(messages.encode_envelope(result.stream, wire_header, wire_buffers), copy=False)
            self.stats["frames_published"] += 1
        if self.results_file is not None:
            self.results_file.write(json.dumps(result.to_json(), separators=(",", ":")) + "\n")
        if result.capture_ns:
            self.latencies_ms.append((time.time_ns() - result.capture_ns) / 1e6)

    def _progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self.emit("progress", frames=self.stats["frames_done"])

    def close(self) -> None:
        if self.curve is not None:
            self.curve.stop()
        super().close()

    def _finish(self) -> None:
        for writer in self.writers.values():
            writer.close()
        if self.results_file is not None:
            self.results_file.close()
        if self.latencies_ms:
            p50, p95, p99 = np.percentile(np.asarray(self.latencies_ms), [50, 95, 99])
            self.stats["latency_ms"] = {"p50": float(p50), "p95": float(p95), "p99": float(p99)}
