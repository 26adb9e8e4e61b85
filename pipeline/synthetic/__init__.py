"""Synthetic video scenes with exact ground truth (see ``scene``); CLI in ``__main__``."""

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

# Seed ranges (documented in engines/weights/*.md): the demo models are trained on scene
# seeds TRAIN_SEEDS only; every other seed is held out (EVAL_SEED is the standard one).
TRAIN_SEEDS = range(1000, 2000)
EVAL_SEED = 7

__all__ = [
    "CANVAS_H",
    "CANVAS_W",
    "CLASS_NAMES",
    "EVAL_SEED",
    "KINDS",
    "MAX_OBJECTS",
    "NUM_CLASSES",
    "PathTrack",
    "SceneFrame",
    "SyntheticScene",
    "TRAIN_SEEDS",
    "Track",
]
