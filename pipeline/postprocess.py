"""Frame-level postprocessing: raw model outputs -> published results (+ overlay drawing).

Composes the pure ops; used unchanged by the postprocess stage and by the in-process
reference path, which is what makes the pipeline-vs-reference comparison meaningful.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.ops.boxes import filter_detections, rescale_boxes
from pipeline.ops.paste import MaskCrop, paste_masks
from pipeline.ops.rle import encode_crop
from pipeline.ops.semantic import resize_class_map
from pipeline.results import Instance


@dataclass(frozen=True)
class PostprocessParams:
    score_threshold: float = 0.5
    nms_iou: float = 0.5
    mask_threshold: float = 0.5
    max_detections: int = 100


@dataclass
class InstanceFrame:
    """Instances of one frame in frame coordinates, ready to publish and to draw."""

    instances: list[Instance]
    crops: list[MaskCrop]
    boxes: np.ndarray  # [N, 4] float32
    labels: np.ndarray  # [N] int64
    scores: np.ndarray  # [N] float32


def instances_from_output(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask_probs: torch.Tensor,
    input_size: tuple[int, int],
    frame_size: tuple[int, int],
    params: PostprocessParams,
) -> InstanceFrame:
    """Threshold, class-aware NMS, rescale to the frame, paste masks back and RLE-encode them."""
    boxes, scores, labels, mask_probs = filter_detections(
        boxes, scores, labels, mask_probs, params.score_threshold, params.nms_iou, params.max_detections
    )
    boxes = rescale_boxes(boxes, input_size, frame_size)
    crops = paste_masks(mask_probs, boxes, frame_size, threshold=params.mask_threshold)
    height, width = frame_size
    boxes_np = boxes.detach().cpu().numpy().astype(np.float32)
    scores_np = scores.detach().cpu().numpy().astype(np.float32)
    labels_np = labels.detach().cpu().numpy().astype(np.int64)
    instances = [
        Instance(
            id=i,
            class_id=int(labels_np[i]),
            score=float(scores_np[i]),
            box=tuple(float(v) for v in boxes_np[i]),
            rle=encode_crop(crops[i], height, width),
        )
        for i in range(len(crops))
    ]
    return InstanceFrame(instances, crops, boxes_np, labels_np, scores_np)


def class_map_from_output(class_map: torch.Tensor | np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Model-input-size class map -> frame-size uint8 class map (nearest neighbour)."""
    if isinstance(class_map, np.ndarray):
        class_map = torch.from_numpy(class_map)
    return resize_class_map(class_map, frame_size)


def draw_result(
    image: np.ndarray,
    details: InstanceFrame | None,
    class_map: np.ndarray | None,
    class_names: Sequence[str],
    alpha: float,
    palette: np.ndarray,
) -> None:
    """Draw one frame's results onto ``image`` in place: its instances, else its class map
    (the overlay the postprocess stage, the reference loop and the benchmarks all draw)."""
    from pipeline.ops.overlay import draw_instances, draw_semantic  # OpenCV only where drawn

    if details is not None:
        draw_instances(image, details.crops, details.boxes, details.labels, details.scores, class_names,
                       alpha=alpha, palette=palette)
    else:
        draw_semantic(image, class_map, alpha=alpha, palette=palette)
