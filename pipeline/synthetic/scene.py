"""Procedural video scenes with exact ground truth (instance masks, class maps, track ids).

A scene is a pure function of ``(seed, kind, time)``: frame ``i`` is rendered at
``t = i / fps`` without rendering earlier frames (random access). Everything is defined on a
resolution independent *canvas* of ``CANVAS_W x CANVAS_H = 4/3 x 1`` units which is mapped
onto the requested pixel size (stretched when the aspect ratio is not 4:3), so a 640x480 and
a 1280x720 render of the same seed and frame show the same scene.

Scene kinds (``KINDS``) differ in how objects move and (``panoptic``) in the background;
lighting, noise, shapes and the ground truth rules of objects are shared:

* ``default``: objects bounce around and live a few seconds (``pipeline.synthetic.bouncing``).
  The demo models are trained on it.
* ``tracking``: scripted crossings, occlusions behind other objects, exits and returns across
  the frame edges, and varying speed, for multi-object tracking
  (``pipeline.synthetic.tracking``).
* ``panoptic``: objects bounce as in ``default`` (in a random stream of their own, so not
  the default scene's objects) in front of a background of three to five amorphous *stuff*
  classes (sky, wall, grass, road, water) under a panning camera
  (``pipeline.synthetic.stuff``); the class map labels every pixel, stuff included, and
  ``pipeline.synthetic.panoptic`` gives the COCO panoptic form (segment-id map and
  ``segments_info``). The other kinds' background is no class (0).

Masks are exact: a pixel belongs to a shape when the shape's signed distance at the pixel
centre is negative. The image is antialiased (coverage from the distance) and composited
back to front by depth; the visible mask of an instance is its inside minus everything in
front of it, so masks are disjoint, an instance entirely hidden or outside the frame has no
annotation in that frame, and the class map is the union of the masks by label.

The demo checkpoints (``engines/weights``) were trained on frames rendered by exactly this
code: any change to the pixels of the default kind (even float rounding) changes the
training data, so re-running their training command would no longer reproduce the
committed weights (``tests/test_synthetic.py`` holds digests of such frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.synthetic.bouncing import MAX_OBJECTS, BouncingTracks
from pipeline.synthetic.motion import CANVAS_H, CANVAS_W, PathTrack, Track
from pipeline.synthetic.render import (
    Drawn,
    Grid,
    background,
    column_terms,
    composite,
    evaluate_objects,
    finish_image,
    visible_masks,
)
from pipeline.synthetic.shapes import CLASS_NAMES, NUM_CLASSES
from pipeline.synthetic.stuff import StuffLayout, stuff_labels, stuff_picture
from pipeline.synthetic.style import SceneStyle
from pipeline.synthetic.tracking import TrackingTracks

__all__ = [
    "CANVAS_H",
    "CANVAS_W",
    "CLASS_NAMES",
    "KINDS",
    "MAX_OBJECTS",
    "NUM_CLASSES",
    "PathTrack",
    "SceneFrame",
    "SyntheticScene",
    "Track",
]

KINDS: tuple[str, ...] = ("default", "tracking", "panoptic")
PANOPTIC_STREAM = (-4,)  # the panoptic kind's objects: their own random stream


@dataclass
class SceneFrame:
    """Ground truth of one rendered frame.

    image: H x W x 3 uint8 RGB (None from ``SyntheticScene.truth``). masks: [N, H, W] bool,
    visible part only (disjoint). labels: [N] int64 class ids (1..K). instance_ids: [N]
    int64 stable track ids. class_map: H x W uint8, the label of the visible instance, else
    (``panoptic`` kind) the stuff class id there (``pipeline.synthetic.stuff.STUFF_IDS``),
    else 0 = background. The instances are the things only.
    """

    image: np.ndarray | None
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


class SyntheticScene:
    """A deterministic, random-access synthetic video scene.

    ``kind`` picks how objects move (``KINDS``; ``default`` is the demo models' training
    scene). The same ``(seed, kind)`` gives the same scene at every size and frame rate.
    """

    def __init__(
        self, seed: int, width: int, height: int, fps: float = 30.0, kind: str = "default"
    ) -> None:
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"size must be positive, got {width}x{height}")
        if not fps > 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be positive, got {fps!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.seed = int(seed)
        self.width = int(width)
        self.height = int(height)
        self.fps = float(fps)
        self.kind = kind
        # Pixel-centre coordinates in canvas units.
        self._grid = Grid(
            xs=(np.arange(self.width, dtype=np.float64) + 0.5) * (CANVAS_W / self.width),
            ys=(np.arange(self.height, dtype=np.float64) + 0.5) * (CANVAS_H / self.height),
            pixel=math.sqrt((CANVAS_W / self.width) * (CANVAS_H / self.height)),
            sx=self.width / CANVAS_W,
            sy=self.height / CANVAS_H,
        )
        self.style = SceneStyle.from_seed(self.seed)
        # the background's classes (panoptic kind only; the others have no stuff)
        self.stuff = StuffLayout.from_seed(self.seed) if kind == "panoptic" else None
        self.motion: BouncingTracks | TrackingTracks
        if kind == "tracking":
            self.motion = TrackingTracks(self.seed, self.style.bg_base)
        elif self.stuff is not None:  # objects' colours contrast with the stuff's mean colour
            self.motion = BouncingTracks(self.seed, self.stuff.base.mean(axis=0), PANOPTIC_STREAM)
        else:
            self.motion = BouncingTracks(self.seed, self.style.bg_base)
        self._columns: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def tracks_at(self, t: float) -> list[Track] | list[PathTrack]:
        """Tracks alive at time ``t`` (oldest first; shown unless hidden or off the frame)."""
        return self.motion.tracks_at(t)

    def frame(self, index: int) -> SceneFrame:
        """Render frame ``index`` (time ``index / fps``) with its ground truth."""
        return self._render(index, image=True, truth=True)

    def image(self, index: int) -> np.ndarray:
        """Only the H x W x 3 uint8 picture of frame ``index`` (what a video source needs;
        the same pixels as ``frame(index).image``, without building the masks)."""
        picture = self._render(index, image=True, truth=False).image
        assert picture is not None
        return picture

    def truth(self, index: int) -> SceneFrame:
        """Only the ground truth of frame ``index`` (``image`` is None): the same masks,
        labels, ids and class map as ``frame(index)``, several times cheaper."""
        return self._render(index, image=False, truth=True)

    def _picture(
        self, drawn: list[Drawn], index: int, t: float, stuff: np.ndarray | None
    ) -> np.ndarray:
        """The uint8 image: background, objects back to front, lighting, noise."""
        if self.stuff is not None and stuff is not None:
            img = stuff_picture(self.stuff, stuff, self._grid.xs, self._grid.ys, t)
        else:
            if self._columns is None:  # the background's x terms do not depend on time
                self._columns = column_terms(self.style, self._grid.xs)
            img = background(self.style, self._columns, self._grid.ys, self.width, t)
        composite(img, drawn)
        return finish_image(img, self.style, self.seed, index, t)

    def _render(self, index: int, image: bool, truth: bool) -> SceneFrame:
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        t = index / self.fps
        h, w = self.height, self.width
        drawn = evaluate_objects(self.tracks_at(t), t, self._grid)
        stuff = None
        if self.stuff is not None:  # one layout for the picture and the class map
            stuff = stuff_labels(self.stuff, self._grid.xs, self._grid.ys, t)
        picture = self._picture(drawn, index, t, stuff) if image else None
        if truth:
            class_map, masks, labels, ids = visible_masks(drawn, h, w)
            if self.stuff is not None and stuff is not None:  # stuff wherever no thing is
                class_map = np.where(class_map == 0, self.stuff.class_ids[stuff], class_map)
        else:  # a picture only: no instances
            class_map = np.zeros((h, w), dtype=np.uint8)
            masks = np.zeros((0, h, w), dtype=bool)
            labels, ids = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return SceneFrame(
            image=picture,
            masks=masks,
            labels=labels,
            instance_ids=ids,
            class_map=class_map,
            index=index,
            time=t,
        )
