"""What the model hops carry: infer's raw outputs (instances, a class map, or both in
panoptic mode) and postprocess's results for publish."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.stage_messages._codec import (
    Header,
    MessageError,
    Parts,
    array_view,
    as_tuple,
    check_count,
    expect_array,
)
from pipeline.stage_messages.frames import InlinePixels, PreparedFrame, _FrameResult


@dataclass(frozen=True, eq=False)
class RawInstances(_FrameResult):
    """Infer → postprocess, instance models: detections in model-input coordinates."""

    in_size: tuple[int, int]  # the unpadded model-input size (h, w)
    boxes: np.ndarray  # [N, 4] float32
    scores: np.ndarray  # [N] float32
    labels: np.ndarray  # [N] int64
    mask_probs: np.ndarray  # [N, M, M] float32
    _required = ("in_size", "n", "mask_size")
    _optional = ("in_shape",)

    def __post_init__(self) -> None:
        what = type(self).__name__
        expect_array(what, "boxes", self.boxes, np.float32, (None, 4))
        n = self.boxes.shape[0]
        expect_array(what, "scores", self.scores, np.float32, (n,))
        expect_array(what, "labels", self.labels, np.int64, (n,))
        expect_array(what, "mask_probs", self.mask_probs, np.float32, (n, None, None))
        if self.mask_probs.shape[1] != self.mask_probs.shape[2]:
            raise MessageError(f"{what}: mask_probs must be square, got {list(self.mask_probs.shape)}")

    def _parts(self) -> Parts:
        header = self.frame._header()
        header["in_size"] = list(self.in_size)
        header["n"] = int(self.boxes.shape[0])
        header["mask_size"] = int(self.mask_probs.shape[-1])
        return header, [self.boxes, self.scores, self.labels, self.mask_probs]

    @classmethod
    def _from(cls, header: Header, buffers: list[Any], inline: InlinePixels | None) -> RawInstances:
        what = cls.__name__
        check_count(what, buffers, 4)
        n, m = header["n"], header["mask_size"]
        return cls(
            PreparedFrame._from(header, [], None), as_tuple(header["in_size"]),
            array_view(what, "boxes", buffers[0], np.float32, (n, 4)),
            array_view(what, "scores", buffers[1], np.float32, (n,)),
            array_view(what, "labels", buffers[2], np.int64, (n,)),
            array_view(what, "mask_probs", buffers[3], np.float32, (n, m, m)),
            inline=inline,
        )


@dataclass(frozen=True, eq=False)
class RawClassMap(_FrameResult):
    """Infer → postprocess, semantic models: the class map at model-input size."""

    in_size: tuple[int, int]
    class_map: np.ndarray  # [h, w] uint8
    _required = ("in_size", "map_shape")
    _optional = ("in_shape",)

    def __post_init__(self) -> None:
        expect_array(type(self).__name__, "class_map", self.class_map, np.uint8, (None, None))

    def _parts(self) -> Parts:
        header = self.frame._header()
        header["in_size"] = list(self.in_size)
        header["map_shape"] = list(self.class_map.shape)
        return header, [self.class_map]

    @classmethod
    def _from(cls, header: Header, buffers: list[Any], inline: InlinePixels | None) -> RawClassMap:
        check_count(cls.__name__, buffers, 1)
        class_map = array_view(cls.__name__, "class_map", buffers[0], np.uint8, header["map_shape"])
        return cls(PreparedFrame._from(header, [], None), as_tuple(header["in_size"]), class_map, inline=inline)


@dataclass(frozen=True, eq=False)
class RawPanoptic(RawInstances):
    """Infer → postprocess, panoptic mode: the instance model's detections and the
    semantic model's class map (at its own model-input size ``map_in_size``) of one frame."""

    map_in_size: tuple[int, int]
    class_map: np.ndarray  # [h, w] uint8
    _required = ("in_size", "n", "mask_size", "map_in_size", "map_shape")

    def __post_init__(self) -> None:
        super().__post_init__()
        expect_array(type(self).__name__, "class_map", self.class_map, np.uint8, (None, None))

    def _parts(self) -> Parts:
        header, buffers = super()._parts()
        header["map_in_size"] = list(self.map_in_size)
        header["map_shape"] = list(self.class_map.shape)
        return header, [*buffers, self.class_map]

    @classmethod
    def _from(cls, header: Header, buffers: list[Any], inline: InlinePixels | None) -> RawPanoptic:
        what = cls.__name__
        check_count(what, buffers, 5)
        found = RawInstances._from(header, buffers[:4], inline)
        class_map = array_view(what, "class_map", buffers[4], np.uint8, header["map_shape"])
        return cls(found.frame, found.in_size, found.boxes, found.scores, found.labels, found.mask_probs,
                   as_tuple(header["map_in_size"]), class_map, inline=inline)


def raw_output_from_parts(header: Header, buffers: Sequence[Any]) -> RawInstances | RawClassMap | RawPanoptic:
    """Infer's output for one frame: instances (header has ``n``), a class map
    (``map_shape``), or both (panoptic mode)."""
    if isinstance(header, dict) and "n" in header and "map_shape" in header:
        return RawPanoptic.from_parts(header, buffers)
    if isinstance(header, dict) and "n" in header:
        return RawInstances.from_parts(header, buffers)
    if isinstance(header, dict) and "map_shape" in header:
        return RawClassMap.from_parts(header, buffers)
    raise MessageError("raw output: the header has neither 'n' (instances) nor 'map_shape' (class map)")


