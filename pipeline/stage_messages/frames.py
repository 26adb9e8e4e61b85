"""Frame messages: what the data hops carry about one frame, from its handle to its results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

import numpy as np

from pipeline.stage_messages._codec import (
    Header,
    Message,
    MessageError,
    Parts,
    array_view,
    as_tuple,
    check_count,
    check_header,
    expect_array,
)

HANDLE_KEYS = ("stream", "seq", "slot", "gen", "h", "w", "pts", "tb", "capture_ns", "dropped")


@dataclass(frozen=True, eq=False)
class InlinePixels(Message):
    """A slot's pixels inside a frame message, for a tcp hop (the ring does not cross hosts)."""

    frame: np.ndarray | None = None  # [h, w, 3] uint8
    input: np.ndarray | None = None  # the model input, ``in_shape`` float32
    overlay: np.ndarray | None = None  # [h, w, 3] uint8

    def parts(self) -> tuple[list[str], list[np.ndarray]]:
        """The region names (the header's ``inline``) and their arrays, in that order."""
        present = [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]
        return [name for name, _ in present], [array for _, array in present]

    @classmethod
    def from_buffers(cls, what: str, names: Sequence[str], buffers: Sequence[Any], h: int, w: int,
                     in_shape: tuple[int, ...] | None) -> InlinePixels:
        """Views of ``buffers`` as the regions ``names``."""
        regions: dict[str, np.ndarray] = {}
        for name, buffer in zip(names, buffers, strict=True):
            if name in ("frame", "overlay"):
                regions[name] = array_view(what, name, buffer, np.uint8, (h, w, 3))
            elif name == "input":
                if in_shape is None:
                    raise MessageError(f"{what}: inline 'input' needs 'in_shape' in the header")
                regions[name] = array_view(what, name, buffer, np.float32, in_shape)
            else:
                raise MessageError(f"{what}: unknown inline region {name!r}")
        return cls(**regions)


