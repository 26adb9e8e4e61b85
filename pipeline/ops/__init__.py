"""Pure functions on arrays and tensors: boxes/NMS, mask paste-back, RLE, overlays, metrics.

Nothing here knows about processes or sockets, so every op is unit-testable on its own
and shared by the pipeline stages and the in-process reference path.

Names load from their module on first use: a stage that only encodes RLE (publish) must
not pay seconds importing torch, nor one that only pastes masks import OpenCV.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_MODULE_OF = {
    "clip_boxes": "boxes",
    "filter_detections": "boxes",
    "rescale_boxes": "boxes",
    "accumulate": "metrics",
    "confusion_matrix": "metrics",
    "semantic_scores": "metrics",
    "MaskCrop": "paste",
    "crop_to_full": "paste",
    "paste_masks": "paste",
    "paste_masks_reference": "paste",
    "area": "rle",
    "decode": "rle",
    "encode_crop": "rle",
    "encode_mask": "rle",
    "logits_to_class_map": "semantic",
    "resize_class_map": "semantic",
    "class_palette": "overlay",
    "draw_instances": "overlay",
    "draw_semantic": "overlay",
}

if TYPE_CHECKING:
    from .boxes import clip_boxes, filter_detections, rescale_boxes
    from .metrics import accumulate, confusion_matrix, semantic_scores
    from .overlay import class_palette, draw_instances, draw_semantic
    from .paste import MaskCrop, crop_to_full, paste_masks, paste_masks_reference
    from .rle import area, decode, encode_crop, encode_mask
    from .semantic import logits_to_class_map, resize_class_map


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "MaskCrop",
    "accumulate",
    "area",
    "class_palette",
    "clip_boxes",
    "confusion_matrix",
    "crop_to_full",
    "decode",
    "draw_instances",
    "draw_semantic",
    "encode_crop",
    "encode_mask",
    "filter_detections",
    "logits_to_class_map",
    "paste_masks",
    "paste_masks_reference",
    "rescale_boxes",
    "resize_class_map",
    "semantic_scores",
]
