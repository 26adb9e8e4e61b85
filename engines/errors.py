"""Exceptions shared by both layers: ``engines`` raises them, ``pipeline`` reports them.

They live here, in the lower layer, so that ``engines`` needs nothing from ``pipeline``;
``pipeline.errors`` re-exports them and adds the runtime's own kinds.
"""


class SegstreamError(Exception):
    """Base class: the message is shown to the user as-is, on one line."""


class ModelError(SegstreamError):
    """Unknown model, unreadable weights, or a backend that cannot run here."""
