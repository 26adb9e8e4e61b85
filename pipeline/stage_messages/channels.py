"""In-band messages of the data hops (end-of-stream, status), the back channels to capture
(slot releases, admissions), and the supervisor's control and the stages' events."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pipeline.stage_messages._codec import (
    FlatMessage,
    Header,
    Message,
    MessageError,
    Parts,
    check_count,
    check_header,
)
from pipeline.stage_messages.frames import FrameMessage


class ControlKind(StrEnum):
    """What the supervisor tells the stages (``Control``)."""

    START = "start"  # every stage is ready: capture may begin reading
    DRAIN = "drain"  # stop reading, finish the frames in flight
    REPLAY = "replay"  # a restarted stage is ready: capture sends the frames in flight again
    EXIT = "exit"  # the run is complete
    ABORT = "abort"  # stop now


class EventKind(StrEnum):
    """What a stage tells the supervisor (``Event``)."""

    READY = "ready"
    STARTED = "started"
    HEARTBEAT = "heartbeat"
    PROGRESS = "progress"
    DONE = "done"
    ERROR = "error"


@dataclass(frozen=True, eq=False)
class EndOfStream(FlatMessage):
    """Capture's last message, relayed by every stage: ``frames`` read in all, and per
    stream the frame count publish must have seen before it can finish."""

    frames: int
    totals: dict[str, int] = field(default_factory=dict)
    _type = "eos"

    def total(self, stream: str) -> int:
        """Frames in ``stream`` (all frames read, if the stream is not listed)."""
        return self.totals.get(stream, self.frames)


@dataclass(frozen=True, eq=False)
class Status(FlatMessage):
    """A source's link status (``segstream.status``, docs/PROTOCOL.md), in order with the frames."""

    status: dict[str, Any]
    _type = "status"


DataMessage = FrameMessage | EndOfStream | Status


def decode(header: Header, buffers: Sequence[Any],
           frame: Callable[[Header, Sequence[Any]], FrameMessage]) -> DataMessage:
    """A message received on a data hop; ``frame`` decodes that hop's frame messages."""
    kind = header.get("type") if isinstance(header, dict) else None
    if kind == "frame":
        return frame(header, buffers)
    if kind == "eos":
        return EndOfStream.from_parts(header, buffers)
    if kind == "status":
        return Status.from_parts(header, buffers)
    raise MessageError(f"data hop: unknown message type {kind!r}")


@dataclass(frozen=True, eq=False)
class SlotRelease(FlatMessage):
    """Publish → capture: nothing needs ``slot`` at generation ``gen`` any more."""

    slot: int
    gen: int


@dataclass(frozen=True, eq=False)
class Admission(FlatMessage):
    """Infer → capture (live feeds): the model took a batch of ``count`` admitted frames;
    its previous batch ran ``batch_s`` seconds (None before the first), which capture uses to
    admit the next batch just in time (see pipeline/policies/slot_credits.py)."""

    count: int
    batch_s: float | None = None
    _type = "taken"


def _kind(what: str, enum: type[StrEnum], value: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise MessageError(f"{what}: unknown kind {value!r}") from None


@dataclass(frozen=True, eq=False)
class Control(Message):
    """Supervisor → every stage."""

    kind: ControlKind

    def to_parts(self) -> Parts:
        """``(header, buffers)`` to send."""
        return {"type": ControlKind(self.kind).value}, []

    @classmethod
    def from_parts(cls, header: Header, buffers: Sequence[Any]) -> Control:
        """The message in a received ``(header, buffers)``; unknown kinds raise."""
        check_header(cls.__name__, header, ("type",))
        check_count(cls.__name__, buffers, 0)
        return cls(_kind(cls.__name__, ControlKind, header["type"]))


@dataclass(frozen=True, eq=False)
class Event(Message):
    """A stage → the supervisor: ``kind`` and its fields (``stats``, ``spec``, ``frames``...)."""

    stage: str
    kind: EventKind
    fields: dict[str, Any] = field(default_factory=dict)

    def to_parts(self) -> Parts:
        """``(header, buffers)`` to send: the fields follow ``stage`` and ``type``."""
        return {"stage": self.stage, "type": EventKind(self.kind).value, **self.fields}, []

    @classmethod
    def from_parts(cls, header: Header, buffers: Sequence[Any]) -> Event:
        """The message in a received ``(header, buffers)``; unknown kinds raise."""
        check_header(cls.__name__, header, ("stage", "type"), optional=list(header))
        check_count(cls.__name__, buffers, 0)
        rest = {key: value for key, value in header.items() if key not in ("stage", "type")}
        return cls(header["stage"], _kind(cls.__name__, EventKind, header["type"]), rest)
