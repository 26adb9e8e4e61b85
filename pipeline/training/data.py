"""Training data: batches rendered from the synthetic scenes, deterministically.

Every step renders its batch from ``pipeline.synthetic.SyntheticScene`` (of the model's scene
kind: ``default`` for the Mask R-CNN and ``fcn_demo``, ``panoptic`` — shapes in front of
stuff — for the U-Net and FCN-32s/16s/8s) with scene seeds drawn from ``TRAIN_SEEDS`` (1000..1999) and frame indices 0..3599, chosen by a random
generator seeded with ``(seed, step)``; no augmentation. Held-out evaluation uses scene seed
``EVAL_SEED`` (7), never used in training. Frames become model inputs through
``engines.transform`` (the pipeline's own transform), so training sees what inference sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from engines.transform import batch_images, normalize, resize, target_size, to_chw_float
from pipeline.synthetic import EVAL_SEED, TRAIN_SEEDS, SceneFrame, SyntheticScene

__all__ = [
    "EVAL_FRAMES",
    "EVAL_SIZE",
    "TRAIN_FRAMES",
    "Plan",
    "batch_plan",
    "held_out_frames",
    "image_tensor",
    "instance_batch",
    "model_input",
    "pad_labels",
    "parse_input",
    "parse_size",
    "parse_sizes",
    "render",
    "semantic_batch",
]

TRAIN_FRAMES = 3600  # frame indices drawn from 0..3599 (two minutes at 30 fps)
EVAL_SIZE = (640, 480)
EVAL_FRAMES = tuple(range(0, 1800, 30))  # 60 frames of the held-out scene (one minute)
IGNORE_LABEL = 255  # padded label pixels: cross-entropy ignores them

#: One batch: (scene seed, frame index, render size (w, h)) per image.
Plan = list[tuple[int, int, tuple[int, int]]]


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)`` (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"bad size {text!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"bad size {text!r}: width and height must be positive")
    return w, h


def parse_input(text: str) -> dict[str, int]:
    """``"416:832"`` -> ``{"min_size": 416, "max_size": 832}`` (model-input resize)."""
    try:
        lo, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"bad input size {text!r}: expected MIN:MAX, e.g. 320:640") from None
    if not 0 < lo <= hi:
        raise ValueError(f"bad input size {text!r}: need 0 < MIN <= MAX")
    return {"min_size": lo, "max_size": hi}


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"427x320,640x480"`` -> ``[(427, 320), (640, 480)]``."""
    return [parse_size(s) for s in text.split(",") if s.strip()]


def batch_plan(seed: int, step: int, batch_size: int, sizes: Sequence[tuple[int, int]]) -> Plan:
    """Which (scene seed, frame index, render size) make up batch ``step`` (deterministic)."""
    rng = np.random.default_rng([int(seed), int(step)])
    size = sizes[int(rng.integers(len(sizes)))]
    plan = []
    for _ in range(batch_size):
        scene_seed = int(TRAIN_SEEDS[int(rng.integers(len(TRAIN_SEEDS)))])
        plan.append((scene_seed, int(rng.integers(TRAIN_FRAMES)), size))
    return plan


_SCENES: dict[tuple[int, int, int, str], SyntheticScene] = {}


def scene_kind_of(kinds: str | Sequence[str], scene_seed: int, index: int) -> str:
    """The scene kind of one training image: ``kinds`` itself, or one of several chosen by
    ``(scene_seed + index)`` (a fixed rule that leaves the batch generator's draws as they
    are, so single-kind training reproduces its checkpoints)."""
    if isinstance(kinds, str):
        return kinds
    return kinds[(int(scene_seed) + int(index)) % len(kinds)]


