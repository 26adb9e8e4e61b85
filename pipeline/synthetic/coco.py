"""COCO-format ground truth of synthetic frames (instances with RLE masks, track ids)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.synthetic.scene import CLASS_NAMES, SceneFrame

__all__ = ["coco_categories", "coco_dataset", "frame_annotations"]


def _encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE with ``counts`` as str, by pycocotools' encoder: ground truth is written by
    the reference implementation, not by the RLE code whose output it is compared with."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def coco_categories() -> list[dict[str, Any]]:
    """COCO categories of the synthetic shape classes (id = class id, background left out)."""
    return [
        {"id": k, "name": name, "supercategory": "shape"}
        for k, name in enumerate(CLASS_NAMES)
        if k > 0
    ]


def frame_annotations(frame: SceneFrame, image_id: int, first_id: int = 1) -> list[dict[str, Any]]:
    """COCO annotations of one frame (ids ``first_id``, ``first_id + 1``, ...)."""
    anns = []
    for k, (mask, label, track) in enumerate(
        zip(frame.masks, frame.labels, frame.instance_ids, strict=True)
    ):
        ys = np.flatnonzero(mask.any(axis=1))
        xs = np.flatnonzero(mask.any(axis=0))
        x0, y0 = int(xs[0]), int(ys[0])
        w, h = int(xs[-1]) + 1 - x0, int(ys[-1]) + 1 - y0
        anns.append(
            {
                "id": first_id + k,
                "image_id": int(image_id),
                "category_id": int(label),
                "segmentation": _encode(mask),
                "area": int(mask.sum()),
                "bbox": [x0, y0, w, h],
                "iscrowd": 0,
                "track_id": int(track),
            }
        )
    return anns


def coco_dataset(
    frames: list[SceneFrame], file_name: str = "video.mp4", info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A whole COCO dict for in-memory frames (image id = ``frame.index``)."""
    images, annotations = [], []
    for fr in frames:
        h, w = fr.class_map.shape
        images.append(
            {
                "id": int(fr.index),
                "file_name": f"{file_name}#{fr.index}",
                "width": w,
                "height": h,
                "frame_index": int(fr.index),
            }
        )
        annotations += frame_annotations(fr, fr.index, first_id=len(annotations) + 1)
    return {
        "info": dict(info or {}),
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }
