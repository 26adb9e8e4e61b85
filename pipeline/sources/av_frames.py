"""PyAV helpers shared by the sources that decode with FFmpeg (files, streams, cameras).

Every PyAV source turns decoded frames into the same upright 8-bit RGB images and reads the
same stream facts, so the conversions live here once:

* :func:`frame_to_rgb` converts any pixel format through swscale (``to_ndarray(format=
  "rgb24")`` uses the frame's own colorspace and range) and applies the display rotation;
* :func:`frame_rotation` / :func:`quarter_turns` read that rotation (``DISPLAYMATRIX`` side
  data, rounded to quarter turns; mirror flips are not applied);
* :func:`decode_packet` decodes one packet, telling a rejected (corrupt) packet apart from
  the decoder's end;
* :func:`nominal_fps`, :func:`to_fraction`, :func:`av_error_reason` and
  :func:`budgeted_codec_threads` read rates, errors and the decoder thread budget.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Any

import av
import numpy as np

__all__ = [
    "av_error_reason",
    "budgeted_codec_threads",
    "decode_packet",
    "frame_rotation",
    "frame_to_rgb",
    "nominal_fps",
    "quarter_turns",
    "to_fraction",
]


def av_error_reason(exc: BaseException) -> str:
    """The FFmpeg reason of a PyAV error, without errno and file name noise."""
    reason = getattr(exc, "strerror", None)
    return str(reason) if reason else str(exc)


def to_fraction(value: object) -> Fraction | None:
    """``value`` (a rate or time base in any form PyAV returns) as a positive Fraction, or
    ``None`` when it is missing, zero or unreadable (FFmpeg reports unknown rates as 0/1)."""
    if value is None:
        return None
    try:
        frac = Fraction(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return frac if frac > 0 else None


def nominal_fps(stream: Any) -> Fraction | None:
    """The frame rate a video stream declares: its average rate, else FFmpeg's guess, else
    the base (tick) rate; ``None`` when none is known."""
    return (
        to_fraction(stream.average_rate)
        or to_fraction(stream.guessed_rate)
        or to_fraction(getattr(stream, "base_rate", None))
    )


def frame_rotation(frame: av.VideoFrame, stream: Any) -> int:
    """Counter-clockwise display rotation of ``frame`` in degrees (0 when none)."""
    rotation = getattr(frame, "rotation", None)  # PyAV >= 14: DISPLAYMATRIX side data
    if rotation is None:
        # Older PyAV: FFmpeg builds that still export the legacy (clockwise) "rotate" tag.
        try:
            rotation = -float(stream.metadata.get("rotate", 0))
        except (TypeError, ValueError):
            rotation = 0
    return int(rotation or 0)


def quarter_turns(rotation: float) -> int:
    """Number of counter-clockwise quarter turns (0..3) closest to ``rotation`` degrees."""
    return int(round(rotation / 90.0)) % 4


def frame_to_rgb(frame: av.VideoFrame, turns: int = 0) -> np.ndarray:
    """Convert a decoded frame to an upright H x W x 3 uint8 C-contiguous RGB array,
    rotated by ``turns`` counter-clockwise quarter turns (see :func:`quarter_turns`)."""
    image = frame.to_ndarray(format="rgb24")
    if turns:
        image = np.rot90(image, k=turns)
    return np.ascontiguousarray(image)


def decode_packet(packet: av.Packet) -> list[av.VideoFrame] | None:
    """The frames one packet decodes to: ``[]`` when it completes none (or the decoder has
    ended), ``None`` when the decoder rejected it (corrupt or lost data: the caller counts it
    and reads on, since one bad packet must not end a file or a feed)."""
    try:
        return packet.decode()
    except EOFError:
        return []
    except (av.FFmpegError, ValueError):
        return None


def budgeted_codec_threads() -> int:
    """Decoder threads a capture stage was given by the resource plan (its environment,
    ``SEGSTREAM_CODEC_THREADS``); 0 (FFmpeg's choice, one per core) outside a planned stage."""
    try:
        return max(0, int(os.environ.get("SEGSTREAM_CODEC_THREADS", "0")))
    except ValueError:
        return 0