def render(scene_seed: int, index: int, size: tuple[int, int], kind: str = "default") -> SceneFrame:
    """Frame ``index`` of scene ``(scene_seed, kind)`` at ``size`` (scenes are cached: tracks
    are generated once per scene, not once per frame)."""
    key = (scene_seed, size[0], size[1], kind)
    scene = _SCENES.get(key)
    if scene is None:
        if len(_SCENES) > 256:
            _SCENES.clear()
        scene = _SCENES[key] = SyntheticScene(scene_seed, size[0], size[1], kind=kind)
    return scene.frame(index)


def held_out_frames(
    seed: int = EVAL_SEED,
    size: tuple[int, int] = EVAL_SIZE,
    indices: Sequence[int] = EVAL_FRAMES,
    kind: str = "default",
) -> list[SceneFrame]:
    """Frames ``indices`` of held-out scene ``(seed, kind)`` at ``size`` (never a training seed)."""
    if seed in TRAIN_SEEDS:
        raise ValueError(
            f"seed {seed} is a training seed; held-out seeds are outside {TRAIN_SEEDS}"
        )
    scene = SyntheticScene(seed, size[0], size[1], kind=kind)
    return [scene.frame(i) for i in indices]


# ------------------------------------------------------------------------ model inputs


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> [3, H, W] float32 in [0, 1] (``engines.transform.to_chw_float``)."""
    return to_chw_float(image)


def model_input(
    image: np.ndarray,
    input_size: dict[str, int],
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """One frame -> normalised [3, h, w] model input resized per ``input_size`` (unpadded).

    ``engines.transform``'s arithmetic: normalise, then bilinear resize; a frame already at
    the model-input size is not resampled.
    """
    x = normalize(to_chw_float(image), tuple(mean), tuple(std))
    lo, hi = input_size["min_size"], input_size["max_size"]
    if target_size(x.shape[1], x.shape[2], lo, hi) != tuple(x.shape[1:]):
        x = resize(x, lo, hi)
    return x


def pad_labels(labels: list[torch.Tensor], divisible: int = 32) -> torch.Tensor:
    """Stack [h, w] label maps into [B, H, W] like ``batch_images`` pads the images (top-left,
    H and W rounded up to ``divisible``), filling with ``IGNORE_LABEL``."""
    h = int(math.ceil(max(t.shape[-2] for t in labels) / divisible) * divisible)
    w = int(math.ceil(max(t.shape[-1] for t in labels) / divisible) * divisible)
    out = labels[0].new_full((len(labels), h, w), IGNORE_LABEL)
    for k, t in enumerate(labels):
        out[k, : t.shape[-2], : t.shape[-1]] = t
    return out


def instance_batch(
    plan: Plan, kind: str | Sequence[str] = "default"
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Images in [0, 1] (a Mask R-CNN resizes and normalises them itself) and their targets."""
    images, targets = [], []
    for scene_seed, index, size in plan:
        fr = render(scene_seed, index, size, scene_kind_of(kind, scene_seed, index))
        images.append(image_tensor(fr.image))
        targets.append(
            {
                "boxes": torch.from_numpy(fr.boxes()),
                "labels": torch.from_numpy(fr.labels),
                "masks": torch.from_numpy(fr.masks.astype(np.uint8)),
            }
        )
    return images, targets


def semantic_batch(
    plan: Plan,
    input_size: dict[str, int],
    mean: Sequence[float],
    std: Sequence[float],
    kind: str | Sequence[str] = "default",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded model inputs [B, 3, H, W] and class maps [B, H, W] at model-input size."""
    xs, ys = [], []
    for scene_seed, index, size in plan:
        fr = render(scene_seed, index, size, scene_kind_of(kind, scene_seed, index))
        x = model_input(fr.image, input_size, mean, std)
        y = torch.from_numpy(fr.class_map)
        if tuple(y.shape) != tuple(x.shape[1:]):
            y = F.interpolate(y[None, None].float(), size=x.shape[1:], mode="nearest-exact")[0, 0]
        xs.append(x)
        ys.append(y.long())
    # Padding as at inference (zeros after normalisation); padded pixels are ignored.
    return batch_images(xs, 32)[0], pad_labels(ys)
