"""Semantic-segmentation helpers: logits to class ids, class-map resizing."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["logits_to_class_map", "nearest_source_index", "resize_class_map"]


def logits_to_class_map(logits: Tensor) -> Tensor:
    """Per-pixel argmax of ``logits`` [B, C, H, W] as a uint8 tensor [B, H, W] (same device).

    Ties go to the lowest class id, as ``torch.argmax`` resolves them. More than 256
    classes do not fit in uint8 and raise ``ValueError``.
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be [B, C, H, W], got {tuple(logits.shape)}")
    if logits.shape[1] > 256:
        raise ValueError(f"{logits.shape[1]} classes do not fit in a uint8 class map")
    return logits.argmax(dim=1).to(torch.uint8)


def nearest_source_index(src: int, dst: int, device: torch.device | str = "cpu") -> Tensor:
    """Source index for each of ``dst`` output pixels when resizing ``src`` pixels, int64.

    Output pixel ``i`` takes source pixel ``floor((i + 0.5) * src / dst)``: the one whose
    area contains the output pixel's centre. Computed as ``((2i + 1) * src) // (2 * dst)``
    in integers, so it is exact for any size and the same on every device.
    """
    i = torch.arange(int(dst), device=device, dtype=torch.int64)
    return torch.div((2 * i + 1) * int(src), 2 * int(dst), rounding_mode="floor")


def resize_class_map(class_map: Tensor, size: tuple[int, int]) -> np.ndarray:
    """Resize a class map [h, w] to ``size`` (H, W) by nearest neighbour; host uint8 [H, W].

    The rule is "nearest-exact" (pixel centres, see :func:`nearest_source_index`), the one
    ``F.interpolate(mode="nearest-exact")`` implements; integer arithmetic makes it exact
    where interpolate's float32 scale can land a centre that falls exactly on a source
    pixel boundary on the lower pixel. Legacy ``"nearest"`` (``floor(i * h / H)``) would
    shift the map by up to half a source pixel towards the top-left, so it is not used.
    Class ids are only ever copied, never blended. Runs on the map's device.
    """
    if class_map.dim() != 2:
        raise ValueError(f"class_map must be [h, w], got {tuple(class_map.shape)}")
    out_h, out_w = int(size[0]), int(size[1])
    h, w = int(class_map.shape[0]), int(class_map.shape[1])
    class_map = class_map.to(torch.uint8)
    if (h, w) != (out_h, out_w):
        rows = nearest_source_index(h, out_h, class_map.device)
        cols = nearest_source_index(w, out_w, class_map.device)
        class_map = class_map.index_select(0, rows).index_select(1, cols)
    return class_map.cpu().numpy()
