"""The demo models' classes: the shapes of the synthetic scenes, index = class id.

Defined here, with no imports, because both layers need the tuple: the registry names the
demo models' outputs with it and ``pipeline.synthetic`` renders (and labels) exactly these
shapes; ``engines`` may not import ``pipeline``, and the scene renderer should not have to
import torchvision (``engines.models.demo``) to know its labels.
"""

# Class ids 1..K, index 0 is background. Classes differ by SHAPE only. The order is part of
# the demo checkpoints (their predictor rows) and of the scene renderer (its shape ids).
DEMO_CLASS_NAMES: tuple[str, ...] = (
    "background",
    "circle",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
)

# The panoptic scenes' amorphous background ("stuff") classes, appended after the shapes:
# class id ``len(DEMO_CLASS_NAMES) + k`` is ``DEMO_STUFF_NAMES[k]``. The semantic demo models
# trained on those scenes (U-Net, FCN-32s/16s/8s) label every pixel with one of
# ``DEMO_PANOPTIC_CLASS_NAMES``; background 0 is then the void of the panoptic scenes (none).
DEMO_STUFF_NAMES: tuple[str, ...] = ("sky", "wall", "grass", "road", "water")
DEMO_PANOPTIC_CLASS_NAMES: tuple[str, ...] = DEMO_CLASS_NAMES + DEMO_STUFF_NAMES
