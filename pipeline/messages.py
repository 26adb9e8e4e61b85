"""Message encoding: one MessagePack header plus raw binary buffers, never pickle.

Two uses share the codec:

* between stages: ``[header, *buffers]`` on PUSH/PULL sockets;
* to consumers: ``[topic, header, *buffers]`` on the PUB socket, where the header is the
  versioned envelope described in docs/PROTOCOL.md.

Buffers are passed to ZeroMQ as-is (numpy arrays expose the buffer protocol), so large
arrays are sent with ``copy=False`` and never re-encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

SCHEMA_FRAME = "segstream.frame"
SCHEMA_STATUS = "segstream.status"
PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 4  # 1.1: frame results carry ``run``; 1.2: topics end with TOPIC_END;
# 1.3: instances carry ``track_id``; 1.4: ``panoptic`` (segment-id map, ``task`` "panoptic")
# Ends every topic (part 0): ZeroMQ matches subscriptions by prefix, so without it a
# subscriber to stream "1" also gets "10". NUL cannot occur in a stream id.
TOPIC_END = b"\x00"

Buffer = bytes | memoryview | np.ndarray


class ProtocolVersionError(ValueError):
    """A message carries a major version this code does not understand."""


def pack_header(header: dict[str, Any]) -> bytes:
    """Encode a header dict as MessagePack (bin type for bytes, str for text)."""
    return msgpack.packb(header, use_bin_type=True)


def unpack_header(data: bytes | memoryview) -> dict[str, Any]:
    """Decode a MessagePack header."""
    return msgpack.unpackb(data, raw=False)


def encode(header: dict[str, Any], buffers: Sequence[Buffer] = ()) -> list[Buffer]:
    """Stage-to-stage message: ``[header, *buffers]``."""
    return [pack_header(header), *(_contiguous(b) for b in buffers)]


def decode(frames: Sequence[Any]) -> tuple[dict[str, Any], list[memoryview]]:
    """Inverse of ``encode``. ``frames`` are bytes or zmq.Frame objects."""
    return unpack_header(_bytes(frames[0])), [_view(f) for f in frames[1:]]


def encode_envelope(topic: str, header: dict[str, Any], buffers: Sequence[Buffer] = ()) -> list[Buffer]:
    """Consumer message: ``[topic, header, *buffers]``; the header must carry schema/version."""
    return [topic_bytes(topic), *encode(header, buffers)]


def topic_bytes(stream: str) -> bytes:
    """Part 0 for a stream id, also the exact subscription for that stream alone."""
    if "\x00" in stream:
        raise ValueError(f"stream id {stream!r} contains NUL, which ends topics")
    return stream.encode("utf-8") + TOPIC_END


def decode_envelope(frames: Sequence[Any]) -> tuple[str, dict[str, Any], list[memoryview]]:
    """Inverse of ``encode_envelope``; raises ``ProtocolVersionError`` on an unknown major."""
    if len(frames) < 2:
        raise ValueError(f"envelope needs at least 2 frames (topic, header), got {len(frames)}")
    topic = bytes(_bytes(frames[0])).removesuffix(TOPIC_END).decode("utf-8")  # 1.1 topics had no end byte
    header, buffers = decode(frames[1:])
    check_version(header)
    return topic, header, buffers


def version_header() -> dict[str, Any]:
    """The ``version`` field every consumer message carries."""
    return {"major": PROTOCOL_MAJOR, "minor": PROTOCOL_MINOR}


def check_version(header: dict[str, Any]) -> None:
    """Accept any minor version of our major; reject other majors and unversioned headers."""
    version = header.get("version")
    if not isinstance(version, dict) or "major" not in version:
        raise ProtocolVersionError("message has no protocol version")
    if version["major"] != PROTOCOL_MAJOR:
        raise ProtocolVersionError(
            f"unsupported protocol major version {version['major']} (this consumer reads {PROTOCOL_MAJOR}.x)"
        )


def _contiguous(buffer: Buffer) -> Buffer:
    if isinstance(buffer, np.ndarray) and not buffer.flags.c_contiguous:
        return np.ascontiguousarray(buffer)
    return buffer


def _bytes(frame: Any) -> bytes | memoryview:
    return frame.buffer if hasattr(frame, "buffer") else frame


def _view(frame: Any) -> memoryview:
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)
