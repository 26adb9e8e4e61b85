"""Exactly-once publishing: what publish does with each frame that reaches it.

Per stream, frames are published in seq order, once. After a restart anywhere, frames in
flight are replayed, so publish sees duplicates (already published) and frames ahead of a
gap (a replay will bring the gap first, and them again). A published frame's ring slot is
*held* until the frame is *committed* (its overlay segment closed, or for files without
video its batch ended: points a restarted publish resumes from, re-encoding only what
came after); committing releases the held slots back to capture.

Decisions for an arriving frame ``seq`` (``next`` = the next seq to publish, ``committed``
= the first seq not committed):

===========================  ==============================================================
``seq == next``              PUBLISH
``seq > next``               EARLY: drop it, keep its slot (its replay is coming)
``seq < committed``          DUPLICATE: drop it, release its slot (a no-op unless capture
                             still holds that copy)
``committed <= seq < next``  DUPLICATE: drop it; if it is a newer copy (another slot or
                             generation, from a restarted capture) hold that one instead
                             and release the older
===========================  ==============================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

Handle = tuple[int, int]  # (slot, generation)


class Decision(Enum):
    PUBLISH = "publish"
    EARLY = "early"
    DUPLICATE = "duplicate"


@dataclass
class Verdict:
    """What to do with a frame, and which slots to give back to capture now."""

    decision: Decision
    release: list[Handle] = field(default_factory=list)


@dataclass
class StreamLedger:
    """One stream's position: next to publish, first not committed, and held handles."""

    next: int = 0
    committed: int = 0
    held: list[tuple[int, int, int]] = field(default_factory=list)  # (seq, slot, gen), published

    def arrive(self, seq: int, slot: int, gen: int) -> Verdict:
        if seq == self.next:
            return Verdict(Decision.PUBLISH)
        if seq > self.next:
            return Verdict(Decision.EARLY)
        if seq < self.committed:
            return Verdict(Decision.DUPLICATE, [(slot, gen)])
        release = []
        for i, (held_seq, held_slot, held_gen) in enumerate(self.held):
            if held_seq == seq and (held_slot, held_gen) != (slot, gen):
                self.held[i] = (seq, slot, gen)
                release.append((held_slot, held_gen))
        return Verdict(Decision.DUPLICATE, release)

    def published(self, seq: int, slot: int, gen: int) -> None:
        self.next = seq + 1
        self.held.append((seq, slot, gen))

    def commit(self) -> list[Handle]:
        """Everything published is committed now: the held slots go back."""
        released = [(slot, gen) for _, slot, gen in self.held]
        self.held.clear()
        self.committed = self.next
        return released


class PublishLedger:
    """Every stream's ledger, the commit rule, and the drop counters."""

    def __init__(self, streams: list[str], commit_every: int, resume: dict[str, int] | None = None) -> None:
        """``commit_every``: without video, a stream commits every this many frames (a fixed
        batch); ``resume``: per stream, the committed position a restarted publish resumes at."""
        resume = resume or {}
        self.streams = {sid: StreamLedger(resume.get(sid, 0), resume.get(sid, 0)) for sid in streams}
        self.commit_every = max(1, commit_every)
        self.early_dropped = 0
        self.duplicates_dropped = 0

    def arrive(self, stream: str, seq: int, slot: int, gen: int) -> Verdict:
        verdict = self.streams[stream].arrive(seq, slot, gen)
        if verdict.decision is Decision.EARLY:
            self.early_dropped += 1
        elif verdict.decision is Decision.DUPLICATE:
            self.duplicates_dropped += 1
        return verdict

    def published(self, stream: str, seq: int, slot: int, gen: int, segment_closed: bool | None) -> list[Handle]:
        """The frame is out. ``segment_closed``: with video, whether it closed its overlay
        segment (the commit point); None without video (commit every ``commit_every``).
        Returns the slots to release: empty unless this was a commit point (which always
        releases at least this frame's slot)."""
        ledger = self.streams[stream]
        ledger.published(seq, slot, gen)
        at_commit_point = segment_closed if segment_closed is not None else ledger.next % self.commit_every == 0
        return ledger.commit() if at_commit_point else []

    def commit_all(self) -> list[Handle]:
        """End of the run: commit every stream."""
        return [handle for ledger in self.streams.values() for handle in ledger.commit()]

    def complete(self, totals: dict[str, int]) -> bool:
        """True once every stream has published ``totals[stream]`` frames."""
        return all((self.streams[sid].next if sid in self.streams else 0) >= total for sid, total in totals.items())
