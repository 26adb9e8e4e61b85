"""Random appearance of a synthetic scene: background, lighting, noise and object looks.

Everything here is drawn from ``numpy`` generators seeded by ``seed_entropy``; the order of the
draws is part of the training data of the demo models (see ``pipeline.synthetic.scene``), so
it must not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Look", "SceneStyle", "draw_look", "seed_entropy"]

# An object's colour keeps at least this distance (RGB in [0, 1]) to the mean background.
MIN_CONTRAST = 0.35

Wave = tuple[float, float, float, float, np.ndarray]  # fx, fy, phase, drift, RGB amplitude


def seed_entropy(seed: int, *more: int) -> np.random.SeedSequence:
    """Seed sequence of stream ``more`` of scene ``seed``.

    The offset keeps negative stream numbers (epochs before t = 0, the style and noise
    streams) valid entropy words and distinct from the non-negative ones.
    """
    return np.random.SeedSequence([seed, *[int(v) + (1 << 40) for v in more]])


@dataclass(frozen=True)
class SceneStyle:
    """Scene-level look: background colour waves, stripes, lighting, tint and sensor noise."""

    bg_base: np.ndarray
    bg_waves: tuple[Wave, ...]
    stripes: Wave
    noise_sigma: float
    light_amp: float
    light_period: float
    light_phase: float
    tint_amp: np.ndarray
    tint_period: float
    tint_phase: np.ndarray

    @classmethod
    def from_seed(cls, seed: int) -> SceneStyle:
        """The style of scene ``seed`` (stream -1)."""
        rng = np.random.default_rng(seed_entropy(seed, -1))
        bg_base = rng.uniform(0.3, 0.7, 3) * 0.7 + 0.3 * rng.uniform(0.3, 0.7)
        # Smooth gradients: a few low-frequency plane waves of colour, slowly drifting.
        waves = []
        for _ in range(3):
            theta = rng.uniform(0, 2 * np.pi)
            freq = rng.uniform(0.3, 1.5)
            waves.append(
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
        stripes = (
            freq * math.cos(theta),
            freq * math.sin(theta),
            rng.uniform(0, 2 * np.pi),
            rng.uniform(-1.0, 1.0),
            rng.uniform(0.02, 0.07) * rng.uniform(0.5, 1.0, 3),
        )
        return cls(
            bg_base=bg_base,
            bg_waves=tuple(waves),
            stripes=stripes,
            noise_sigma=rng.uniform(0.01, 0.035),
            light_amp=rng.uniform(0.08, 0.25),
            light_period=rng.uniform(3.0, 10.0),
            light_phase=rng.uniform(0, 2 * np.pi),
            tint_amp=rng.uniform(0.0, 0.06, 3),
            tint_period=rng.uniform(4.0, 12.0),
            tint_phase=rng.uniform(0, 2 * np.pi, 3),
        )


@dataclass(frozen=True)
class Look:
    """An object's surface: base colour, linear shading and optional stripes."""

    color: tuple[float, float, float]
    shade_dir: float
    shade_amount: float
    stripe_period: float  # 0 = plain, else stripe period in units of r
    stripe_angle: float


def _contrasting(color: np.ndarray, bg_base: np.ndarray) -> np.ndarray:
    """``color`` pushed to at least ``MIN_CONTRAST`` from the background, so objects stay
    separable from it by colour as well as by shading."""
    diff = color - bg_base
    norm = float(np.linalg.norm(diff))
    if norm >= MIN_CONTRAST:
        return color
    direction = diff / norm if norm > 1e-6 else np.array([1.0, 1.0, 1.0]) / 3**0.5
    out = np.clip(bg_base + direction * MIN_CONTRAST, 0.0, 1.0)
    if np.linalg.norm(out - bg_base) < 0.3:  # clipped: go the other way
        out = np.clip(bg_base - direction * MIN_CONTRAST, 0.0, 1.0)
    return out


def draw_look(rng: np.random.Generator, bg_base: np.ndarray) -> Look:
    """Draw an object's look (six or seven draws from ``rng``, in this order)."""
    color = _contrasting(rng.uniform(0.03, 0.97, 3), bg_base)
    shade_dir = rng.uniform(0, 2 * np.pi)
    shade_amount = rng.uniform(0.0, 0.35)
    striped = rng.uniform() < 0.3
    stripe_period = rng.uniform(0.35, 0.8) if striped else 0.0
    stripe_angle = rng.uniform(0, np.pi)
    return Look(
        color=tuple(float(c) for c in color),
        shade_dir=shade_dir,
        shade_amount=shade_amount,
        stripe_period=stripe_period,
        stripe_angle=stripe_angle,
    )
