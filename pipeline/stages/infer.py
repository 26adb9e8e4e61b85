"""Infer stage: groups waiting frames into batches and runs the model once per batch.

For a file (one stream, lossless) batches are fixed by seq (frames ``k*batch_size`` to
``(k+1)*batch_size - 1``), so results never depend on timing, and a replay after a restart
reproduces them bit for bit. For live feeds and several streams a batch closes when it holds
``batch_size`` frames or ``max_wait_ms`` has passed since its first frame arrived, whichever
comes first. Results go downstream one message per frame, with the raw outputs as binary
buffers. In panoptic mode a semantic model runs on every batch too, after the instance
model, on the same frames (on the same prepared input when both take the same transform).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from engines.outputs import InstanceOutput
from engines.transform import prepare_image
from pipeline.inference import (
    auto_probe,
    infer_images,
    open_backend,
    same_transform,
    semantic_model_config,
)
from pipeline.plan import spec_to_dict
from pipeline.policies.fixed_batches import FixedBatches
from pipeline.stage_messages import (
    Admission,
    EndOfStream,
    PreparedFrame,
    RawClassMap,
    RawInstances,
    RawPanoptic,
)
from pipeline.stages.base import Stage
from pipeline.transport import sockets
from pipeline.transport.shm import RingOverwriteError


class InferStage(Stage):
    name = "infer"

    def setup(self) -> None:
        threads = self.plan.stage_budget(self.name).threads
        probe = None
        if self.config.model.backend == "auto":
            probe = auto_probe((self.plan.source["height"], self.plan.source["width"]),
                               self.config.batching.batch_size, threads)
        self.backend = open_backend(self.config.model, probe, threads)
        self.spec = self.backend.spec
        self.device = self.backend.device
        semantic = semantic_model_config(self.config.model)
        # panoptic mode: the semantic model, run on the same batches (same threads: the two
        # models take turns)
        self.semantic = open_backend(semantic, probe, threads) if semantic is not None else None
        self.shared_input = self.semantic is not None and same_transform(self.spec, self.semantic.spec)
        self._pinned: dict[int, torch.Tensor] = {}
        hwm = self.config.transport.queue_depth
        self.upstream = sockets.pull(self.ctx, self.plan.endpoints["infer_in"], hwm=hwm)
        self.downstream = sockets.push(self.ctx, self.plan.endpoints["postprocess_in"], hwm=hwm, lossless=True)
        # live feeds: capture admits a frame only while the model's next batch has room
        self.admissions = None
        if self.plan.admissions():
            self.admissions = sockets.push(self.ctx, self.plan.endpoints["admissions"], hwm=1000)
        self.last_batch_s: float | None = None  # how long the model's last batch ran
        self.fixed_batch = self.plan.fixed_batch_size()
        # files: batches fixed by seq (see pipeline/policies/fixed_batches.py)
        self.fixed = FixedBatches(self.fixed_batch) if self.fixed_batch is not None else None
        self.stats.update(frames_processed=0, batches=0, batch_s_max=0.0, backend=self.backend.name)

    def warm_up(self) -> None:
        for backend in (self.backend, self.semantic):
            if backend is not None:
                image = prepare_image(torch.from_numpy(self.blank_frame()), backend.spec, device=backend.device)
                infer_images(backend, [image] * self.config.batching.batch_size)

    def ready_info(self) -> dict:
        info = {"spec": spec_to_dict(self.spec), "backend": self.backend.name, "selection": self.backend.selection}
        if self.semantic is not None:
            info["semantic_spec"] = spec_to_dict(self.semantic.spec)
        return info

    def loop(self) -> None:
        if self.fixed_batch is not None:
            self._loop_fixed_batches()
        else:
            self._loop_timed_batches()

    def decode_frame(self, header: dict[str, Any], buffers: Sequence[Any]) -> PreparedFrame:
        return PreparedFrame.from_parts(header, buffers)

    def _loop_timed_batches(self) -> None:
        """Live feeds and several streams: a batch is whatever waits, up to ``batch_size``
        frames or ``max_wait_ms`` after its first frame."""
        batching = self.config.batching
        while True:
            message = self.receive(self.upstream)
            if not isinstance(message, PreparedFrame):
                if self.relay(message):
                    return
                continue
            batch = [message]
            after = None  # a non-frame message closes the batch and follows it
            deadline = time.monotonic() + batching.max_wait_ms / 1000
            while len(batch) < batching.batch_size:
                remaining_ms = (deadline - time.monotonic()) * 1000
                if remaining_ms <= 0:
                    break
                message = self.receive(self.upstream, timeout_ms=int(remaining_ms) + 1)
                if message is None:
                    break
                if not isinstance(message, PreparedFrame):
                    after = message
                    break
                if any(m.handle.seq == message.handle.seq and m.handle.stream == message.handle.stream for m in batch):
                    continue  # a replayed copy of a frame already in this batch
                batch.append(message)
            if self.admissions is not None:
                sockets.send(self.admissions, *Admission(len(batch), self.last_batch_s).to_parts())
            self.run_batch(batch)
            if after is not None and self.relay(after):
                return

    def _loop_fixed_batches(self) -> None:
        """Files: batch ``k`` is frames ``k*n .. (k+1)*n - 1`` (the last one ends at the
        stream's total, known from end-of-stream). Frames wait in their batch until it is
        whole, whatever order they come in: after a restart, replayed frames fill the gaps
        left by the messages that died with the stage, and the batch is the same as ever."""
        while True:
            message = self.receive(self.upstream)
            if isinstance(message, PreparedFrame):
                self._collect(message)
            elif isinstance(message, EndOfStream):
                self.fixed.end(message.total(self.plan.stream_id))
            for batch in self.fixed.ready():
                self.run_batch(batch)
            if not isinstance(message, PreparedFrame) and self.relay(message):
                return

    def _collect(self, message: PreparedFrame) -> None:
        """File the frame under its batch; a newer copy of a frame (another generation of
        its slot, from a restarted capture) replaces an older one; stale copies go."""
        self.stats["stale_dropped"] += self.fixed.discard(
            lambda item: self.ring.generation(item.handle.slot) != item.handle.gen
        )
        if not self.is_stale(message.handle):
            self.fixed.add(message.handle.seq, message)

    def _model_input(self, message: PreparedFrame, index: int) -> torch.Tensor:
        handle = message.handle
        if message.in_shape is not None:  # prepared on the host by the preprocess stage
            self.ring.check(handle.slot, handle.gen)
            return torch.from_numpy(self.ring.model_input(handle.slot, message.in_shape))
        # GPU path: the uint8 frame goes up once, through a pinned staging buffer (an async
        # copy), and is resized and normalised on the GPU
        frame = torch.from_numpy(self.frame_view(handle))
        staging = self._staging(index, frame.numel())[: frame.numel()].view(frame.shape)
        staging.copy_(frame)
        return prepare_image(staging, self.spec, device=self.device)

    def _staging(self, index: int, numel: int) -> torch.Tensor:
        """Pinned host buffers, one per batch position, reused across batches (safe: the
        previous batch's outputs were copied back, which synchronises its uploads)."""
        if index not in self._pinned or self._pinned[index].numel() < numel:
            self._pinned[index] = torch.empty(numel, dtype=torch.uint8).pin_memory()
        return self._pinned[index]

    def run_batch(self, batch: list[PreparedFrame]) -> None:
        """Run the model once on the batch's fresh frames and forward one message per frame."""
        batch = [message for message in batch if not self.is_stale(message.handle)]
        if not batch:
            return
        started = time.perf_counter()
        with self.busy():
            try:
                batch = [self.absorb_inline(message) for message in batch]
                images = [self._model_input(message, i) for i, message in enumerate(batch)]
                semantic_images = self._semantic_inputs(batch, images) if self.semantic is not None else None
            except RingOverwriteError:  # a capture restart rewrote the ring: drop the batch
                self.stats["stale_dropped"] += len(batch)
                return
            outputs, sizes = infer_images(self.backend, images)
            results = [_raw_output(message, size, out) for message, size, out in zip(batch, sizes, outputs, strict=True)]
            if semantic_images is not None:
                results = self._with_class_maps(results, semantic_images)
        self.stats["batches"] += 1
        self.last_batch_s = time.perf_counter() - started
        self.stats["batch_s_max"] = max(self.stats["batch_s_max"], self.last_batch_s)
        self.stats["frames_processed"] += len(batch)
        for result in results:
            self.forward(self.downstream, result)


    def _semantic_inputs(self, batch: list[PreparedFrame], images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Panoptic mode: the semantic model's inputs (the instance model's, when both take
        the same transform; else its own, from the frames in the slots)."""
        if self.shared_input:
            return images
        return [prepare_image(torch.from_numpy(self.frame_view(m.handle)), self.semantic.spec,
                              device=self.semantic.device) for m in batch]

    def _with_class_maps(self, found: list[RawInstances], images: list[torch.Tensor]) -> list[RawPanoptic]:
        """Panoptic mode: run the semantic model on the batch; both outputs per frame."""
        outputs, sizes = infer_images(self.semantic, images)
        maps = [_raw_output(r.frame, size, out) for r, size, out in zip(found, sizes, outputs, strict=True)]
        return [RawPanoptic(r.frame, r.in_size, r.boxes, r.scores, r.labels, r.mask_probs, m.in_size, m.class_map)
                for r, m in zip(found, maps, strict=True)]


def _raw_output(message: PreparedFrame, size: tuple[int, int], output: Any) -> RawInstances | RawClassMap:
    """One frame's raw model output as the message postprocess takes (arrays on the host)."""
    in_size = (int(size[0]), int(size[1]))
    if isinstance(output, InstanceOutput):
        masks = output.mask_probs
        if masks.ndim == 4 and masks.shape[1] == 1:  # [N, 1, M, M] from some heads
            masks = masks[:, 0]
        boxes, scores, labels, masks = (
            np.ascontiguousarray(t.detach().cpu().numpy())
            for t in (output.boxes.float(), output.scores.float(), output.labels.to(torch.int64), masks.float())
        )
        return RawInstances(message, in_size, boxes, scores, labels, masks)
    class_map = np.ascontiguousarray(output.class_map.to(torch.uint8).detach().cpu().numpy())
    return RawClassMap(message, in_size, class_map)
