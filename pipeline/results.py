"""Per-frame results as they leave the pipeline, and their wire / JSON-lines forms."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from pipeline.messages import SCHEMA_FRAME, version_header
from pipeline.ops.rle import encode_mask

UNLABELED = 255  # class-map value for "no class" (ROS mono8 convention)


@dataclass
class Instance:
    """One detected instance: class, score, box in frame pixels, mask as COCO RLE."""

    id: int
    class_id: int
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    rle: dict[str, Any]  # {"size": [H, W], "counts": str}
    track_id: int | None = None  # per-stream identity from 1; None: tracking off or not confirmed


@dataclass
class FrameResult:
    """Everything published for one frame."""

    stream: str
    seq: int
    width: int
    height: int
    model_id: str
    task: str  # "instance" | "semantic" | "panoptic"
    class_names: list[str]
    untrained: bool = False
    pts: int | None = None
    time_base: Fraction | None = None
    capture_ns: int = 0
    dropped_since_last: int = 0
    instances: list[Instance] = field(default_factory=list)
    class_map: np.ndarray | None = None  # [H, W] uint8, semantic task only
    panoptic: np.ndarray | None = None  # [H, W] uint32 segment ids (0 = void), panoptic task only
    # the panoptic map's segments: id, category_id, isthing, score, area, bbox and (things)
    # ``instance``, the index of the instance it came from (its track id is published)
    segments: list[dict[str, Any]] = field(default_factory=list)

    def segments_info(self) -> list[dict[str, Any]]:
        """The segments as published: COCO panoptic ``segments_info`` entries plus
        ``class_name``, ``score`` and ``track_id`` (things of a tracked run)."""
        out = []
        for seg in self.segments:
            k = seg.get("instance")
            category = int(seg["category_id"])
            out.append({
                "id": int(seg["id"]),
                "category_id": category,
                "class_name": self.class_names[category] if 0 <= category < len(self.class_names) else str(category),
                "isthing": bool(seg["isthing"]),
                "score": seg.get("score"),
                "track_id": self.instances[k].track_id if k is not None and k < len(self.instances) else None,
                "area": int(seg["area"]),
                "bbox": [int(v) for v in seg["bbox"]],
            })
        return out

    def _common(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_FRAME,
            "version": version_header(),
            "stream": self.stream,
            "seq": self.seq,
            "dropped_since_last": self.dropped_since_last,
            "pts": self.pts,
            "time_base": None
            if self.time_base is None
            else [self.time_base.numerator, self.time_base.denominator],
            "capture_ns": self.capture_ns,
            "width": self.width,
            "height": self.height,
            "model": self.model_id,
            "task": self.task,
            "untrained": self.untrained,
            "class_names": list(self.class_names),
            "instances": [
                {
                    "id": inst.id,
                    "class_id": inst.class_id,
                    "class_name": self.class_names[inst.class_id]
                    if 0 <= inst.class_id < len(self.class_names)
                    else str(inst.class_id),
                    "score": inst.score,
                    "box": list(inst.box),
                    "mask": inst.rle,
                    "track_id": inst.track_id,
                }
                for inst in self.instances
            ],
        }

    def to_wire(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        """Header plus buffers for the PUB envelope (class map as a raw mono8 buffer)."""
        header = self._common()
        buffers: list[np.ndarray] = []
        header["semantic"] = None
        if self.class_map is not None:
            header["semantic"] = {
                "buffer": 0,
                "encoding": "mono8",
                "height": int(self.class_map.shape[0]),
                "width": int(self.class_map.shape[1]),
                "step": int(self.class_map.shape[1]),
                "unlabeled": UNLABELED,
            }
            buffers.append(np.ascontiguousarray(self.class_map, dtype=np.uint8))
        header["panoptic"] = None
        if self.panoptic is not None:
            header["panoptic"] = {
                "buffer": len(buffers),
                "encoding": "uint32le",
                "height": int(self.panoptic.shape[0]),
                "width": int(self.panoptic.shape[1]),
                "step": 4 * int(self.panoptic.shape[1]),
                "void": 0,
                "segments_info": self.segments_info(),
            }
            buffers.append(np.ascontiguousarray(self.panoptic, dtype="<u4"))
        return header, buffers

    def to_json(self) -> dict[str, Any]:
        """JSON-lines form (``--save-results``): the class map as one RLE per present class;
        a panoptic map as its ``segments_info`` (the writer adds the PNG's ``file_name``)."""
        record = self._common()
        record["panoptic"] = None
        if self.panoptic is not None:
            record["panoptic"] = {
                "height": int(self.panoptic.shape[0]),
                "width": int(self.panoptic.shape[1]),
                "segments_info": self.segments_info(),
            }
        record["semantic"] = None
        if self.class_map is not None:
            present = np.unique(self.class_map)
            record["semantic"] = {
                "height": int(self.class_map.shape[0]),
                "width": int(self.class_map.shape[1]),
                "classes": [
                    {"class_id": int(k), "mask": encode_mask(self.class_map == k)}
                    for k in present
                    if k != 0 and k != UNLABELED
                ],
            }
        return record
