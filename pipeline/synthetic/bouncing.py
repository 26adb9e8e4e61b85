"""Objects of the default scene kind: born in epochs, bouncing around, living a few seconds.

Objects (tracks) are born in 2-second *epochs*: epoch ``e`` draws its tracks from a random
generator seeded with ``(seed, e)``, so the tracks alive at any time are found by looking at
the few epochs that can still be alive. Each track moves in a straight line, bouncing off
the canvas borders (closed-form reflection), rotates at a constant rate, and lives for
3 to 9 seconds. At most ``MAX_OBJECTS`` tracks are shown; there is always at least one.

The demo models were trained on these scenes: the draws below, their order and their
arithmetic are part of that training data and must not change.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from pipeline.synthetic.motion import CANVAS_H, CANVAS_W, Track
from pipeline.synthetic.shapes import NUM_CLASSES
from pipeline.synthetic.style import draw_look, seed_entropy

__all__ = ["MAX_OBJECTS", "BouncingTracks", "epoch_tracks"]

EPOCH_S = 2.0  # tracks are born in epochs of this length
MIN_DURATION_S = 3.0  # >= EPOCH_S, so the first track of every epoch keeps the scene non-empty
MAX_DURATION_S = 9.0
MAX_OBJECTS = 12
# Object size: circumscribed diameter as a fraction of the canvas height
# (16 px at 480 px height ... a third of the frame).
MIN_DIAMETER = 16.0 / 480.0
MAX_DIAMETER = 1.0 / 3.0
MIN_SPEED, MAX_SPEED = 0.03, 0.18  # canvas units per second
MAX_SPIN = 1.2  # radians per second


def _epoch_track(rng: np.random.Generator, epoch: int, k: int, bg_base: np.ndarray) -> Track:
    """Track ``k`` of ``epoch`` (the draws of one track, in their training-data order)."""
    start = rng.uniform(0.0, EPOCH_S)
    # The first track of an epoch is born at its start, so some track is always alive.
    t0 = epoch * EPOCH_S + (0.0 if k == 0 else start)
    t1 = t0 + rng.uniform(MIN_DURATION_S, MAX_DURATION_S)
    label = int(rng.integers(1, NUM_CLASSES))
    d = MIN_DIAMETER + (MAX_DIAMETER - MIN_DIAMETER) * rng.uniform() ** 1.5
    x0, y0 = rng.uniform(0.0, CANVAS_W), rng.uniform(0.0, CANVAS_H)
    heading = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(MIN_SPEED, MAX_SPEED)
    angle0 = rng.uniform(0, 2 * np.pi)
    spin = rng.uniform(-MAX_SPIN, MAX_SPIN)
    # Depth: mostly smaller objects in front (so small ones are rarely buried).
    z = 0.3 * rng.uniform() - d
    look = draw_look(rng, bg_base)
    return Track(
        track_id=(epoch + 8) * 4 + k + 1,
        label=label,
        r=0.5 * d,
        t0=t0,
        t1=t1,
        x0=x0,
        y0=y0,
        vx=speed * math.cos(heading),
        vy=speed * math.sin(heading),
        angle0=angle0,
        spin=spin,
        z=z,
        color=look.color,
        shade_dir=look.shade_dir,
        shade_amount=look.shade_amount,
        stripe_period=look.stripe_period,
        stripe_angle=look.stripe_angle,
    )


def epoch_tracks(
    seed: int, epoch: int, bg_base: np.ndarray, stream: tuple[int, ...] = ()
) -> tuple[Track, ...]:
    """The one to three tracks born in ``epoch`` of scene ``seed``.

    ``stream`` prefixes the epoch's random stream: () is the default kind's (the training
    data); another kind passes its own so its objects differ from the default scene's."""
    rng = np.random.default_rng(seed_entropy(seed, *stream, epoch))
    n = int(rng.integers(1, 4))
    return tuple(_epoch_track(rng, epoch, k, bg_base) for k in range(n))


class BouncingTracks:
    """The default kind's tracks of one scene, looked up by time (``stream``: see
    ``epoch_tracks``; the panoptic kind's objects bounce the same way in their own stream)."""

    def __init__(self, seed: int, bg_base: np.ndarray, stream: tuple[int, ...] = ()) -> None:
        self.seed = seed
        self.bg_base = bg_base
        self.stream = tuple(stream)
        self._epoch = lru_cache(maxsize=64)(self._make_epoch)

    def _make_epoch(self, epoch: int) -> tuple[Track, ...]:
        return epoch_tracks(self.seed, epoch, self.bg_base, self.stream)

    def tracks_at(self, t: float) -> list[Track]:
        """Tracks shown at time ``t`` (oldest first, at most ``MAX_OBJECTS``)."""
        first = math.floor((t - MAX_DURATION_S) / EPOCH_S)
        last = math.floor(t / EPOCH_S)
        alive = [
            trk for e in range(first, last + 1) for trk in self._epoch(e) if trk.t0 <= t < trk.t1
        ]
        alive.sort(key=lambda trk: (trk.t0, trk.track_id))
        return alive[:MAX_OBJECTS]
