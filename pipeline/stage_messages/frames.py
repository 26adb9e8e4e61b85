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
