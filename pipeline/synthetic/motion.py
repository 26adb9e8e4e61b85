"""Motion models of synthetic objects: every pose is a closed-form function of time.

Two kinds of track share the attributes the renderer reads (``track_id``, ``label``, ``r``,
``z``, the look and ``pose(t)``):

* ``Track``: the default scenes' objects, moving in a straight line at constant speed and
  bouncing off the canvas borders.
* ``PathTrack``: an object following a ``Path``, a timetable of straight moves with easing
  (accelerate, decelerate, both, or constant speed) and holds (pauses) between them; it may
  leave the canvas and come back.

Positions are in canvas units (see ``pipeline.synthetic.scene``), times in seconds.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CANVAS_H",
    "CANVAS_W",
    "EDGE_OVERHANG",
    "Ease",
    "Path",
    "PathBuilder",
    "PathTrack",
    "Segment",
    "Track",
    "ease",
    "smooth_inverse",
]

# The resolution independent canvas every scene is defined on (4:3, one unit high).
CANVAS_W = 4.0 / 3.0
CANVAS_H = 1.0
EDGE_OVERHANG = 0.3  # a bouncing centre may go this fraction of r past the canvas border

Point = tuple[float, float]
Ease = Literal["linear", "in", "out", "smooth"]


@dataclass(frozen=True)
class Track:
    """One default-scene object's whole life; all motion is a closed-form function of time."""

    track_id: int
    label: int
    r: float  # size (circumradius) in canvas units
    t0: float
    t1: float
    x0: float
    y0: float
    vx: float
    vy: float
    angle0: float
    spin: float
    z: float  # depth: larger is nearer (drawn later, occludes)
    color: tuple[float, float, float]
    shade_dir: float
    shade_amount: float
    stripe_period: float  # 0 = plain, else stripe period in units of r
    stripe_angle: float

    def pose(self, t: float) -> tuple[float, float, float]:
        """Centre (x, y) in canvas units and rotation angle at time ``t``."""
        dt = t - self.t0
        m = EDGE_OVERHANG * self.r
        x = _reflect(self.x0 + self.vx * dt, -m, CANVAS_W + m)
        y = _reflect(self.y0 + self.vy * dt, -m, CANVAS_H + m)
        return x, y, self.angle0 + self.spin * dt


def _reflect(s: float, lo: float, hi: float) -> float:
    """``s`` folded into ``[lo, hi]`` as a point bouncing between two walls would be."""
    span = hi - lo
    u = (s - lo) % (2.0 * span)
    return lo + (u if u <= span else 2.0 * span - u)


def ease(kind: Ease, u: float) -> float:
    """Fraction of a move done at time fraction ``u`` in [0, 1].

    ``in`` starts at rest and ends at twice the mean speed, ``out`` the reverse (so an
    ``in`` move followed by an ``out`` move of the same mean speed has no jump in velocity),
    ``smooth`` starts and ends at rest (peak 1.5 x the mean speed), ``linear`` is constant.
    """
    if kind == "linear":
        return u
    if kind == "in":
        return u * u
    if kind == "out":
        return u * (2.0 - u)
    if kind == "smooth":
        return u * u * (3.0 - 2.0 * u)
    raise ValueError(f"unknown easing {kind!r}")


def smooth_inverse(q: float) -> float:
    """The time fraction ``u`` in [0, 1] at which a ``smooth`` move has done ``q`` of its way.

    By symmetry it is also the time a ``smooth`` move spends within ``q`` of its end, which
    is how long an object easing into a hiding place is already hidden before it stops.
    """
    q = min(max(q, 0.0), 1.0)
    return 0.5 - math.sin(math.asin(1.0 - 2.0 * q) / 3.0)


@dataclass(frozen=True)
class Segment:
    """A straight move from ``start`` (at ``t0``) to ``end`` (at ``t1``) with an easing."""

    t0: float
    t1: float
    start: Point
    end: Point
    ease: Ease = "smooth"

    def at(self, t: float) -> Point:
        """Position at time ``t`` (clamped to the segment's time span)."""
        u = min(max((t - self.t0) / (self.t1 - self.t0), 0.0), 1.0)
        s = ease(self.ease, u)
        return (
            self.start[0] + (self.end[0] - self.start[0]) * s,
            self.start[1] + (self.end[1] - self.start[1]) * s,
        )


@dataclass(frozen=True)
class Path:
    """Moves in time order; between two moves (and after the last) the object holds still."""

    segments: tuple[Segment, ...]
    _starts: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a path needs at least one segment")
        object.__setattr__(self, "_starts", tuple(s.t0 for s in self.segments))

    def at(self, t: float) -> Point:
        """Position at time ``t``: before the first move, its start; after a move, its end."""
        k = bisect.bisect_right(self._starts, t) - 1
        return self.segments[max(k, 0)].at(t)


class PathBuilder:
    """Builds a ``Path`` move by move from a start point and time (holds advance the clock)."""

    def __init__(self, start: Point, t: float) -> None:
        self.point = start
        self.time = t
        self._segments: list[Segment] = []

    def move(self, to: Point, duration: float, how: Ease = "smooth") -> PathBuilder:
        """Move to ``to`` in ``duration`` seconds."""
        if duration <= 0.0:
            raise ValueError(f"a move needs a positive duration, got {duration}")
        self._segments.append(Segment(self.time, self.time + duration, self.point, to, how))
        self.point, self.time = to, self.time + duration
        return self

    def hold(self, duration: float) -> PathBuilder:
        """Stay put for ``duration`` seconds (a pause)."""
        self.time += max(duration, 0.0)
        return self

    def build(self) -> Path:
        """The path so far."""
        return Path(tuple(self._segments))


@dataclass(frozen=True)
class PathTrack:
    """One object following a ``Path``; the look and depth as in ``Track``."""

    track_id: int
    label: int
    r: float  # size (circumradius) in canvas units
    t0: float
    t1: float
    path: Path
    angle0: float
    spin: float
    z: float  # depth: larger is nearer (drawn later, occludes)
    color: tuple[float, float, float]
    shade_dir: float
    shade_amount: float
    stripe_period: float
    stripe_angle: float

    def pose(self, t: float) -> tuple[float, float, float]:
        """Centre (x, y) in canvas units and rotation angle at time ``t``."""
        x, y = self.path.at(t)
        return x, y, self.angle0 + self.spin * (t - self.t0)
