"""Ring slots and admissions, as capture keeps them.

The ring has a fixed number of slots. Capture writes a frame into a free slot and sends its
handle; publish returns the slot when nothing can need the frame any more (``release``, with
the slot's generation, so a late release of an older copy frees nothing). Until then the
frame is *in flight*: after a downstream restart it is sent again (``replay``).

Live feeds also need room at the model's door: the infer stage reports each batch it takes
(``taken``), and capture keeps at most one batch admitted but not taken, so every live frame
it sends is in the model's next batch and waits at most one inference time before its own.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any


class SlotCredits:
    """Free slots, frames in flight, and frames admitted but not yet taken by the model."""

    def __init__(self, slots: int, batch_size: int) -> None:
        self.free: deque[int] = deque(range(slots))
        self.batch_size = batch_size
        self.in_flight: OrderedDict[int, dict[str, Any]] = OrderedDict()  # slot -> handle, in send order
        self.awaiting_model = 0

    def has_free(self) -> bool:
        return bool(self.free)

    def can_admit_live(self) -> bool:
        """A live frame may go: a slot is free and the model's next batch has room."""
        return bool(self.free) and self.awaiting_model < self.batch_size

    def take(self) -> int:
        """The slot to write the next frame into (there must be one)."""
        return self.free.popleft()

    def sent(self, slot: int, handle: dict[str, Any]) -> None:
        """``handle`` (with its ``gen``) went downstream from ``slot``."""
        self.in_flight[slot] = handle
        self.awaiting_model += 1

    def release(self, slot: int, gen: int | None) -> bool:
        """Publish is done with ``slot`` at generation ``gen``; True if that freed it."""
        handle = self.in_flight.get(slot)
        if handle is None or handle["gen"] != gen:
            return False  # a replayed copy's late release, or one from before a restart
        del self.in_flight[slot]
        self.free.append(slot)
        return True

    def taken(self, count: int) -> None:
        """The model took a batch of ``count`` admitted frames."""
        self.awaiting_model = max(0, self.awaiting_model - count)

    def replay(self, current_gen: Callable[[int], int]) -> list[dict[str, Any]]:
        """Handles to send again after a downstream restart, in send order: those whose slot
        still holds them (``current_gen(slot)`` equals the handle's ``gen``)."""
        again = [h for slot, h in self.in_flight.items() if current_gen(slot) == h["gen"]]
        self.awaiting_model += len(again)
        return again
