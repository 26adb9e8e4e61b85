"""Objects of the ``tracking`` scene kind: scripted crossings, occlusions, exits and returns.

Time is cut into *acts* of ``ACT_S`` seconds; act ``e`` (times ``e * ACT_S`` onwards) draws
its objects from a generator seeded with ``(seed, -3, e)`` (random access, like the default
kind's epochs). An act's objects slide in from the nearest canvas edge during the second
before it starts and out during the second after it ends, so consecutive acts overlap by
two seconds and the scene is never empty. Within every act, by construction:

* **crossing**: two objects on crossing courses (one roughly horizontal, one roughly
  vertical) whose centres meet at the same instant; the one in front is the smaller, so
  both stay visible where they overlap, and their boxes are apart before and after;
* **occlusion**: a small object eases behind a large solid occluder (a circle or square
  drawn in front of it), stops there, and comes out on another side: it is entirely
  inside the occluder for 0.3 to 1 s, so its annotation vanishes and returns;
* **exit and re-entry**: one of the crossers keeps going, leaves the canvas completely,
  moves along outside it and comes back in across the same edge some frames later;
* **varying speed**: every move accelerates and/or decelerates, with pauses between.

One to three *wanderers* roam around behind everything else of their act. An act's objects
are layered (``z``) above every earlier act's, and its scripted events end before the next
act's objects come in (``EVENTS_END_S``), so no other object can cover an event. The roles
keep to two zones (occlusion on one side, crossing on the other; mirrored at random) so
they cannot cover each other either. An object keeps its ``track_id`` through all of it.
Geometry is in canvas units, so the events happen at every frame size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from pipeline.synthetic.motion import (
    CANVAS_H,
    CANVAS_W,
    Path,
    PathBuilder,
    PathTrack,
    smooth_inverse,
)
from pipeline.synthetic.shapes import BOUND_FACTOR, CIRCLE, NUM_CLASSES, SQUARE
from pipeline.synthetic.style import draw_look, seed_entropy

__all__ = ["ACT_S", "Act", "ActEvents", "TrackingTracks", "make_act"]

ACT_S = 6.0  # length of an act; act 0 is [0, 6) s
SLIDE_S = 1.0  # objects slide in during the second before their act, out during the one after
EVENTS_END_S = 4.8  # every scripted event of an act is over by then (act-relative time)
HIDE_MAX_S = 1.0  # the occluded object is entirely hidden for at most this long
OFFSCREEN_GAP = 0.03  # how far past the edge (beyond its bounding circle) an object goes
MAX_SPIN = 1.2  # radians per second
ACT_Z = 8.0  # depth step between acts: later acts are in front of earlier ones
WANDER_Z, HIDDEN_Z, BACK_Z, FRONT_Z, OCCLUDER_Z = 0.0, 2.0, 3.0, 4.0, 5.0

Point = tuple[float, float]


@dataclass(frozen=True)
class ActEvents:
    """When an act's scripted events happen (absolute times in seconds, for checks)."""

    crossing: tuple[int, int, float]  # the two crossers' track ids, time their centres meet
    hidden: tuple[int, float, float]  # track id, span it is surely entirely behind the occluder
    offscreen: tuple[int, float, float]  # track id, span it is entirely outside the canvas


@dataclass(frozen=True)
class Act:
    """An act's tracks and its events."""

    tracks: tuple[PathTrack, ...]
    events: ActEvents


class _Mirror(NamedTuple):
    """Maps the base layout (occlusion left, crossing right) onto the act's orientation."""

    flip_x: bool
    flip_y: bool

    def __call__(self, x: float, y: float) -> Point:
        return (CANVAS_W - x if self.flip_x else x, CANVAS_H - y if self.flip_y else y)


class _Role(NamedTuple):
    """An object's shape, size, depth and path before its look is drawn."""

    label: int
    r: float
    z: float
    path: PathBuilder
    spin: float = MAX_SPIN


def _bound(label: int, r: float) -> float:
    return r * BOUND_FACTOR[label]


