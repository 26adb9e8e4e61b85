"""When a stage that died or hung is started again, and when the run gives up instead.

A stage that reported an error of its own (bad input, a bug) is not restarted: it would
fail the same way again. Otherwise it is restarted after a backoff that doubles with each
recent restart, at most ``max_restarts`` times within ``window_s``: a feed running for weeks
is not ended by crashes weeks apart, while a crash loop ends the run quickly. The
supervisor *schedules* the restart at ``now + delay`` and keeps serving its event loop in
the meantime (heartbeats, signals), instead of sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartDecision:
    restart: bool
    delay_s: float = 0.0  # wait this long before starting the stage again
    recent: int = 0  # restarts of this stage within the window, before this one
    reason: str = ""  # why not (when restart is False)


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int
    window_s: float
    backoff_s: float
    backoff_max_s: float

    def recent(self, history: list[float], now: float) -> list[float]:
        """The restart times of ``history`` that still count at ``now``."""
        return [t for t in history if now - t < self.window_s]

    def decide(self, history: list[float], now: float, reported_error: bool) -> RestartDecision:
        """Whether to restart a stage whose earlier restarts happened at ``history``."""
        recent = len(self.recent(history, now))
        if reported_error:
            return RestartDecision(False, recent=recent, reason="the stage reported an error of its own")
        if recent >= self.max_restarts:
            reason = f"gave up after {recent} restart(s) within {self.window_s:g} s" if recent else "restarts are off"
            return RestartDecision(False, recent=recent, reason=reason)
        return RestartDecision(True, min(self.backoff_max_s, self.backoff_s * 2**recent), recent)
