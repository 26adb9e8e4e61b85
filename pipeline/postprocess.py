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
from pipeline.ops.panoptic_fusion import PanopticSegment
from pipeline.ops.paste import MaskCrop, paste_masks
from pipeline.ops.rle import encode_crop
from pipeline.ops.semantic import resize_class_map
from pipeline.panoptic import PanopticLabels, PanopticParams, panoptic_frame
from pipeline.results import Instance

STUFF_ALPHA = 0.6  # panoptic overlay: stuff is blended at this fraction of the things' alpha


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


@dataclass
class PanopticFrame:
    """A frame's panoptic segmentation: its instances (class ids published, see
    ``PanopticLabels``), the segment-id map [H, W] uint32 (0 = void) and its segments."""

    details: InstanceFrame
    segment_map: np.ndarray
    segments: list[PanopticSegment]


def panoptic_from_output(
    details: InstanceFrame, class_map: np.ndarray, labels: PanopticLabels, params: PanopticParams
) -> PanopticFrame:
    """Fuse a frame's instances (``instances_from_output``) with the semantic model's
    frame-size class map (``class_map_from_output``), the Panoptic FPN way."""
    published = labels.published_labels(details.labels)
    for instance, class_id in zip(details.instances, published.tolist(), strict=True):
        instance.class_id = int(class_id)
    details = InstanceFrame(details.instances, details.crops, details.boxes, published, details.scores)
    segment_map, segments = panoptic_frame(
        class_map.shape, [(c.x0, c.y0, c.mask) for c in details.crops], details.scores, published, class_map,
        labels, params,
    )  # fmt: skip
    return PanopticFrame(details, segment_map, segments)


def draw_panoptic(
    image: np.ndarray,
    result: PanopticFrame,
    class_names: Sequence[str],
    alpha: float,
    palette: np.ndarray,
    things: bool = True,
) -> None:
    """Draw a panoptic frame onto ``image`` in place: stuff segments translucently (at
    ``STUFF_ALPHA`` of ``alpha``), then (``things``) the instances that became segments,
    with masks, box outlines and labels."""
    from pipeline.ops.overlay import draw_instances, draw_semantic  # OpenCV only where drawn

    stuff = [s for s in result.segments if not s.isthing]
    if stuff:
        table = np.zeros(int(result.segment_map.max()) + 1, dtype=np.int32)
        for segment in stuff:
            table[segment.id] = segment.category_id
        draw_semantic(image, table[result.segment_map], alpha=alpha * STUFF_ALPHA, palette=palette)
    if not things:
        return
    kept = [s.instance for s in result.segments if s.isthing]
    d = result.details
    draw_instances(image, [d.crops[i] for i in kept], d.boxes[kept], d.labels[kept], d.scores[kept], class_names,
                   alpha=alpha, palette=palette)


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
