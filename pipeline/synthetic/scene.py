"""Procedural video scenes with exact ground truth (instance masks, class maps, track ids).

A scene is a pure function of ``(seed, time)``: frame ``i`` is rendered at ``t = i / fps``
without rendering earlier frames (random access). Everything is defined on a resolution
independent *canvas* of ``CANVAS_W x CANVAS_H = 4/3 x 1`` units which is mapped onto the
requested pixel size (stretched when the aspect ratio is not 4:3), so a 640x480 and a
1280x720 render of the same seed and frame show the same scene.

Objects (tracks) are born in 2-second *epochs*: epoch ``e`` draws its tracks from a random
generator seeded with ``(seed, e)``, so the tracks alive at any time are found by looking at
the few epochs that can still be alive. Each track moves in a straight line, bouncing off
the canvas borders (closed-form reflection), rotates at a constant rate, and lives for
3 to 9 seconds. At most ``MAX_OBJECTS`` tracks are shown; there is always at least one.

Masks are exact: a pixel belongs to a shape when the shape's signed distance at the pixel
centre is negative. The image is antialiased (coverage from the distance) and composited
back to front by depth; the visible mask of an instance is its inside minus everything in
front of it, so masks are disjoint and the class map is the union of the masks by label.

The demo checkpoints (``engines/weights``) were trained on frames rendered by exactly this
code: any change to the pixels it produces (even float rounding) changes the training data,
so re-running their training command would no longer reproduce the committed weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.synthetic.shapes import BOUND_FACTOR, CLASS_NAMES, NUM_CLASSES, shape_sdf

__all__ = [
    "CANVAS_H",
    "CANVAS_W",
    "CLASS_NAMES",
    "MAX_OBJECTS",
    "NUM_CLASSES",
    "SceneFrame",
    "SyntheticScene",
    "Track",
]

CANVAS_W = 4.0 / 3.0
CANVAS_H = 1.0

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
EDGE_OVERHANG = 0.3  # the centre may go this fraction of r past the canvas border


@dataclass
class SceneFrame:
    """Ground truth of one rendered frame.

    image: H x W x 3 uint8 RGB. masks: [N, H, W] bool, visible part only (disjoint).
    labels: [N] int64 class ids (1..K). instance_ids: [N] int64 stable track ids.
    class_map: H x W uint8, 0 = background, else the label of the visible instance.
    """

    image: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    instance_ids: np.ndarray
    class_map: np.ndarray
    index: int = 0
    time: float = 0.0

    def boxes(self) -> np.ndarray:
        """[N, 4] float32 boxes (x0, y0, x1, y1), pixel-edge coordinates of each visible mask."""
        out = np.zeros((len(self.masks), 4), dtype=np.float32)
        for k, m in enumerate(self.masks):
            ys = np.flatnonzero(m.any(axis=1))
            xs = np.flatnonzero(m.any(axis=0))
            out[k] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
        return out


@dataclass(frozen=True)
class Track:
    """One object's whole life; all motion is a closed-form function of time."""

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
    span = hi - lo
    u = (s - lo) % (2.0 * span)
    return lo + (u if u <= span else 2.0 * span - u)


def _seed_entropy(seed: int, *more: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, *[int(v) + (1 << 40) for v in more]])


