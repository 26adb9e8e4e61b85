"""Pure functions on arrays and tensors: boxes/NMS, mask paste-back, RLE, overlays, metrics.

Nothing here knows about processes or sockets, so every op is unit-testable on its own
and shared by the pipeline stages and the in-process reference path.
"""

from .boxes import clip_boxes, filter_detections, rescale_boxes
from .metrics import accumulate, confusion_matrix, semantic_scores
from .paste import MaskCrop, crop_to_full, paste_masks, paste_masks_reference
from .rle import area, decode, encode_crop, encode_mask
from .semantic import logits_to_class_map, resize_class_map

# Overlay drawing needs OpenCV; import it on first use so stages that only paste or
# encode masks do not load cv2.
_OVERLAY_NAMES = ("class_palette", "draw_instances", "draw_semantic")


def __getattr__(name: str) -> object:
    if name in _OVERLAY_NAMES:
        from . import overlay

        return getattr(overlay, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
