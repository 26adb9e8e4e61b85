"""COCO panoptic ground truth of synthetic frames: segment-id maps, ``segments_info``, PNGs.

Every pixel of a frame belongs to at most one *segment*: a visible thing (one per instance)
or a stuff class (one segment per class present, as in COCO panoptic); pixels of neither
(the background of the non-panoptic kinds) are VOID, id 0. Segment ids:

* a stuff segment's id is its class id (``pipeline.synthetic.stuff.STUFF_IDS``, < 256);
* a thing's id is ``THING_ID_BASE + track_id``: ids of things and stuff never collide, and a
  thing keeps its id through the clip (as in video panoptic segmentation).

On disk (``python -m pipeline.synthetic --kind panoptic``) the map is an RGB PNG with
``id = R + 256 * G + 256**2 * B`` (COCO's panopticapi ``rgb2id``), ``panoptic/<frame:06d>.png``,
described by ``panoptic.json``: ``images`` (id = frame index), ``annotations`` (one per frame:
``image_id``, ``file_name`` relative to ``panoptic/``, ``segments_info``) and ``categories``
(with ``isthing``). ``pipeline.evaluation.panoptic`` reads it back and scores PQ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.sinks.panoptic_png import id_map_to_rgb, write_id_png  # the one writer of id PNGs
from pipeline.synthetic.scene import SceneFrame
from pipeline.synthetic.shapes import NUM_CLASSES
from pipeline.synthetic.stuff import FIRST_STUFF_ID, PANOPTIC_CLASS_NAMES

__all__ = [
    "THING_ID_BASE",
    "PanopticWriter",
    "frame_panoptic",
    "id_map_to_rgb",
    "panoptic_categories",
    "write_id_png",
]

THING_ID_BASE = 256  # above every class id: stuff ids (class ids) stay below it


def panoptic_categories() -> list[dict[str, Any]]:
    """COCO panoptic categories: the shapes (``isthing`` 1) then the stuff classes (0)."""
    return [
        {
            "id": k,
            "name": name,
            "supercategory": "shape" if k < NUM_CLASSES else "stuff",
            "isthing": int(k < NUM_CLASSES),
        }
        for k, name in enumerate(PANOPTIC_CLASS_NAMES)
        if k > 0
    ]


def _segment_index(frame: SceneFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A compact [H, W] int32 segment index (0 = void, stuff first, then the things in the
    order of ``frame.instance_ids``), and the stuff classes and areas of the stuff segments."""
    counts = np.bincount(frame.class_map.ravel(), minlength=256)
    # thing pixels carry shape ids (< FIRST_STUFF_ID): the counts above are stuff segments
    stuff = np.flatnonzero(counts[FIRST_STUFF_ID:]) + FIRST_STUFF_ID
    lut = np.zeros(256, dtype=np.int32)
    lut[stuff] = np.arange(1, len(stuff) + 1, dtype=np.int32)
    index = np.take(lut, frame.class_map)
    for k, mask in enumerate(frame.masks):  # disjoint masks: order does not matter
        np.copyto(index, np.int32(len(stuff) + 1 + k), where=mask)
    return index, stuff, counts[stuff]


def frame_panoptic(frame: SceneFrame) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The [H, W] uint32 segment-id map of ``frame`` and its ``segments_info`` (ascending id).

    An entry is ``{id, category_id, isthing, iscrowd: 0, area, bbox: [x, y, w, h]}`` and, for
    a thing, its ``track_id``. Works for every scene kind (without stuff the background is
    VOID, id 0); one pass over the pixels per step, no per-pixel Python.
    """
    from scipy.ndimage import find_objects  # a C pass for every segment's bounding box

    index, stuff, _ = _segment_index(frame)
    n_stuff = len(stuff)
    tracks = [int(v) for v in frame.instance_ids]
    seg_ids = np.array(
        [0, *(int(c) for c in stuff), *(THING_ID_BASE + tid for tid in tracks)], dtype=np.uint32
    )
    id_map = np.take(seg_ids, index)
    areas = np.bincount(index.ravel(), minlength=len(seg_ids))
    boxes = find_objects(index, max_label=len(seg_ids) - 1)
    info = []
    for s in range(1, len(seg_ids)):
        ys, xs = boxes[s - 1]
        thing = s > n_stuff
        entry = {
            "id": int(seg_ids[s]),
            "category_id": int(frame.labels[s - 1 - n_stuff]) if thing else int(stuff[s - 1]),
            "isthing": int(thing),
            "iscrowd": 0,
            "area": int(areas[s]),
            "bbox": [xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start],
        }
        if thing:
            entry["track_id"] = tracks[s - 1 - n_stuff]
        info.append(entry)
    return id_map, info


class PanopticWriter:
    """Writes ``DIR/panoptic/<frame:06d>.png`` frame by frame, then ``DIR/panoptic.json``."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.folder = self.out / "panoptic"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.annotations: list[dict[str, Any]] = []

    def add(self, frame: SceneFrame, image_id: int) -> None:
        """Write frame ``image_id``'s PNG and keep its annotation."""
        id_map, info = frame_panoptic(frame)
        name = f"{int(image_id):06d}.png"
        write_id_png(self.folder / name, id_map)
        self.annotations.append(
            {"image_id": int(image_id), "file_name": name, "segments_info": info}
        )

    def finish(self, info: dict[str, Any], images: list[dict[str, Any]]) -> dict[str, Any]:
        """Write ``panoptic.json`` (COCO panoptic: info, images, annotations, categories)."""
        data = {
            "info": info,
            "images": images,
            "annotations": self.annotations,
            "categories": panoptic_categories(),
        }
        (self.out / "panoptic.json").write_text(json.dumps(data), encoding="utf-8")
        return data
