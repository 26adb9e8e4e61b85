"""Fixed batches for files: batch ``k`` is frames ``k*n .. (k+1)*n - 1``.

A frame's numbers can depend on its batch mates (CPU kernels choose their blocking by batch
size), so for files the batches are fixed by frame number: results never depend on timing,
and after a restart the replayed frames re-form exactly the batches they were in. Frames
wait in their batch until it is whole, whatever order they arrive in; the last batch ends
at the stream's total, known once end-of-stream arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class FixedBatches(Generic[T]):
    """Collects items by sequence number and hands out whole batches in order."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        self.size = size
        self.total: int | None = None  # frames in the stream, once known
        self._batches: dict[int, dict[int, T]] = {}

    def add(self, seq: int, item: T) -> None:
        """File ``item`` under its batch; a newer copy of the same frame replaces the older."""
        self._batches.setdefault(seq // self.size, {})[seq] = item

    def discard(self, is_stale: Callable[[T], bool]) -> int:
        """Drop every waiting item ``is_stale`` says is no longer valid (its ring slot was
        rewritten); returns how many. A replay brings those frames again."""
        dropped = 0
        for members in self._batches.values():
            for seq in [seq for seq, item in members.items() if is_stale(item)]:
                del members[seq]
                dropped += 1
        self._batches = {k: members for k, members in self._batches.items() if members}
        return dropped

    def end(self, total: int) -> None:
        """End of stream: ``total`` frames in all, so the last batch may be partial."""
        self.total = total

    def _bounds(self, k: int) -> range:
        first = k * self.size
        last = first + self.size if self.total is None else min(first + self.size, self.total)
        return range(first, last)

    def ready(self) -> list[list[T]]:
        """Every batch that is whole now, lowest first (removed from the waiting set). A
        batch goes as soon as it is whole: frames and replays arrive in seq order, so in
        practice batches do too, and a fresh process cannot know which batch came first."""
        out = []
        for k in sorted(self._batches):
            members = self._batches[k]
            bounds = self._bounds(k)
            if len(bounds) and all(seq in members for seq in bounds):
                del self._batches[k]
                out.append([members[seq] for seq in bounds])
        return out

    def waiting(self) -> int:
        """Items waiting for their batch to be whole."""
        return sum(len(members) for members in self._batches.values())
