"""The parts every stage message shares: header checks with clear errors, array views of
received buffers, equality that compares arrays, and flat messages (header = fields)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any, ClassVar, Self

import numpy as np

Header = dict[str, Any]
Parts = tuple[Header, list[Any]]


class MessageError(ValueError):
    """A header or its buffers do not describe the expected message."""


# -- checks --------------------------------------------------------------------------------
def check_header(what: str, header: Header, required: Sequence[str], optional: Sequence[str] = (),
                 kind: str | None = None) -> None:
    """Raise unless ``header`` has type ``kind`` (if given), every required key, no others."""
    if not isinstance(header, dict):
        raise MessageError(f"{what}: header must be a dict, got {type(header).__name__}")
    if kind is not None and header.get("type") != kind:
        raise MessageError(f"{what}: expected type {kind!r}, got {header.get('type')!r}")
    allowed = {*required, *optional, *(("type",) if kind is not None else ())}
    missing = [key for key in required if key not in header]
    unknown = sorted(str(key) for key in header if key not in allowed)
    problems = [f"missing keys {missing}"] if missing else []
    problems += [f"unknown keys {unknown}"] if unknown else []
    if problems:
        raise MessageError(f"{what}: {'; '.join(problems)}")


def check_count(what: str, buffers: Sequence[Any], expected: int) -> None:
    """Raise unless there are exactly ``expected`` buffers."""
    if len(buffers) != expected:
        raise MessageError(f"{what}: expected {expected} buffer(s), got {len(buffers)}")


def array_view(what: str, name: str, buffer: Any, dtype: type, shape: Sequence[int]) -> np.ndarray:
    """``buffer`` as a ``dtype`` array of ``shape``: a view of it, never a copy."""
    try:
        return np.frombuffer(buffer, dtype).reshape(tuple(shape))
    except (TypeError, ValueError) as err:
        raise MessageError(f"{what}: buffer '{name}' is not {np.dtype(dtype).name} {list(shape)}: {err}") from None


def expect_array(what: str, name: str, array: Any, dtype: type, shape: Sequence[int | None]) -> None:
    """Raise unless ``array`` is a ``dtype`` array of ``shape`` (None: any length)."""
    ok = (isinstance(array, np.ndarray) and array.dtype == dtype and array.ndim == len(shape)
          and all(want is None or want == got for want, got in zip(shape, array.shape, strict=True)))
    if not ok:
        got = f"{array.dtype} {list(array.shape)}" if isinstance(array, np.ndarray) else type(array).__name__
        want = [("*" if s is None else s) for s in shape]
        raise MessageError(f"{what}: {name} must be {np.dtype(dtype).name} {want}, got {got}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and bool(np.array_equal(a, b)))
    return bool(a == b)


class Message:
    """Field-wise equality that compares arrays by dtype, shape and contents."""

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    __hash__ = None  # type: ignore[assignment]  # arrays and dicts inside: not hashable


def as_tuple(value: Sequence[int] | None) -> tuple[int, ...] | None:
    """A received list (MessagePack has no tuples) as a tuple; None stays None."""
    return None if value is None else tuple(value)


class FlatMessage(Message):
    """A message whose header is ``type`` (if any) and its fields, in order; no buffers."""

    _type: ClassVar[str | None] = None

    def to_parts(self) -> Parts:
        """``(header, buffers)`` to send."""
        header: Header = {} if self._type is None else {"type": self._type}
        header.update((f.name, getattr(self, f.name)) for f in fields(self))
        return header, []

    @classmethod
    def from_parts(cls, header: Header, buffers: Sequence[Any]) -> Self:
        """The message in a received ``(header, buffers)``."""
        keys = [f.name for f in fields(cls)]
        check_header(cls.__name__, header, keys, kind=cls._type)
        check_count(cls.__name__, buffers, 0)
        return cls(**{key: header[key] for key in keys})