def _offscreen(p: Point, bound: float) -> Point:
    """``p`` pushed across the nearest canvas edge until the object is entirely outside."""
    x, y = p
    past = bound + OFFSCREEN_GAP
    edges = [
        (x, (-past, y)),
        (CANVAS_W - x, (CANVAS_W + past, y)),
        (y, (x, -past)),
        (CANVAS_H - y, (x, CANVAS_H + past)),
    ]
    return min(edges, key=lambda e: e[0])[1]


def _slide_in(start: Point, bound: float, t_act: float) -> PathBuilder:
    """A path arriving at ``start`` at the act's start, from off the canvas."""
    return PathBuilder(_offscreen(start, bound), t_act - SLIDE_S).move(start, SLIDE_S)


def _heading(deg: float) -> Point:
    return math.cos(math.radians(deg)), math.sin(math.radians(deg))


def _occlusion(
    rng: np.random.Generator, m: _Mirror, t_act: float
) -> tuple[_Role, _Role, tuple[float, float]]:
    """The occluder, the object hiding behind it, and the span it is surely hidden."""
    occ_label = CIRCLE if rng.uniform() < 0.5 else SQUARE
    big = rng.uniform(0.11, 0.14)
    cx, cy = rng.uniform(0.32, 0.35), rng.uniform(0.42, 0.58)
    # Radius of the disk the occluder surely covers, whatever its rotation.
    inner = big if occ_label == CIRCLE else big / math.sqrt(2.0)
    label = int(rng.integers(1, NUM_CLASSES))
    r = rng.uniform(0.03, 0.04)
    b = _bound(label, r)
    # Waiting points on two different sides (up, down, left: away from the crossing zone),
    # just clear of the occluder so the object is fully visible there.
    sides = rng.permutation(3)[:2]
    waits, dists = [], []
    for side in sides:
        dist = big + b + rng.uniform(0.03, 0.05)
        dx, dy = _heading((-90.0, 90.0, 180.0)[side] + rng.uniform(-20.0, 20.0))
        waits.append(m(cx + dist * dx, cy + dist * dy))
        dists.append(dist)
    h0 = rng.uniform(0.3, 1.5)
    t_in, t_out = rng.uniform(0.55, 0.7, 2)
    # Entirely hidden while its bounding circle is inside the covered disk: easing to a stop
    # at the centre, that is the last smooth_inverse((inner - b) / dist) of the move in.
    sure_in = t_in * _tail(inner - b, dists[0])
    sure_out = t_out * _tail(inner - b, dists[1])
    # It cannot be entirely hidden once its centre is out of the occluder's circumcircle.
    maybe = t_in * _tail(big, dists[0]) + t_out * _tail(big, dists[1])
    target = rng.uniform(0.45, 0.9)
    hold = max(0.0, min(target - sure_in - sure_out, HIDE_MAX_S - maybe))
    centre = m(cx, cy)
    path = _slide_in(waits[0], b, t_act).hold(h0).move(centre, t_in).hold(hold)
    hidden_from, hidden_to = path.time - hold - sure_in, path.time + sure_out
    path.move(waits[1], t_out)
    occluder = _Role(occ_label, big, OCCLUDER_Z, _slide_in(centre, big, t_act), 0.3)
    hidden = _Role(label, r, HIDDEN_Z, path)
    return occluder, hidden, (hidden_from, hidden_to)


def _tail(within: float, dist: float) -> float:
    """Fraction of a smooth move of length ``dist`` spent within ``within`` of its end."""
    return smooth_inverse(within / dist)


class _Crossing(NamedTuple):
    """The crossing's geometry and timing, drawn before the paths are built."""

    meet: Point
    heading_a: Point
    heading_b: Point
    dist_a: float
    dist_b_in: float
    dist_b_out: float
    start: float  # when A sets off
    time_a: float  # A's (accelerating) run to the meeting point
    time_b: float  # B's


