"""Postprocess stage: thresholds, class-aware NMS, mask paste-back, RLE, and the overlay;
in panoptic mode also the fusion of instances and class map into one segment map.

The overlay is drawn here, into the slot's overlay region (a copy of the frame), so that
OpenCV (drawing) and PyAV (encoding, in the publish stage) never share a process: both ship
FFmpeg libraries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pipeline.ops.overlay import class_palette
from pipeline.panoptic import PanopticParams, segment_record
from pipeline.postprocess import (
    InstanceFrame,
    PanopticFrame,
    PostprocessParams,
    class_map_from_output,
    draw_panoptic,
    draw_result,
    instances_from_output,
    panoptic_from_output,
)
from pipeline.stage_messages import (
    PostprocessedFrame,
    RawClassMap,
    RawInstances,
    RawPanoptic,
    raw_output_from_parts,
)
from pipeline.stages.base import Stage
from pipeline.transport import sockets


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A received array as a tensor on ``device`` (on the CPU: the same memory, no copy)."""
    return torch.from_numpy(array).to(device)


class PostprocessStage(Stage):
    name = "postprocess"

    def setup(self) -> None:
        hwm = self.config.transport.queue_depth
        self.upstream = sockets.pull(self.ctx, self.plan.endpoints["postprocess_in"], hwm=hwm)
        self.downstream = sockets.push(self.ctx, self.plan.endpoints["publish_in"], hwm=hwm, lossless=True)
        self.spec = self.plan.model_spec()
        model = self.config.model
        self.params = PostprocessParams(model.score_threshold, model.nms_iou, model.mask_threshold, model.max_detections)
        self.draw = self.config.output.video is not None
        # tracked instances are drawn by publish, after the tracker named them: here the
        # overlay is the plain frame, and the masks travel on for tracking and drawing
        self.tracking = self.plan.tracking()
        self.alpha = self.config.output.overlay_alpha
        # panoptic mode: both models' classes in one list (pipeline/panoptic.py)
        self.panoptic = self.plan.panoptic_labels()
        self.class_names = self.panoptic.class_names if self.panoptic else self.spec.class_names
        self.panoptic_params = PanopticParams(model.score_threshold, model.panoptic_overlap, model.stuff_min_area)
        self.palette = class_palette(len(self.class_names))
        # with --device cuda, NMS and paste-back run on the GPU too; only crops come back
        self.device = torch.device(model.device if model.device == "cpu" or torch.cuda.is_available() else "cpu")
        self.stats.update(instances=0)

    def warm_up(self) -> None:
        image = self.blank_frame()
        frame_size = image.shape[:2]
        if self.spec.task == "semantic":
            class_map = class_map_from_output(np.ones((32, 32), np.uint8), frame_size)
            draw_result(image, None, class_map, self.spec.class_names, self.alpha, self.palette)
            return
        h, w = frame_size
        boxes = torch.tensor([[0.0, 0.0, w / 2, h / 2], [w / 4, h / 4, w * 0.75, h * 0.75]], device=self.device)
        result = instances_from_output(
            boxes, torch.ones(2, device=self.device), torch.ones(2, dtype=torch.int64, device=self.device),
            torch.full((2, 28, 28), 0.9, device=self.device), (h, w), frame_size,
            PostprocessParams(0.0, self.params.nms_iou, self.params.mask_threshold, self.params.max_detections),
        )
        draw_result(image, result, None, self.class_names, self.alpha, self.palette)

    def decode_frame(self, header: dict[str, Any], buffers: Sequence[Any]) -> RawInstances | RawClassMap:
        return raw_output_from_parts(header, buffers)

    def process(self, message: RawInstances | RawClassMap | RawPanoptic) -> PostprocessedFrame:
        """Instances (or the frame-size class map, or both fused) of one frame, and its
        overlay in the slot."""
        handle = message.handle
        frame_size = (handle.h, handle.w)
        if isinstance(message, RawClassMap):
            class_map = class_map_from_output(message.class_map.copy(), frame_size)
            if self.draw:
                image = np.array(self.frame_view(handle))
                draw_result(image, None, class_map, self.class_names, self.alpha, self.palette)
                self._store_overlay(message, image)
            return PostprocessedFrame(message.frame, class_map=class_map)
        result = instances_from_output(
            *(_tensor(a, self.device) for a in (message.boxes, message.scores, message.labels, message.mask_probs)),
            message.in_size, frame_size, self.params,
        )  # fmt: skip
        fused = None
        if isinstance(message, RawPanoptic):
            class_map = class_map_from_output(message.class_map.copy(), frame_size)
            fused = panoptic_from_output(result, class_map, self.panoptic, self.panoptic_params)
            result = fused.details
        self.stats["instances"] += len(result.instances)
        if self.draw:
            self._draw_instances(message, result, fused)
        instances = [
            {"id": i.id, "class_id": i.class_id, "score": i.score, "box": list(i.box), "mask": i.rle}
            for i in result.instances
        ]
        rects = bits = None
        if self.tracking:
            rects, bits = PostprocessedFrame.pack_crops(result.crops)
        if fused is None:
            return PostprocessedFrame(message.frame, instances=instances, crop_rects=rects, crop_bits=bits)
        return PostprocessedFrame(message.frame, instances=instances, crop_rects=rects, crop_bits=bits,
                                  panoptic=fused.segment_map, segments=tuple(segment_record(s) for s in fused.segments))

    def _draw_instances(self, message: RawInstances, result: InstanceFrame, fused: PanopticFrame | None) -> None:
        """The overlay of an instance (or panoptic) frame. Tracked instances are drawn by
        publish, once the tracker named them: the overlay region then gets the plain frame
        (panoptic: with its stuff drawn), copied straight across when there is nothing to draw."""
        if self.tracking and fused is None:
            self.ring.overlay(message.handle.slot, message.handle.h, message.handle.w)[...] = \
                self.frame_view(message.handle)
            return
        image = np.array(self.frame_view(message.handle))
        if fused is not None:
            draw_panoptic(image, fused, self.class_names, self.alpha, self.palette, things=not self.tracking)
        else:
            draw_result(image, result, None, self.class_names, self.alpha, self.palette)
        self._store_overlay(message, image)

    def _store_overlay(self, message: RawInstances | RawClassMap, image: np.ndarray) -> None:
        """Drawn on a private copy, then stored in the slot's overlay region in one go: the
        decoded frame stays clean for a replay, and a replayed copy rewrites the region with
        the very same bytes while publish may be encoding it."""
        self.ring.overlay(message.handle.slot, message.handle.h, message.handle.w)[...] = image
