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

    def __init__(self, slots: int, batch_size: int, frame_interval_s: float | None = None) -> None:
        """``frame_interval_s``: a live feed's frame interval; given, admission is also timed
        (see :meth:`taken`)."""
        self.free: deque[int] = deque(range(slots))
        self.batch_size = batch_size
        self.in_flight: OrderedDict[int, dict[str, Any]] = OrderedDict()  # slot -> handle, in send order
        self.awaiting_model = 0
        self.frame_interval_s = frame_interval_s
        self.batch_s: float | None = None  # smoothed duration of the model's batches
        self.admit_from: float | None = None  # monotonic time live frames may be admitted again

    def has_free(self) -> bool:
        return bool(self.free)

    def can_admit_live(self, now: float | None = None) -> bool:
        """A live frame may go: a slot is free, the model's next batch has room, and (timed
        admission) the batch now running is close enough to its end."""
        if not self.free or self.awaiting_model >= self.batch_size:
            return False
        return self.admit_from is None or now is None or now >= self.admit_from

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

    def taken(self, count: int, now: float | None = None, batch_s: float | None = None) -> None:
        """The model took a batch of ``count`` admitted frames (at ``now``; its previous batch
        ran ``batch_s`` seconds).

        Timed admission: frames admitted right away would wait a whole batch before theirs
        starts, and reach publish two batch times old. Instead the next batch is admitted
        only once the running one is about to end: from ``now + batch - fill``, where
        ``fill`` is the time the feed needs to deliver a batch plus one frame of slack, so
        the model does not wait either. The estimate follows the batches as they come.
        """
        self.awaiting_model = max(0, self.awaiting_model - count)
        if batch_s is not None and batch_s > 0:
            self.batch_s = batch_s if self.batch_s is None else 0.7 * self.batch_s + 0.3 * batch_s
        if now is not None and self.batch_s is not None and self.frame_interval_s:
            fill = (self.batch_size + 1) * self.frame_interval_s
            self.admit_from = now + max(0.0, self.batch_s - fill)

    def replay(self, current_gen: Callable[[int], int]) -> list[dict[str, Any]]:
        """Handles to send again after a downstream restart, in send order: those whose slot
        still holds them (``current_gen(slot)`` equals the handle's ``gen``)."""
        again = [h for slot, h in self.in_flight.items() if current_gen(slot) == h["gen"]]
        self.awaiting_model += len(again)
        return again
