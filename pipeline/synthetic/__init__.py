"""Synthetic video scenes with exact ground truth (see ``scene``); CLI in ``__main__``.

The ``panoptic`` kind's stuff classes (``stuff``) follow the shapes: ``PANOPTIC_CLASS_NAMES``
is ``CLASS_NAMES + STUFF_NAMES``; its COCO panoptic form is in ``panoptic``.
"""

from pipeline.synthetic.scene import (
    CANVAS_H,
    CANVAS_W,
    CLASS_NAMES,
    KINDS,
    MAX_OBJECTS,
    NUM_CLASSES,
    PathTrack,
    SceneFrame,
    SyntheticScene,
    Track,
)
from pipeline.synthetic.stuff import FIRST_STUFF_ID, PANOPTIC_CLASS_NAMES, STUFF_IDS, STUFF_NAMES

# Seed ranges (documented in engines/weights/*.md): the demo models are trained on scene
# seeds TRAIN_SEEDS only; every other seed is held out (EVAL_SEED is the standard one).
TRAIN_SEEDS = range(1000, 2000)
EVAL_SEED = 7

__all__ = [
    "CANVAS_H",
    "CANVAS_W",
    "CLASS_NAMES",
    "EVAL_SEED",
    "FIRST_STUFF_ID",
    "KINDS",
    "MAX_OBJECTS",
    "NUM_CLASSES",
    "PANOPTIC_CLASS_NAMES",
    "PathTrack",
    "STUFF_IDS",
    "STUFF_NAMES",
    "SceneFrame",
    "SyntheticScene",
    "TRAIN_SEEDS",
    "Track",
]
