"""``synthetic://`` source: procedurally rendered scenes with exact ground truth.

URI: ``synthetic://?seed=0&size=640x480&fps=30&frames=120&realtime=0`` (every key optional):

* ``seed``: scene seed, integer >= 0 (default 0). Seeds 1000..1999 are the demo models'
  training scenes; use another seed (7 is the standard held-out one) to measure accuracy.
* ``kind``: ``default`` (bouncing objects: the demo models' training scenes),
  ``tracking`` (for multi-object tracking: in every 6 s act objects cross, hide behind
  others for up to ~1 s, leave the frame and come back, at varying speed, keeping their
  track ids; see ``pipeline.synthetic.tracking``), e.g. ``synthetic://?seed=5&kind=tracking``,
  or ``panoptic`` (bouncing objects in front of three to five amorphous stuff classes, sky,
  wall, grass, road and water, class ids 7..11, under a panning camera; the ground truth's
  class map labels the stuff too, see ``pipeline.synthetic.stuff`` and
  ``pipeline.synthetic.panoptic``), e.g. ``synthetic://?seed=5&kind=panoptic``.
* ``size``: ``WIDTHxHEIGHT`` (default 640x480).
* ``fps``: frame rate, e.g. ``30``, ``29.97`` or ``30000/1001`` (default 30). It sets the
  scene time of frame i (``i / fps``) and the timestamps (``pts = i``, ``time_base = 1/fps``).
* ``frames``: number of frames, ``0`` = endless (default 120).
* ``realtime``: ``1`` paces frames at ``fps`` by the wall clock, like a camera (default 0:
  as fast as they render).
* ``live``: ``1`` makes the pipeline treat the source as a live feed (latest frame wins,
  drops allowed); defaults to the value of ``realtime``.

The same keys can be given as keyword options, which override the query. Rendering is
deterministic and random access: ``ground_truth(i)`` returns frame i's image, instance masks,
labels, track ids and class map (``pipeline.synthetic.SceneFrame``) without iterating.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from pipeline.sources.base import Frame, Source, SourceError, SourceInfo
from pipeline.synthetic import CLASS_NAMES, KINDS, SceneFrame, SyntheticScene

__all__ = ["SyntheticSource", "parse_synthetic_uri"]

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "kind": "default",
    "size": (640, 480),
    "fps": Fraction(30),
    "frames": 120,
    "realtime": False,
    "live": None,
}
MAX_SIDE = 8192


def _parse_int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool):
        raise SourceError(f"synthetic source: {key} must be an integer, got {value!r}")
    try:
        out = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise SourceError(f"synthetic source: {key} must be an integer, got {value!r}") from None
    if out < minimum:
        raise SourceError(f"synthetic source: {key} must be >= {minimum}, got {out}")
    return out


def _parse_size(value: Any) -> tuple[int, int]:
    if isinstance(value, tuple | list) and len(value) == 2:
        w, h = value
    else:
        text = str(value).strip().lower()
        parts = text.split("x")
        if len(parts) != 2:
            raise SourceError(
                f"synthetic source: size must be WIDTHxHEIGHT (e.g. 640x480), got {value!r}"
            )
        w, h = parts
    try:
        w, h = int(w), int(h)
    except (TypeError, ValueError):
        raise SourceError(
            f"synthetic source: size must be WIDTHxHEIGHT (e.g. 640x480), got {value!r}"
        ) from None
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        raise SourceError(
            f"synthetic source: size must be between 1x1 and {MAX_SIDE}x{MAX_SIDE}, got {w}x{h}"
        )
    return w, h


def _parse_fps(value: Any) -> Fraction:
    try:
        fps = Fraction(repr(value)) if isinstance(value, float) else Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        raise SourceError(
            f"synthetic source: fps must be a positive number, got {value!r}"
        ) from None
    if fps <= 0 or fps > 1000:
        raise SourceError(f"synthetic source: fps must be in (0, 1000], got {value!r}")
    return fps.limit_denominator(1_000_000)


def _parse_kind(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in KINDS:
        raise SourceError(
            f"synthetic source: kind must be one of {', '.join(KINDS)}, got {value!r}"
        )
    return text


def _parse_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SourceError(f"synthetic source: {key} must be 0 or 1, got {value!r}")


def parse_synthetic_uri(uri: str, **options: Any) -> dict[str, Any]:
    """Parse a ``synthetic://?...`` URI plus keyword options into validated settings."""
    parts = urlsplit(str(uri))
    if parts.scheme.lower() != "synthetic":
        raise SourceError(f"not a synthetic:// URI: {uri!r}")
    if parts.netloc or parts.path.strip("/"):
        raise SourceError(
            f"synthetic source: settings go in the query, e.g. synthetic://?seed=0&size=640x480 (got {uri!r})"
        )
    raw: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in raw:
            raise SourceError(f"synthetic source: key {key!r} given twice in {uri!r}")
        raw[key] = value
    raw.update(options)
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise SourceError(
            f"synthetic source: unknown key {unknown[0]!r} (known: {', '.join(DEFAULTS)})"
        )
    out = dict(DEFAULTS)
    for key, value in raw.items():
        if key == "seed":
            out["seed"] = _parse_int("seed", value, 0)
        elif key == "size":
            out["size"] = _parse_size(value)
        elif key == "fps":
            out["fps"] = _parse_fps(value)
        elif key == "frames":
            out["frames"] = _parse_int("frames", value, 0)
        elif key == "kind":
            out["kind"] = _parse_kind(value)
        else:  # realtime, live
            out[key] = _parse_bool(key, value)
    if out["live"] is None:
        out["live"] = out["realtime"]
    return out