@dataclass(frozen=True, eq=False)
class FrameMessage(Message):
    """Base of the messages about one frame. Each names its ring slot (``handle``, a
    :class:`FrameHandle`) and the model-input shape if one was prepared (``in_shape``)."""

    inline: InlinePixels | None = field(default=None, kw_only=True)
    _required: ClassVar[tuple[str, ...]] = ()  # header keys besides the handle's
    _optional: ClassVar[tuple[str, ...]] = ()

    def to_parts(self) -> Parts:
        """``(header, buffers)`` to send; inline pixels (if any) lead the buffers."""
        header, buffers = self._parts()
        names, arrays = self.inline.parts() if self.inline is not None else ([], [])
        if names:
            header["inline"] = names
            buffers = [*arrays, *buffers]
        return header, buffers

    @classmethod
    def from_parts(cls, header: Header, buffers: Sequence[Any]) -> Self:
        """The message in a received ``(header, buffers)``; arrays are views of the buffers."""
        what = cls.__name__
        check_header(what, header, (*HANDLE_KEYS, *cls._required), (*cls._optional, "inline"), kind="frame")
        names = header.get("inline") or []
        if len(buffers) < len(names):
            raise MessageError(f"{what}: {len(names)} inline region(s) but {len(buffers)} buffer(s)")
        inline = None
        if names:
            inline = InlinePixels.from_buffers(what, names, buffers[: len(names)], header["h"], header["w"],
                                               as_tuple(header.get("in_shape")))
        return cls._from(header, list(buffers[len(names):]), inline)

    def with_inline(self, inline: InlinePixels | None) -> Self:
        """The same message with ``inline`` pixels (None: without)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return type(self)(**{**values, "inline": inline})

    def _parts(self) -> Parts:
        raise NotImplementedError

    @classmethod
    def _from(cls, header: Header, buffers: list[Any], inline: InlinePixels | None) -> Self:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class FrameHandle(FrameMessage):
    """Capture → preprocess: a decoded frame in ring slot ``slot`` at generation ``gen``."""

    stream: str
    seq: int
    slot: int
    gen: int
    h: int
    w: int
    pts: int | None = None
    tb: tuple[int, int] | None = None  # the pts time base (num, den)
    capture_ns: int = 0
    dropped: int = 0  # frames dropped before this one (live feeds)

    @property
    def handle(self) -> FrameHandle:
        """The handle itself (every frame message has one)."""
        return self

    @property
    def in_shape(self) -> None:
        """No model input is prepared yet."""
        return None

    def _header(self) -> Header:
        header: Header = {"type": "frame"}
        header.update((key, getattr(self, key)) for key in HANDLE_KEYS)
        header["tb"] = None if self.tb is None else list(self.tb)
        return header

    def _parts(self) -> Parts:
        return self._header(), []

    @classmethod
    def _from(cls, header: Header, buffers: list[Any], inline: InlinePixels | None) -> FrameHandle:
        check_count(cls.__name__, buffers, 0)
        values = {key: header[key] for key in HANDLE_KEYS}
        return cls(**{**values, "tb": as_tuple(values["tb"])}, inline=inline)


@dataclass(frozen=True, eq=False)
class PreparedFrame(FrameMessage):
    """Preprocess → infer: the handle, and the shape of the model input preprocess wrote
    into the slot (None when the transform runs inside infer, on the GPU)."""

    handle: FrameHandle
    in_shape: tuple[int, ...] | None = None
    _optional = ("in_shape",)

    def _header(self) -> Header:
        header = self.handle._header()
        if self.in_shape is not None:
            header["in_shape"] = list(self.in_shape)
        return header

    def _parts(self) -> Parts:
        return self._header(), []

    @classmethod
    def _from(cls, header: Header, buffers: list[Any], inline: InlinePixels | None) -> PreparedFrame:
        check_count(cls.__name__, buffers, 0)
        handle = FrameHandle._from({k: header[k] for k in HANDLE_KEYS}, [], None)
        return cls(handle, as_tuple(header.get("in_shape")), inline=inline)


@dataclass(frozen=True, eq=False)
class _FrameResult(FrameMessage):
    """A message about a prepared frame (``frame``): infer's and postprocess's outputs."""

    frame: PreparedFrame

    @property
    def handle(self) -> FrameHandle:
        """The frame's ring slot."""
        return self.frame.handle

    @property
    def in_shape(self) -> tuple[int, ...] | None:
        """The model-input shape preprocess wrote into the slot (None: none)."""
        return self.frame.in_shape


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


def raw_output_from_parts(header: Header, buffers: Sequence[Any]) -> RawInstances | RawClassMap:
    """Infer's output for one frame: instances (header has ``n``) or a class map."""
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
    again from frame-size RLE would cost more than sending them."""

    instances: tuple[dict[str, Any], ...] | None = None
    class_map: np.ndarray | None = None  # [h, w] uint8
    crop_rects: np.ndarray | None = None  # [N, 4] int32
    crop_bits: np.ndarray | None = None  # uint8
    _optional = ("in_shape", "instances", "semantic", "crops")

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
            if self.crop_rects is None:
                return header, []
            header["crops"] = True
            return header, [self.crop_rects, self.crop_bits]
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
            if not header.get("crops"):
                check_count(what, buffers, 0)
                return cls(frame, instances=instances, inline=inline)
            check_count(what, buffers, 2)
            rects = array_view(what, "crop_rects", buffers[0], np.int32, (len(instances), 4))
            if (rects[:, 2:] < 0).any():
                raise MessageError(f"{what}: negative crop size")
            bits = array_view(what, "crop_bits", buffers[1], np.uint8, (_packed_size(rects),))
            return cls(frame, instances=instances, crop_rects=rects, crop_bits=bits, inline=inline)
        check_count(what, buffers, 1)
        class_map = array_view(what, "class_map", buffers[0], np.uint8, (header["h"], header["w"]))
        return cls(frame, class_map=class_map, inline=inline)


def _packed_size(rects: np.ndarray) -> int:
    """Bytes of the packed masks of ``rects`` (each mask padded to whole bytes)."""
    areas = rects[:, 2].astype(np.int64) * rects[:, 3].astype(np.int64)
    return int(((areas + 7) // 8).sum())
