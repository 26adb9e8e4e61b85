"""The source interface: everything that yields frames (files, folders, synthetic, live)."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from pipeline.errors import SourceError

__all__ = ["Frame", "SourceInfo", "Source", "SourceError"]


@dataclass
class Frame:
    """One decoded frame.

    ``image`` is H x W x 3 uint8 RGB, C-contiguous, already upright (rotation metadata applied)
    and in 8-bit (10-bit / grayscale input converted).
    """

    image: np.ndarray
    index: int  # 0-based position in decode/presentation order of this source
    pts: int | None = None  # presentation timestamp in ``time_base`` units
    time_base: Fraction | None = None
    capture_ns: int = 0  # wall clock (time.time_ns()) when the frame was obtained


@dataclass
class SourceInfo:
    """What a source knows before the first frame: used to size buffers and the output video."""

    width: int  # largest frame width the source will produce (after rotation)
    height: int  # largest frame height
    fps: Fraction | None = None  # nominal frame rate, if known
    frame_count: int | None = None  # number of frames, if known (files, folders)
    time_base: Fraction | None = None
    live: bool = False  # live feeds use the live delivery policy
    extra: dict = field(default_factory=dict)


class Source(abc.ABC):
    """A frame source. Open in the constructor (raise ``SourceError`` with a clear message)."""

    uri: str

    @abc.abstractmethod
    def info(self) -> SourceInfo:
        """Describe the source (cheap; may be called before iteration)."""

    @abc.abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Yield frames in order. Raise ``SourceError`` on unrecoverable read errors."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files/devices."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