@dataclass(frozen=True, eq=False)
class PostprocessedFrame(_FrameResult):
    """Postprocess → publish: the frame's instances (dicts: id, class_id, score, box, mask
    as RLE), or its class map at frame size; the overlay, if any, is in the slot.

    With tracking on, the instances' box-local masks come along too, bit-packed
    (``crop_rects`` [N, 4] int32: x0, y0, h, w; ``crop_bits``: every mask's rows packed in
    turn): the tracker and the track-coloured overlay need the masks, and decoding them
    again from frame-size RLE would cost more than sending them.

    Panoptic mode adds the segment-id map (``panoptic`` [h, w] uint32, 0 = void) and its
    ``segments`` (``pipeline.panoptic.segment_record`` dicts) to the instances."""

    instances: tuple[dict[str, Any], ...] | None = None
    class_map: np.ndarray | None = None  # [h, w] uint8
    crop_rects: np.ndarray | None = None  # [N, 4] int32
    crop_bits: np.ndarray | None = None  # uint8
    panoptic: np.ndarray | None = None  # [h, w] uint32
    segments: tuple[dict[str, Any], ...] | None = None
    _optional = ("in_shape", "instances", "semantic", "crops", "segments")

    def __post_init__(self) -> None:
        what = type(self).__name__
        if (self.instances is None) == (self.class_map is None):
            raise MessageError(f"{what}: needs exactly one of instances and class_map")
        if self.instances is not None:
            object.__setattr__(self, "instances", tuple(self.instances))  # lists compare equal after a trip
        else:
            expect_array(what, "class_map", self.class_map, np.uint8, (self.handle.h, self.handle.w))
        if (self.crop_rects is None) != (self.crop_bits is None) or (
                self.crop_rects is not None and self.instances is None):
            raise MessageError(f"{what}: crop_rects and crop_bits go together, with instances")
        if self.crop_rects is not None:
            expect_array(what, "crop_rects", self.crop_rects, np.int32, (len(self.instances), 4))
            expect_array(what, "crop_bits", self.crop_bits, np.uint8, (_packed_size(self.crop_rects),))
        if (self.panoptic is None) != (self.segments is None) or (
                self.panoptic is not None and self.instances is None):
            raise MessageError(f"{what}: panoptic and segments go together, with instances")
        if self.panoptic is not None:
            expect_array(what, "panoptic", self.panoptic, np.uint32, (self.handle.h, self.handle.w))
            object.__setattr__(self, "segments", tuple(self.segments))

    @staticmethod
    def pack_crops(crops: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """``(crop_rects, crop_bits)`` for masks with ``x0``, ``y0`` and a bool ``mask``."""
        rects = np.array([(c.x0, c.y0, *c.mask.shape) for c in crops], dtype=np.int32).reshape(-1, 4)
        bits = [np.packbits(c.mask, axis=None) for c in crops]
        return rects, (np.concatenate(bits) if bits else np.zeros(0, np.uint8))

    def crops(self) -> list[tuple[int, int, np.ndarray]] | None:
        """The masks as ``(x0, y0, bool mask)``, or None if none came along."""
        if self.crop_rects is None:
            return None
        out, start = [], 0
        for x0, y0, h, w in self.crop_rects.tolist():
            size = -(-h * w // 8)
            mask = np.unpackbits(self.crop_bits[start : start + size], count=h * w).reshape(h, w).view(bool)
            out.append((x0, y0, mask))
            start += size
        return out

    def _parts(self) -> Parts:
        header = self.frame._header()
        if self.instances is not None:
            header["instances"] = list(self.instances)
            buffers: list[np.ndarray] = []
            if self.crop_rects is not None:
                header["crops"] = True
                buffers += [self.crop_rects, self.crop_bits]
            if self.panoptic is not None:
                header["segments"] = list(self.segments)
                buffers.append(self.panoptic)
            return header, buffers
        header["semantic"] = True
        return header, [self.class_map]

    @classmethod
    def _from(cls, header: Header, buffers: list[Any], inline: InlinePixels | None) -> PostprocessedFrame:
        what = cls.__name__
        frame = PreparedFrame._from(header, [], None)
        if ("instances" in header) == bool(header.get("semantic")):
            raise MessageError(f"{what}: the header needs exactly one of 'instances' and 'semantic'")
        if "instances" in header:
            instances = tuple(header["instances"])
            segments = header.get("segments")
            check_count(what, buffers, 2 * bool(header.get("crops")) + (segments is not None))
            rects = bits = panoptic = None
            if header.get("crops"):
                rects = array_view(what, "crop_rects", buffers[0], np.int32, (len(instances), 4))
                if (rects[:, 2:] < 0).any():
                    raise MessageError(f"{what}: negative crop size")
                bits = array_view(what, "crop_bits", buffers[1], np.uint8, (_packed_size(rects),))
            if segments is not None:
                panoptic = array_view(what, "panoptic", buffers[-1], np.uint32, (header["h"], header["w"]))
            return cls(frame, instances=instances, crop_rects=rects, crop_bits=bits, panoptic=panoptic,
                       segments=None if segments is None else tuple(segments), inline=inline)
        check_count(what, buffers, 1)
        class_map = array_view(what, "class_map", buffers[0], np.uint8, (header["h"], header["w"]))
        return cls(frame, class_map=class_map, inline=inline)


def _packed_size(rects: np.ndarray) -> int:
    """Bytes of the packed masks of ``rects`` (each mask padded to whole bytes)."""
    areas = rects[:, 2].astype(np.int64) * rects[:, 3].astype(np.int64)
    return int(((areas + 7) // 8).sum())
