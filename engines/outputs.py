"""Raw per-image model outputs, in model-input coordinates (before paste-back / rescale)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class InstanceOutput:
    """Detections of one image, in the coordinates of the resized model input.

    boxes: [N, 4] float32 (x0, y0, x1, y1); scores: [N] float32; labels: [N] int64 (class ids,
    0 = background never appears); mask_probs: [N, M, M] float32 in [0, 1] (class already
    gathered, sigmoid applied; M = 28 for torchvision heads).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    mask_probs: torch.Tensor


@dataclass
class SemanticOutput:
    """Per-pixel classes of one image at model-input size (unpadded): [h, w] uint8."""

    class_map: torch.Tensor