def _draw_crossing(rng: np.random.Generator) -> _Crossing:
    meet = (rng.uniform(0.90, 0.94), rng.uniform(0.42, 0.58))
    heading_a = _heading(rng.uniform(-10.0, 10.0))  # outwards, towards the far edge
    heading_b = _heading((90.0 if rng.uniform() < 0.5 else -90.0) + rng.uniform(-10.0, 10.0))
    dist_a, dist_b_in, dist_b_out = rng.uniform(0.22, 0.26, 3)
    start = rng.uniform(0.2, 0.5)
    time_a = rng.uniform(0.9, 1.2)
    time_b = rng.uniform(0.85, min(1.2, start + time_a))
    return _Crossing(
        meet, heading_a, heading_b, dist_a, dist_b_in, dist_b_out, start, time_a, time_b
    )


def _crossing(
    rng: np.random.Generator, m: _Mirror, t_act: float
) -> tuple[tuple[_Role, _Role], float, tuple[float, float]]:
    """The two crossers (A leaves the canvas and comes back), their meeting time, and the
    span A is off the canvas."""
    c = _draw_crossing(rng)
    labels = [int(v) for v in rng.integers(1, NUM_CLASSES, 2)]
    small, large = rng.uniform(0.032, 0.04), rng.uniform(0.07, 0.08)
    # The smaller one passes in front: the larger one stays visible around it.
    a_small = rng.uniform() < 0.5
    ra, rb = (small, large) if a_small else (large, small)
    za, zb = (FRONT_Z, BACK_Z) if a_small else (BACK_Z, FRONT_Z)
    ba, bb = _bound(labels[0], ra), _bound(labels[1], rb)
    (mx, my), (ax, ay), (bx, by) = c.meet, c.heading_a, c.heading_b
    t_meet = t_act + c.start + c.time_a
    # B: accelerate to the meeting point, decelerate away at the same speed (no jump).
    path_b = _slide_in(m(mx - c.dist_b_in * bx, my - c.dist_b_in * by), bb, t_act)
    path_b.hold(t_meet - c.time_b - path_b.time).move(m(mx, my), c.time_b, "in")
    path_b.move(
        m(mx + c.dist_b_out * bx, my + c.dist_b_out * by),
        c.time_b * c.dist_b_out / c.dist_b_in,
        "out",
    )
    # A: accelerate to the meeting point, then straight on at that speed off the canvas.
    speed = 2.0 * c.dist_a / c.time_a
    path_a = _slide_in(m(mx - c.dist_a * ax, my - c.dist_a * ay), ba, t_act)
    path_a.hold(c.start).move(m(mx, my), c.time_a, "in")
    exit_x = CANVAS_W + ba + OFFSCREEN_GAP
    run = (exit_x - mx) / ax
    out_y = my + run * ay
    path_a.move(m(exit_x, out_y), run / speed, "linear")
    gone = t_meet + (CANVAS_W + ba - mx) / ax / speed  # when it is entirely outside
    # Off the canvas it moves along the edge (towards the middle), then comes back in.
    back_y = out_y + (1.0 if out_y < 0.5 else -1.0) * rng.uniform(0.08, 0.18)
    back_x = CANVAS_W - ba - rng.uniform(0.04, 0.08)
    path_a.move(m(exit_x, back_y), rng.uniform(0.35, 0.6))
    come_back = rng.uniform(0.7, 0.9)
    seen_at = path_a.time + come_back * smooth_inverse(OFFSCREEN_GAP / (exit_x - back_x))
    path_a.move(m(back_x, back_y), come_back)
    roles = (_Role(labels[0], ra, za, path_a), _Role(labels[1], rb, zb, path_b))
    return roles, t_meet, (gone, seen_at)