class SyntheticScene:
    """A deterministic, random-access synthetic video scene."""

    def __init__(self, seed: int, width: int, height: int, fps: float = 30.0):
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"size must be positive, got {width}x{height}")
        if not fps > 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be positive, got {fps!r}")
        self.seed = int(seed)
        self.width = int(width)
        self.height = int(height)
        self.fps = float(fps)
        # Pixel-centre coordinates in canvas units.
        self._xs = (np.arange(self.width, dtype=np.float64) + 0.5) * (CANVAS_W / self.width)
        self._ys = (np.arange(self.height, dtype=np.float64) + 0.5) * (CANVAS_H / self.height)
        self._pixel = math.sqrt((CANVAS_W / self.width) * (CANVAS_H / self.height))
        self._init_style()
        self._epoch_tracks = lru_cache(maxsize=64)(self._make_epoch_tracks)
        self._columns: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    # ----------------------------------------------------------------- scene-level style
    def _init_style(self) -> None:
        rng = np.random.default_rng(_seed_entropy(self.seed, -1))
        self.bg_base = rng.uniform(0.3, 0.7, 3) * 0.7 + 0.3 * rng.uniform(0.3, 0.7)
        # Smooth gradients: a few low-frequency plane waves of colour, slowly drifting.
        self.bg_waves = []
        for _ in range(3):
            theta = rng.uniform(0, 2 * np.pi)
            freq = rng.uniform(0.3, 1.5)
            self.bg_waves.append(
                (
                    freq * math.cos(theta),
                    freq * math.sin(theta),
                    rng.uniform(0, 2 * np.pi),
                    rng.uniform(-0.4, 0.4),
                    rng.uniform(-0.12, 0.12, 3),
                )
            )
        theta = rng.uniform(0, np.pi)
        freq = rng.uniform(6.0, 20.0)
        self.stripes = (
            freq * math.cos(theta),
            freq * math.sin(theta),
            rng.uniform(0, 2 * np.pi),
            rng.uniform(-1.0, 1.0),
            rng.uniform(0.02, 0.07) * rng.uniform(0.5, 1.0, 3),
        )
        self.noise_sigma = rng.uniform(0.01, 0.035)
        self.light_amp = rng.uniform(0.08, 0.25)
        self.light_period = rng.uniform(3.0, 10.0)
        self.light_phase = rng.uniform(0, 2 * np.pi)
        self.tint_amp = rng.uniform(0.0, 0.06, 3)
        self.tint_period = rng.uniform(4.0, 12.0)
        self.tint_phase = rng.uniform(0, 2 * np.pi, 3)

    # ------------------------------------------------------------------------- tracks
    def _make_epoch_tracks(self, epoch: int) -> tuple[Track, ...]:
        rng = np.random.default_rng(_seed_entropy(self.seed, epoch))
        n = int(rng.integers(1, 4))
        tracks = []
        for k in range(n):
            start = rng.uniform(0.0, EPOCH_S)
            t0 = epoch * EPOCH_S + (0.0 if k == 0 else start)
            t1 = t0 + rng.uniform(MIN_DURATION_S, MAX_DURATION_S)
            label = int(rng.integers(1, NUM_CLASSES))
            d = MIN_DIAMETER + (MAX_DIAMETER - MIN_DIAMETER) * rng.uniform() ** 1.5
            r = 0.5 * d
            x0, y0 = rng.uniform(0.0, CANVAS_W), rng.uniform(0.0, CANVAS_H)
            heading = rng.uniform(0, 2 * np.pi)
            speed = rng.uniform(MIN_SPEED, MAX_SPEED)
            angle0 = rng.uniform(0, 2 * np.pi)
            spin = rng.uniform(-MAX_SPIN, MAX_SPIN)
            # Depth: mostly smaller objects in front (so small ones are rarely buried).
            z = 0.3 * rng.uniform() - d
            color = rng.uniform(0.03, 0.97, 3)
            # Keep some contrast to the scene's mean background colour.
            diff = color - self.bg_base
            norm = float(np.linalg.norm(diff))
            if norm < 0.35:
                direction = diff / norm if norm > 1e-6 else np.array([1.0, 1.0, 1.0]) / 3**0.5
                color = np.clip(self.bg_base + direction * 0.35, 0.0, 1.0)
                if np.linalg.norm(color - self.bg_base) < 0.3:  # clipped: go the other way
                    color = np.clip(self.bg_base - direction * 0.35, 0.0, 1.0)
            shade_dir = rng.uniform(0, 2 * np.pi)
            shade_amount = rng.uniform(0.0, 0.35)
            striped = rng.uniform() < 0.3
            stripe_period = rng.uniform(0.35, 0.8) if striped else 0.0
            stripe_angle = rng.uniform(0, np.pi)
            tracks.append(
                Track(
                    track_id=(epoch + 8) * 4 + k + 1,
                    label=label,
                    r=r,
                    t0=t0,
                    t1=t1,
                    x0=x0,
                    y0=y0,
                    vx=speed * math.cos(heading),
                    vy=speed * math.sin(heading),
                    angle0=angle0,
                    spin=spin,
                    z=z,
                    color=tuple(float(c) for c in color),
                    shade_dir=shade_dir,
                    shade_amount=shade_amount,
                    stripe_period=stripe_period,
                    stripe_angle=stripe_angle,
                )
            )
        return tuple(tracks)

    def tracks_at(self, t: float) -> list[Track]:
        """Tracks shown at time ``t`` (oldest first, at most ``MAX_OBJECTS``)."""
        first = math.floor((t - MAX_DURATION_S) / EPOCH_S)
        last = math.floor(t / EPOCH_S)
        alive = [
            trk
            for e in range(first, last + 1)
            for trk in self._epoch_tracks(e)
            if trk.t0 <= t < trk.t1
        ]
        alive.sort(key=lambda trk: (trk.t0, trk.track_id))
        return alive[:MAX_OBJECTS]

    # ------------------------------------------------------------------------ render
    def _column_terms(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per wave (the last one is the stripes): sin and cos of its x phase, and its colour
        amplitude as float32. They do not depend on time: computed once per scene."""
        if self._columns is None:
            two_pi = 2.0 * np.pi
            self._columns = []
            for fx, _fy, _phase, _drift, amp in (*self.bg_waves, self.stripes):
                ax = two_pi * fx * self._xs
                self._columns.append((np.sin(ax), np.cos(ax), amp.astype(np.float32)))
        return self._columns

    def _background(self, t: float) -> np.ndarray:
        # sin(a x + b y + c) = sin(a x) cos(b y + c) + cos(a x) sin(b y + c): separable. The
        # arithmetic (float64 outer products, cast, float32 colour sums in this order) is
        # what the demo models were trained on: only allocations are saved here, not steps.
        h, w = self.height, self.width
        # channel-planar [3, H, W] while rendering: every per-channel step then runs over
        # contiguous rows (an [H, W, 3] broadcast of a [3] colour was ten times slower);
        # the steps are elementwise, so the layout does not change a single bit
        img = np.empty((3, h, w), dtype=np.float32)
        img[:] = self.bg_base.astype(np.float32)[:, None, None]
        two_pi = 2.0 * np.pi
        wave = np.empty((h, w), dtype=np.float64)
        other = np.empty((h, w), dtype=np.float64)
        wave32 = np.empty((h, w), dtype=np.float32)
        coloured = np.empty((3, h, w), dtype=np.float32)
        columns = self._column_terms()
        for k, (_fx, fy, phase, drift, _amp) in enumerate((*self.bg_waves, self.stripes)):
            sin_ax, cos_ax, amp32 = columns[k]
            by = two_pi * fy * self._ys + phase + drift * t
            np.multiply.outer(np.cos(by), sin_ax, out=wave)
            np.multiply.outer(np.sin(by), cos_ax, out=other)
            wave += other
            if k == len(self.bg_waves):  # the stripes: a squashed wave
                wave *= 2.5
                np.tanh(wave, out=wave)
            wave32[...] = wave
            np.multiply(amp32[:, None, None], wave32[None], out=coloured)
            img += coloured
        return img

    def _object_region(self, trk: Track, cx: float, cy: float):
        bound = trk.r * BOUND_FACTOR[trk.label]
        sx = self.width / CANVAS_W
        sy = self.height / CANVAS_H
        x0 = max(0, math.floor((cx - bound) * sx - 1.0))
        x1 = min(self.width, math.ceil((cx + bound) * sx + 1.0))
        y0 = max(0, math.floor((cy - bound) * sy - 1.0))
        y1 = min(self.height, math.ceil((cy + bound) * sy + 1.0))
        if x1 <= x0 or y1 <= y0:
            return None
        return x0, x1, y0, y1

    def frame(self, index: int) -> SceneFrame:
        """Render frame ``index`` (time ``index / fps``) with its ground truth."""
        return self._render(index, truth=True)

    def image(self, index: int) -> np.ndarray:
        """Only the H x W x 3 uint8 picture of frame ``index`` (what a video source needs;
        the same pixels as ``frame(index).image``, without building the masks)."""
        return self._render(index, truth=False).image

    def _render(self, index: int, truth: bool) -> SceneFrame:
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        t = index / self.fps
        tracks = self.tracks_at(t)
        img = self._background(t)

        # Evaluate every object's signed distance on its pixel region.
        drawn = []  # (trk, region, inside, alpha, local x, local y)
        for trk in tracks:
            cx, cy, ang = trk.pose(t)
            region = self._object_region(trk, cx, cy)
            if region is None:
                continue
            x0, x1, y0, y1 = region
            dx = self._xs[None, x0:x1] - cx
            dy = self._ys[y0:y1, None] - cy
            ca, sa = math.cos(ang), math.sin(ang)
            lx = ca * dx + sa * dy
            ly = -sa * dx + ca * dy
            sdf = shape_sdf(trk.label, lx, ly, trk.r)
            inside = sdf < 0.0
            alpha = np.clip(0.5 - sdf / self._pixel, 0.0, 1.0).astype(np.float32)
            if not alpha.any():
                continue
            drawn.append((trk, region, inside, alpha, lx, ly))

        # Composite back to front (ascending depth).
        for trk, (x0, x1, y0, y1), _inside, alpha, lx, ly in sorted(drawn, key=lambda d: d[0].z):
            gain = (
                1.0
                + trk.shade_amount
                * (lx * math.cos(trk.shade_dir) + ly * math.sin(trk.shade_dir))
                / trk.r
            )
            if trk.stripe_period > 0.0:
                u = lx * math.cos(trk.stripe_angle) + ly * math.sin(trk.stripe_angle)
                gain = gain * (
                    1.0
                    - 0.25
                    * (
                        0.5
                        + 0.5 * np.tanh(3.0 * np.sin(u * (2 * np.pi / (trk.stripe_period * trk.r))))
                    )
                )
            color = np.clip(np.asarray(trk.color)[:, None, None] * gain[None], 0.0, 1.0)
            a = alpha[None]
            patch = img[:, y0:y1, x0:x1]
            patch *= 1.0 - a
            patch += a * color.astype(np.float32)

        # Visible masks, front to back.
        h, w = self.height, self.width
        taken = np.zeros((h, w), dtype=bool)
        class_map = np.zeros((h, w), dtype=np.uint8)
        visible = {}
        for trk, (x0, x1, y0, y1), inside, _alpha, _lx, _ly in sorted(drawn, key=lambda d: -d[0].z) if truth else ():
            sub = taken[y0:y1, x0:x1]
            vis = inside & ~sub
            if not vis.any():
                continue
            sub |= vis
            class_map[y0:y1, x0:x1][vis] = trk.label
            full = np.zeros((h, w), dtype=bool)
            full[y0:y1, x0:x1] = vis
            visible[trk.track_id] = (trk.label, full)

        # Global lighting changes, then sensor noise.
        light = 1.0 + self.light_amp * math.sin(
            2 * np.pi * t / self.light_period + self.light_phase
        )
        tint = 1.0 + self.tint_amp * np.sin(2 * np.pi * t / self.tint_period + self.tint_phase)
        img *= (light * tint).astype(np.float32)[:, None, None]
        rng = np.random.default_rng(_seed_entropy(self.seed, -2, index))
        noise = rng.standard_normal((h, w, 3), dtype=np.float32)
        noise *= np.float32(self.noise_sigma)
        img += noise.transpose(2, 0, 1)
        np.clip(img, 0.0, 1.0, out=img)
        img *= 255.0
        img += 0.5
        image = np.empty((h, w, 3), dtype=np.uint8)
        np.copyto(image, img.transpose(1, 2, 0), casting="unsafe")  # truncation, as astype

        ids = sorted(visible)
        if ids:
            masks = np.stack([visible[i][1] for i in ids])
        else:
            masks = np.zeros((0, h, w), dtype=bool)
        return SceneFrame(
            image=image,
            masks=masks,
            labels=np.array([visible[i][0] for i in ids], dtype=np.int64),
            instance_ids=np.array(ids, dtype=np.int64),
            class_map=class_map,
            index=index,
            time=t,
        )
