"""Box operations: rescaling between image sizes, clipping, score/NMS filtering.

All functions take and return ``torch.Tensor`` boxes in ``(x0, y0, x1, y1)`` order
(absolute pixel coordinates) and run on whatever device the inputs live on.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms

__all__ = ["clip_boxes", "filter_detections", "rescale_boxes"]


def rescale_boxes(boxes: Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> Tensor:
    """Map ``boxes`` [N, 4] from an image of ``from_size`` (h, w) to one of ``to_size`` (h, w).

    x coordinates scale by the width ratio and y by the height ratio. The ratios are
    float32 tensors divided on the boxes' device, which is the arithmetic torchvision's
    detection transform uses, so results are bit-identical to its ``resize_boxes``.
    """
    dev = boxes.device
    ratio_h = torch.tensor(to_size[0], dtype=torch.float32, device=dev) / torch.tensor(
        from_size[0], dtype=torch.float32, device=dev
    )
    ratio_w = torch.tensor(to_size[1], dtype=torch.float32, device=dev) / torch.tensor(
        from_size[1], dtype=torch.float32, device=dev
    )
    x0, y0, x1, y1 = boxes.unbind(1)
    return torch.stack((x0 * ratio_w, y0 * ratio_h, x1 * ratio_w, y1 * ratio_h), dim=1)


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clamp ``boxes`` [N, 4] into an image of ``size`` (h, w): x to [0, w], y to [0, h]."""
    h, w = size
    x = boxes[:, 0::2].clamp(min=0, max=w)
    y = boxes[:, 1::2].clamp(min=0, max=h)
    return torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)


def filter_detections(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    mask_probs: Tensor | None,
    score_threshold: float,
    nms_iou: float,
    max_detections: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Score threshold, class-aware NMS and top-k over one image's detections.

    Detections with ``score < score_threshold`` are dropped (a score equal to the
    threshold is kept). NMS is per class (``torchvision.ops.batched_nms``); ``nms_iou >= 1``
    disables it, since no pair of distinct boxes can exceed an IoU of 1. The survivors are
    returned sorted by descending score (ties keep input order), at most ``max_detections``.
    ``mask_probs`` (any shape with N first) is filtered alongside, or passed through as None.
    """
    keep = torch.nonzero(scores >= score_threshold).squeeze(1)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if mask_probs is not None:
        mask_probs = mask_probs[keep]
    if nms_iou < 1.0:
        # batched_nms already returns indices ordered by decreasing score.
        order = batched_nms(boxes.float(), scores.float(), labels, float(nms_iou))
    else:
        order = torch.sort(scores, descending=True, stable=True).indices
    order = order[: max(int(max_detections), 0)]
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    if mask_probs is not None:
        mask_probs = mask_probs[order]
    return boxes, scores, labels, mask_probs
