"""Postprocess stage: thresholds, class-aware NMS, mask paste-back, RLE, and the overlay.

The overlay is drawn here, into the slot's overlay region (a copy of the frame), so that
OpenCV (drawing) and PyAV (encoding, in the publish stage) never share a process: both ship
FFmpeg libraries.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.ops.overlay import class_palette, draw_instances, draw_semantic
from pipeline.postprocess import PostprocessParams, class_map_from_output, instances_from_output
from pipeline.stages.base import Stage
from pipeline.transport import sockets


def _tensor(buffer, dtype, shape, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(buffer, dtype=dtype).reshape(shape)).to(device)


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
        self.alpha = self.config.output.overlay_alpha
        self.palette = class_palette(len(self.spec.class_names))
        # with --device cuda, NMS and paste-back run on the GPU too; only crops come back
        self.device = torch.device(model.device if model.device == "cpu" or torch.cuda.is_available() else "cpu")
        self.stats.update(instances=0)

    def warm_up(self) -> None:
        image = self.blank_frame()
        frame_size = image.shape[:2]
        if self.spec.task == "semantic":
            class_map = class_map_from_output(np.ones((32, 32), np.uint8), frame_size)
            draw_semantic(image, class_map, alpha=self.alpha, palette=self.palette)
            return
        h, w = frame_size
        boxes = torch.tensor([[0.0, 0.0, w / 2, h / 2], [w / 4, h / 4, w * 0.75, h * 0.75]], device=self.device)
        result = instances_from_output(
            boxes, torch.ones(2, device=self.device), torch.ones(2, dtype=torch.int64, device=self.device),
            torch.full((2, 28, 28), 0.9, device=self.device), (h, w), frame_size,
            PostprocessParams(0.0, self.params.nms_iou, self.params.mask_threshold, self.params.max_detections),
        )
        draw_instances(image, result.crops, result.boxes, result.labels, result.scores,
                       self.spec.class_names, alpha=self.alpha, palette=self.palette)

    def loop(self) -> None:
        while True:
            header, buffers = self.recv(self.upstream)
            if header["type"] != "frame":
                if self.relay(header):
                    return
                continue
            if self.is_stale(header):
                continue
            with self.unless_stale():
                buffers = self.absorb_inline(header, buffers)
                with self.busy():
                    out_header, out_buffers = self.process(header, buffers)
                self.forward(self.downstream, out_header, out_buffers)

    def process(self, header: dict, buffers: list) -> tuple[dict, list]:
        frame_size = (header["h"], header["w"])
        in_size = tuple(header.pop("in_size"))
        # drawn on a private copy, then stored in the slot's overlay region in one go: the
        # decoded frame stays clean for a replay, and a replayed copy rewrites the region
        # with the very same bytes while publish may be encoding it
        image = np.array(self.frame_view(header)) if self.draw else None
        if "n" in header:
            n, m = header.pop("n"), header.pop("mask_size")
            result = instances_from_output(
                _tensor(buffers[0], np.float32, (n, 4), self.device),
                _tensor(buffers[1], np.float32, (n,), self.device),
                _tensor(buffers[2], np.int64, (n,), self.device),
                _tensor(buffers[3], np.float32, (n, m, m), self.device),
                in_size,
                frame_size,
                self.params,
            )
            self.stats["instances"] += len(result.instances)
            if image is not None:
                draw_instances(
                    image, result.crops, result.boxes, result.labels, result.scores,
                    self.spec.class_names, alpha=self.alpha, palette=self.palette,
                )
            if image is not None:
                self.ring.overlay(header["slot"], *frame_size)[...] = image
            header["instances"] = [
                {"id": i.id, "class_id": i.class_id, "score": i.score, "box": list(i.box), "mask": i.rle}
                for i in result.instances
            ]
            return header, []
        small = np.frombuffer(buffers[0], np.uint8).reshape(header.pop("map_shape"))
        class_map = class_map_from_output(small.copy(), frame_size)
        if image is not None:
            draw_semantic(image, class_map, alpha=self.alpha, palette=self.palette)
            self.ring.overlay(header["slot"], *frame_size)[...] = image
        header["semantic"] = True
        return header, [class_map]
