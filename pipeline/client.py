"""Subscriber API: receive per-frame results from a running pipeline.

    from pipeline.client import ResultSubscriber

    with ResultSubscriber("tcp://127.0.0.1:5560") as sub:
        for frame in sub.frames(count=10):
            print(frame.seq, [(i.class_name, i.score) for i in frame.instances])
            masks = frame.masks()          # [N, H, W] bool
            class_map = frame.class_map    # [H, W] uint8 (semantic models), else None

Only the wire format in docs/PROTOCOL.md is used: a consumer in any language can do the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from pipeline import messages
from pipeline.messages import ProtocolVersionError
from pipeline.ops.rle import decode as decode_rle
from pipeline.transport import sockets


@dataclass
class ReceivedInstance:
    id: int
    class_id: int
    class_name: str
    score: float
    box: tuple[float, float, float, float]
    rle: dict[str, Any]

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


def decode_frame(frames: Sequence[Any]) -> ReceivedFrame:
    """Decode one multipart envelope; raises ProtocolVersionError on an unknown major."""
    topic, header, buffers = messages.decode_envelope(frames)
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
        )
        for d in header.get("instances", [])
    ]
    return ReceivedFrame(topic, header, instances, class_map)


class ResultSubscriber:
    """A SUB socket on a pipeline's publish endpoint that yields ``ReceivedFrame`` objects.

    Status messages (schema ``segstream.status``) are kept in ``self.statuses``; messages of
    an unknown major protocol version are counted in ``self.rejected`` and skipped. A frame
    whose seq this subscriber has already had from the same run and stream (publish sends
    the frames since its last commit again after a restart of that stage) is counted in
    ``self.duplicates`` and skipped, so each frame is yielded at most once.
    """

    def __init__(
        self,
        endpoint: str,
        topics: Sequence[str] = ("",),
        hwm: int = 1000,
        curve_secret_key: str | None = None,
        curve_server_key: str | None = None,
    ) -> None:
        """``curve_secret_key`` (our ``NAME.key_secret``) and ``curve_server_key`` (the
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

        self.sock = sockets.subscriber(self.ctx, endpoint, topics, hwm=hwm, prepare=prepare)
        self.rejected = 0
        self.duplicates = 0
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
            if frame.header.get("schema") == messages.SCHEMA_STATUS:
                self.statuses.append(frame.header)
                continue
            if self._seen(frame):
                self.duplicates += 1
                continue
            return frame

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
        self.sock.close(0)
        self.ctx.term()

    def __enter__(self) -> ResultSubscriber:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