class RenderedOnDemand(Frame):
    """A frame of a synthetic scene whose pixels are rendered when first looked at.

    A live feed delivers every frame but the pipeline takes only the newest (latest-wins
    drops the rest). A camera pays nothing for the frames nobody takes; rendering them all
    here cost more CPU than the model on small machines. The scene is random access, so the
    frame's picture is the same whenever it is rendered.
    """

    def __init__(self, scene: SyntheticScene, index: int, time_base: Fraction, capture_ns: int) -> None:
        # not Frame.__init__: ``image`` is a property here
        self.scene = scene
        self.index = index
        self.pts = index
        self.time_base = time_base
        self.capture_ns = capture_ns
        self._image: np.ndarray | None = None

    @property
    def image(self) -> np.ndarray:  # type: ignore[override]
        if self._image is None:
            self._image = self.scene.image(self.index)
        return self._image


class SyntheticSource(Source):
    """Frames of a ``SyntheticScene`` (see the module docstring for the URI)."""

    def __init__(self, uri: str = "synthetic://", **options: Any) -> None:
        settings = parse_synthetic_uri(uri, **options)
        self.uri = str(uri)
        self.seed: int = settings["seed"]
        self.kind: str = settings["kind"]
        self.width, self.height = settings["size"]
        self.fps: Fraction = settings["fps"]
        self.frame_count: int = settings["frames"]
        self.realtime: bool = settings["realtime"]
        self.live: bool = settings["live"]
        self.scene = SyntheticScene(self.seed, self.width, self.height, float(self.fps), kind=self.kind)
        # live (or wrapped by PacedSource): frames are rendered only when taken
        self.render_on_demand: bool = self.live
        self._closed = False

    def info(self) -> SourceInfo:
        return SourceInfo(
            width=self.width,
            height=self.height,
            fps=self.fps,
            frame_count=self.frame_count or None,
            time_base=1 / self.fps,
            live=self.live,
            extra={
                "kind": "synthetic",
                "seed": self.seed,
                "scene_kind": self.kind,
                "realtime": self.realtime,
                "class_names": list(CLASS_NAMES),
            },
        )

    def ground_truth(self, index: int) -> SceneFrame:
        """Frame ``index`` with its exact ground truth (random access)."""
        return self.scene.frame(int(index))

    def frames(self) -> Iterator[Frame]:
        time_base = 1 / self.fps
        period = float(time_base)
        start = time.monotonic()
        index = 0
        while not self._closed and (self.frame_count == 0 or index < self.frame_count):
            if self.realtime:
                delay = start + index * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if self.render_on_demand:
                yield RenderedOnDemand(self.scene, index, time_base, time.time_ns())
            else:
                yield Frame(
                    image=self.scene.image(index),
                    index=index,
                    pts=index,
                    time_base=time_base,
                    capture_ns=time.time_ns(),
                )
            index += 1

    def close(self) -> None:
        self._closed = True
