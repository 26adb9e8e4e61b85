"""Subscriber API: receive per-frame results from a running pipeline.

    from pipeline.client import ResultSubscriber

    with ResultSubscriber("tcp://127.0.0.1:5560") as sub:
        for frame in sub.frames(count=10):
            print(frame.seq, [(i.class_name, i.score) for i in frame.instances])
            masks = frame.masks()          # [N, H, W] bool
            class_map = frame.class_map    # [H, W] uint8 (semantic models), else None
            segment_map = frame.segment_map  # [H, W] uint32 (panoptic mode, with frame.segments)

Only the wire format in docs/PROTOCOL.md is used: a consumer in any language can do the same.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import zmq

from pipeline import messages
from pipeline.messages import ProtocolVersionError
from pipeline.ops.rle import decode as decode_rle
from pipeline.ops.rle import decompress_counts
from pipeline.transport import sockets

log = logging.getLogger("segstream.client")

# Largest frame (width * height) a consumer accepts. A few header bytes can declare any
# size, and a mask of that size is allocated when decoded: a bound keeps a corrupt or
# hostile message from exhausting memory (2**28 px is 16384 x 16384).
MAX_FRAME_PIXELS = 1 << 28


class MalformedMessageError(ValueError):
    """A message that does not follow docs/PROTOCOL.md (bad layout, encoding, keys or sizes)."""


@dataclass
class ReceivedInstance:
    id: int
    class_id: int
    class_name: str
    score: float
    box: tuple[float, float, float, float]
    rle: dict[str, Any]
    track_id: int | None = None  # protocol 1.3+: per-stream identity; None: untracked

    def mask(self) -> np.ndarray:
        """This instance's mask as a [H, W] bool array."""
        return decode_rle(self.rle)


@dataclass
class ReceivedFrame:
    """One frame's results, decoded from the wire."""

    topic: str
    header: dict[str, Any]
    instances: list[ReceivedInstance] = field(default_factory=list)
    class_map: np.ndarray | None = None
    segment_map: np.ndarray | None = None  # panoptic mode: [H, W] uint32 segment ids (0 = void)
    segments: list[dict[str, Any]] = field(default_factory=list)  # ... and its segments_info

    def __getattr__(self, name: str) -> Any:  # header fields: seq, stream, width, pts, ...
        try:
            return self.__dict__["header"][name]
        except KeyError:
            raise AttributeError(name) from None

    def masks(self) -> np.ndarray:
        """All instance masks as [N, H, W] bool."""
        if not self.instances:
            return np.zeros((0, self.header["height"], self.header["width"]), dtype=bool)
        return np.stack([inst.mask() for inst in self.instances])


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise MalformedMessageError(what)


def _view(frame: Any) -> memoryview:
    """The bytes of a part, whether bytes or a zmq.Frame (``recv_multipart(copy=False)``)."""
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)


def _unpack(frames: Sequence[Any]) -> tuple[str, dict[str, Any], list[memoryview]]:
    """Split and decode an envelope, turning every decoding failure into one error type."""
    _require(len(frames) >= 2, f"{len(frames)} part(s), needs at least topic and header")
    try:
        topic = bytes(_view(frames[0])).removesuffix(messages.TOPIC_END).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessageError("topic is not UTF-8") from None
    try:
        header = messages.unpack_header(_view(frames[1]))
    except (ValueError, TypeError, msgpack.UnpackException) as err:  # ExtraData, FormatError, ...
        raise MalformedMessageError(f"header is not one MessagePack value ({type(err).__name__})") from None
    _require(isinstance(header, dict), "header is not a MessagePack map")
    _require(all(isinstance(k, str) for k in header), "header has a key that is not a string")
    messages.check_version(header)  # before the schema checks: another major may differ
    return topic, header, [_view(f) for f in frames[2:]]


def _check_rle(rle: Any, height: int, width: int, where: str) -> None:
    """The mask must cover the frame, with runs that add up to exactly its pixels (checked
    before decoding, which allocates height * width)."""
    _require(isinstance(rle, dict), f"{where}: mask is not a map")
    _require(rle.get("size") == [height, width], f"{where}: mask size {rle.get('size')!r} is not [{height}, {width}]")
    _require(isinstance(rle.get("counts"), str), f"{where}: mask counts is not a string")
    try:
        counts = decompress_counts(rle["counts"])
    except ValueError:  # non-ASCII, truncated
        raise MalformedMessageError(f"{where}: mask counts cannot be decoded") from None
    pixels = height * width
    # bounded values first, so that the sum cannot overflow int64
    _require(counts.size <= pixels + 1 and bool(np.all((counts >= 0) & (counts <= pixels)))
             and int(counts.sum()) == pixels, f"{where}: mask runs do not add up to {pixels} pixels")