def _wanderer(rng: np.random.Generator, t_act: float, layer: float) -> _Role:
    """An object roaming about, with pauses, behind the act's scripted objects."""
    label = int(rng.integers(1, NUM_CLASSES))
    r = rng.uniform(0.025, 0.05)
    b = _bound(label, r)
    lo, hi = np.array([b, b]), np.array([CANVAS_W - b, CANVAS_H - b])
    point = rng.uniform(lo, hi)
    path = _slide_in((float(point[0]), float(point[1])), b, t_act)
    while True:
        path.hold(rng.uniform(0.0, 0.6))
        left = t_act + ACT_S - path.time
        if left < 0.4:  # it stays put until the act's objects slide out
            break
        step = np.clip(point + rng.uniform(-0.3, 0.3, 2), lo, hi)
        duration = max(0.4, float(np.hypot(*(step - point))) / rng.uniform(0.1, 0.3))
        path.move((float(step[0]), float(step[1])), min(duration, left), "smooth")
        point = step
    return _Role(label, r, WANDER_Z + layer, path)


def _finish(
    role: _Role, rng: np.random.Generator, bg_base: np.ndarray, act: int, k: int
) -> PathTrack:
    """The role's track: its look drawn, its path ended by sliding out after the act."""
    t_act = act * ACT_S
    path = role.path
    path.hold(t_act + ACT_S - path.time)
    path.move(_offscreen(path.point, _bound(role.label, role.r)), SLIDE_S)
    look = draw_look(rng, bg_base)
    built: Path = path.build()
    return PathTrack(
        track_id=(act + 2) * 8 + k + 1,  # ids > 0 from act -1 (alive at t = 0) on
        label=role.label,
        r=role.r,
        t0=t_act - SLIDE_S,
        t1=path.time,
        path=built,
        angle0=rng.uniform(0, 2 * np.pi),
        spin=rng.uniform(-role.spin, role.spin),
        z=act * ACT_Z + role.z,
        color=look.color,
        shade_dir=look.shade_dir,
        shade_amount=look.shade_amount,
        stripe_period=look.stripe_period,
        stripe_angle=look.stripe_angle,
    )


def make_act(seed: int, act: int, bg_base: np.ndarray) -> Act:
    """Act ``act`` of tracking scene ``seed`` (its objects' colours contrast ``bg_base``)."""
    rng = np.random.default_rng(seed_entropy(seed, -3, act))
    t_act = act * ACT_S
    m = _Mirror(bool(rng.uniform() < 0.5), bool(rng.uniform() < 0.5))
    occluder, hidden, hidden_span = _occlusion(rng, m, t_act)
    (cross_a, cross_b), t_meet, off_span = _crossing(rng, m, t_act)
    roles = [occluder, hidden, cross_a, cross_b]
    roles += [_wanderer(rng, t_act, float(w)) for w in range(int(rng.integers(1, 4)))]
    tracks = tuple(_finish(role, rng, bg_base, act, k) for k, role in enumerate(roles))
    ids = [trk.track_id for trk in tracks]
    events = ActEvents(
        crossing=(ids[2], ids[3], float(t_meet)),
        hidden=(ids[1], float(hidden_span[0]), float(hidden_span[1])),
        offscreen=(ids[2], float(off_span[0]), float(off_span[1])),
    )
    return Act(tracks, events)


class TrackingTracks:
    """The tracking kind's tracks of one scene, looked up by time."""

    def __init__(self, seed: int, bg_base: np.ndarray) -> None:
        self.seed = seed
        self.bg_base = bg_base
        self.act = lru_cache(maxsize=16)(self._make_act)

    def _make_act(self, act: int) -> Act:
        return make_act(self.seed, act, self.bg_base)

    def tracks_at(self, t: float) -> list[PathTrack]:
        """Tracks alive at time ``t`` (oldest first): those of one or two acts."""
        first = math.floor((t - SLIDE_S) / ACT_S)
        last = math.floor((t + SLIDE_S) / ACT_S)
        alive = [
            trk
            for e in range(first, last + 1)
            for trk in self.act(e).tracks
            if trk.t0 <= t < trk.t1
        ]
        alive.sort(key=lambda trk: (trk.t0, trk.track_id))
        return alive
