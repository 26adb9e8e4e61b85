"""Exceptions shared by both layers: ``engines`` raises them, ``pipeline`` reports them.

They live here, in the lower layer, so that ``engines`` needs nothing from ``pipeline``;
``pipeline.errors`` re-exports them and adds the runtime's own kinds.
"""


class SegstreamError(Exception):
    """Base class: the message is shown to the user as-is, on one line."""


class ModelError(SegstreamError):
    """Unknown model, unreadable weights, or a backend that cannot run here."""


def one_line(exc: BaseException) -> str:
    """``"<Type>: <first line>"`` of an exception, for wrapping it into a one-line message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