def _check_frame(header: dict[str, Any], buffers: list[memoryview]) -> None:
    """Every key this client reads has the documented type, and every declared size fits
    the frame and the buffers, so that decoding cannot fail or over-allocate later."""
    _require(isinstance(header.get("stream"), str), "frame: 'stream' is not a string")
    _require(_int(header.get("seq")) and header["seq"] >= 0, "frame: 'seq' is not a non-negative integer")
    _require(header.get("run") is None or isinstance(header["run"], str), "frame: 'run' is not a string")
    height, width = header.get("height"), header.get("width")
    _require(_int(height) and _int(width) and height >= 0 and width >= 0, "frame: bad 'width'/'height'")
    _require(height * width <= MAX_FRAME_PIXELS, f"frame: {width}x{height} exceeds {MAX_FRAME_PIXELS} pixels")
    _require(isinstance(header.get("instances"), list), "frame: 'instances' is not a list")
    for i, inst in enumerate(header["instances"]):
        where = f"frame: instance {i}"
        _require(isinstance(inst, dict), f"{where} is not a map")
        _require(_int(inst.get("id")) and _int(inst.get("class_id")), f"{where}: 'id'/'class_id' not integers")
        _require(_number(inst.get("score")), f"{where}: 'score' is not a number")
        track_id = inst.get("track_id")
        _require(track_id is None or (_int(track_id) and track_id >= 1), f"{where}: 'track_id' is not null or >= 1")
        _require(isinstance(inst.get("class_name", ""), str), f"{where}: 'class_name' is not a string")
        box = inst.get("box")
        _require(isinstance(box, list) and len(box) == 4 and all(map(_number, box)), f"{where}: 'box' is not 4 numbers")
        _check_rle(inst.get("mask"), height, width, where)
    _check_panoptic(header.get("panoptic"), buffers, height, width)
    _check_image_buffer("semantic", header.get("semantic"), buffers, height, width, "mono8", 1)


def _check_image_buffer(name: str, desc: Any, buffers: Sequence[Any], height: int, width: int, encoding: str,
                        pixel_bytes: int) -> None:
    """A per-pixel buffer's description (``semantic``, ``panoptic``; nil: none) against the
    frame and its buffer: index, encoding, size, row step, byte count."""
    if desc is None:
        return
    _require(isinstance(desc, dict), f"frame: '{name}' is not a map")
    index, step = desc.get("buffer"), desc.get("step")
    _require(_int(index) and 0 <= index < len(buffers), f"frame: {name} buffer {index!r} not among {len(buffers)}")
    _require(desc.get("encoding") == encoding, f"frame: {name} encoding {desc.get('encoding')!r}")
    _require(desc.get("height") == height and desc.get("width") == width, f"frame: {name} size differs from the frame's")
    _require(_int(step) and step >= pixel_bytes * width and step % pixel_bytes == 0,
             f"frame: {name} step {step!r} does not fit the width")
    _require(buffers[index].nbytes == height * step,
             f"frame: {name} buffer has {buffers[index].nbytes} bytes, {height}x{step} declared")


def _check_panoptic(panoptic: Any, buffers: Sequence[Any], height: int, width: int) -> None:
    """The panoptic map's description (since 1.4; absent or nil otherwise) against its buffer."""
    _check_image_buffer("panoptic", panoptic, buffers, height, width, "uint32le", 4)
    if panoptic is None:
        return
    info = panoptic.get("segments_info")
    _require(isinstance(info, list) and all(isinstance(s, dict) and _int(s.get("id")) and _int(s.get("category_id"))
                                            for s in info), "frame: panoptic 'segments_info' is not a list of segments")


def decode_frame(frames: Sequence[Any]) -> ReceivedFrame:
    """Decode and check one multipart envelope.

    Raises ``ProtocolVersionError`` for an unknown major version (or none) and
    ``MalformedMessageError`` for anything else that does not follow docs/PROTOCOL.md; every
    size a frame declares is checked against the frame and its buffers before anything is
    allocated. Messages of other schemas (status, ...) come back with their header only.
    """
    topic, header, buffers = _unpack(frames)
    if header.get("schema") == messages.SCHEMA_STATUS:
        _require(isinstance(header.get("event"), str), "status: 'event' is not a string")
    if header.get("schema") != messages.SCHEMA_FRAME:
        _require(isinstance(header.get("schema"), str), "header has no 'schema' string")
        return ReceivedFrame(topic, header)
    _check_frame(header, buffers)
    class_map = None
    semantic = header.get("semantic")
    if semantic:
        raw = np.frombuffer(buffers[semantic["buffer"]], dtype=np.uint8)
        rows = raw.reshape(semantic["height"], semantic["step"])
        class_map = rows[:, : semantic["width"]].copy()
    instances = [
        ReceivedInstance(
            id=d["id"],
            class_id=d["class_id"],
            class_name=d.get("class_name", str(d["class_id"])),
            score=d["score"],
            box=tuple(d["box"]),
            rle=d["mask"],
            track_id=d.get("track_id"),
        )
        for d in header["instances"]
    ]
    segment_map, panoptic = None, header.get("panoptic")
    if panoptic:
        rows = np.frombuffer(buffers[panoptic["buffer"]], dtype="<u4").reshape(panoptic["height"], panoptic["step"] // 4)
        segment_map = rows[:, : panoptic["width"]].astype(np.uint32)
    return ReceivedFrame(topic, header, instances, class_map, segment_map, list(panoptic["segments_info"]) if panoptic else [])


class ResultSubscriber:
    """A SUB socket on a pipeline's publish endpoint that yields ``ReceivedFrame`` objects.

    Status messages (schema ``segstream.status``) are kept in ``self.statuses``; messages of
    an unknown major protocol version are counted in ``self.rejected`` and skipped. A frame
    whose seq this subscriber has already had from the same run and stream (publish sends
    the frames since its last commit again after a restart of that stage) is counted in
    ``self.duplicates`` and skipped, so each frame is yielded at most once. A message that
    does not follow the protocol (see ``decode_frame``) is counted in ``self.malformed`` and
    skipped, with one warning the first time: one bad message never ends the stream.
    Messages of a schema this client does not know are counted in ``self.ignored``.
    """

    def __init__(
        self,
        endpoint: str,
        topics: Sequence[str] = ("",),
        hwm: int = 1000,
        curve_secret_key: str | None = None,
        curve_server_key: str | None = None,
    ) -> None:
        """``topics``: stream ids to receive (``""``: every stream); each subscribes to
        exactly that stream (its topic and terminator), never to ids it is a prefix of.
        ``curve_secret_key`` (our ``NAME.key_secret``) and ``curve_server_key`` (the
        publisher's ``server.key``) together enable CURVE encryption/authentication."""
        self.endpoint = endpoint
        self.ctx = zmq.Context()
        prepare = None
        if curve_secret_key or curve_server_key:
            if not (curve_secret_key and curve_server_key):
                raise ValueError("CURVE needs both the client secret key and the server public key")
            from pipeline.transport.security import secure_subscriber

            def prepare(sock: zmq.Socket) -> None:
                secure_subscriber(sock, curve_secret_key, curve_server_key)

        # the terminator makes ZeroMQ's prefix match exact: "1" no longer receives "10"
        exact = [messages.topic_bytes(t).decode("utf-8") if t else "" for t in topics]
        self.sock = sockets.subscriber(self.ctx, endpoint, exact, hwm=hwm, prepare=prepare)
        self.rejected = 0
        self.duplicates = 0
        self.malformed = 0
        self.ignored = 0
        self.statuses: list[dict[str, Any]] = []
        self._last_seq: dict[tuple[Any, str], int] = {}  # (run, stream) -> newest seq yielded

    def recv(self, timeout_s: float | None = None) -> ReceivedFrame | None:
        """Next frame result, or None when ``timeout_s`` passes first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self.sock.poll(wait):
                return None
            frames = self.sock.recv_multipart(copy=False)
            try:
                frame = decode_frame(frames)
            except ProtocolVersionError:
                self.rejected += 1
                continue
            except MalformedMessageError as err:
                self._skip_malformed(err)
                continue
            schema = frame.header["schema"]
            if schema == messages.SCHEMA_STATUS:
                self.statuses.append(frame.header)
                continue
            if schema != messages.SCHEMA_FRAME:
                self.ignored += 1
                continue
            if self._seen(frame):
                self.duplicates += 1
                continue
            return frame

    def _skip_malformed(self, err: MalformedMessageError) -> None:
        self.malformed += 1
        if self.malformed == 1:  # one line, not one per message: a bad sender may flood
            log.warning("skipping malformed message(s) from %s (first: %s); counted in .malformed",
                        self.endpoint, err)

    def _seen(self, frame: ReceivedFrame) -> bool:
        """True for a seq already yielded in this run and stream (a republished frame)."""
        key = (frame.header.get("run"), str(frame.header.get("stream", frame.topic)))
        seq = frame.header.get("seq")
        if not isinstance(seq, int):
            return False
        last = self._last_seq.get(key)
        if last is not None and seq <= last:
            return True
        self._last_seq[key] = seq
        return False

    def frames(self, count: int | None = None, timeout_s: float | None = None) -> Iterator[ReceivedFrame]:
        """Yield frames until ``count`` are received or no frame arrives for ``timeout_s``."""
        received = 0
        while count is None or received < count:
            frame = self.recv(timeout_s)
            if frame is None:
                return
            received += 1
            yield frame

    def close(self) -> None:
        """Close the socket and its context (pending messages are dropped)."""
        self.sock.close(0)
        self.ctx.term()

    def __enter__(self) -> ResultSubscriber:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
