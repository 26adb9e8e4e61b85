"""Train (and evaluate) the demo models on synthetic scenes, reproducibly on the CPU.

    python -m engines.train --model maskrcnn_demo --seed 0 --out engines/weights/maskrcnn_demo.pt
    python -m engines.train --model fcn_demo --seed 0 --out engines/weights/fcn_demo.pt

Data: every step renders its batch from ``pipeline.synthetic.SyntheticScene`` with scene
seeds drawn from ``TRAIN_SEEDS`` (1000..1999) and frame indices 0..3599, chosen by a random
generator seeded with ``(--seed, step)``; no augmentation. Held-out evaluation uses scene
seed ``EVAL_SEED`` (7), never used in training. The same ``--seed`` and thread count give
the same weights (``torch.manual_seed`` for initialisation and the RoI samplers).

Training state (model, optimiser, RNG, step) is saved every ``--checkpoint-every`` steps to
``<out>.state``; ``--resume`` continues from it. The final file is the project's checkpoint
format (``engines.weights`` loads it), with the training command, seeds, time and held-out
accuracy in ``meta``.

Evaluate a checkpoint on a ground-truth directory written by ``python -m pipeline.synthetic``
(decodes the video with PyAV, like the pipeline would, and writes ``--save-results`` records):

    python -m engines.train --evaluate engines/weights/maskrcnn_demo.pt --gt DIR \
        --save-results DIR/maskrcnn_demo.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engines.models.demo import (
    FCN_DEMO_INPUT,
    FCN_DEMO_TRAIN_INPUT,
    IMAGE_MEAN,
    IMAGE_STD,
    MASKRCNN_DEMO_INPUT,
    MASKRCNN_DEMO_TRAIN_INPUT,
    build_fcn_demo,
    build_maskrcnn_demo,
)
from pipeline.synthetic import CLASS_NAMES, EVAL_SEED, TRAIN_SEEDS, SceneFrame, SyntheticScene

MODELS = ("maskrcnn_demo", "fcn_demo")
TRAIN_FRAMES = 3600  # frame indices drawn from 0..3599 (two minutes at 30 fps)
# Training render sizes. The model input is resized from them (shorter side 320), so the
# mix covers native-size renders and larger frames downscaled by the input transform, in
# 4:3 and 16:9.
DEFAULT_SIZES = {
    "maskrcnn_demo": "427x320,427x320,640x480,569x320",
    "fcn_demo": "427x320,427x320,640x480,569x320",
}
DEFAULTS = {
    "maskrcnn_demo": {"steps": 2500, "batch_size": 4, "lr": 2e-3},
    "fcn_demo": {"steps": 2500, "batch_size": 6, "lr": 3e-3},
}
EVAL_SIZE = (640, 480)
EVAL_FRAMES = tuple(range(0, 1800, 30))  # 60 frames of the held-out scene (one minute)

CHECKPOINT_FORMAT = "segstream-checkpoint"
CHECKPOINT_VERSION = 1


# ------------------------------------------------------------------------------- data


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
    return [parse_size(s) for s in text.split(",") if s.strip()]


def batch_plan(
    seed: int, step: int, batch_size: int, sizes: Sequence[tuple[int, int]]
) -> list[tuple[int, int, tuple[int, int]]]:
    """Which (scene seed, frame index, render size) make up batch ``step`` (deterministic)."""
    rng = np.random.default_rng([int(seed), int(step)])
    size = sizes[int(rng.integers(len(sizes)))]
    plan = []
    for _ in range(batch_size):
        scene_seed = int(TRAIN_SEEDS[int(rng.integers(len(TRAIN_SEEDS)))])
        plan.append((scene_seed, int(rng.integers(TRAIN_FRAMES)), size))
    return plan


_SCENES: dict[tuple[int, int, int], SyntheticScene] = {}


def render(scene_seed: int, index: int, size: tuple[int, int]) -> SceneFrame:
    key = (scene_seed, size[0], size[1])
    scene = _SCENES.get(key)
    if scene is None:
        if len(_SCENES) > 256:
            _SCENES.clear()
        scene = _SCENES[key] = SyntheticScene(scene_seed, size[0], size[1])
    return scene.frame(index)


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> [3, H, W] float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def maskrcnn_batch(plan) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images, targets = [], []
    for scene_seed, index, size in plan:
        fr = render(scene_seed, index, size)
        images.append(image_tensor(fr.image))
        targets.append(
            {
                "boxes": torch.from_numpy(fr.boxes()),
                "labels": torch.from_numpy(fr.labels),
                "masks": torch.from_numpy(fr.masks.astype(np.uint8)),
            }
        )
    return images, targets


def model_input_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Model-input (h, w) of an h x w frame (torchvision's GeneralizedRCNNTransform rule)."""
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return int(math.floor(h * scale)), int(math.floor(w * scale))


def fcn_input(image: np.ndarray, input_size: dict | None = None) -> torch.Tensor:
    """One frame -> normalised, resized [3, h, w] FCN input (unpadded).

    ``input_size`` ({"min_size", "max_size"}) defaults to the inference size FCN_DEMO_INPUT.
    """
    sizes = input_size or FCN_DEMO_INPUT
    x = image_tensor(image)
    mean = torch.tensor(IMAGE_MEAN)[:, None, None]
    std = torch.tensor(IMAGE_STD)[:, None, None]
    x = (x - mean) / std
    h, w = model_input_size(x.shape[1], x.shape[2], sizes["min_size"], sizes["max_size"])
    if (h, w) != tuple(x.shape[1:]):
        x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return x


def pad_batch(tensors: list[torch.Tensor], fill: float, divisible: int = 32) -> torch.Tensor:
    h = max(t.shape[-2] for t in tensors)
    w = max(t.shape[-1] for t in tensors)
    h = int(math.ceil(h / divisible) * divisible)
    w = int(math.ceil(w / divisible) * divisible)
    out = tensors[0].new_full((len(tensors), *tensors[0].shape[:-2], h, w), fill)
    for k, t in enumerate(tensors):
        out[k, ..., : t.shape[-2], : t.shape[-1]] = t
    return out


def fcn_batch(plan, input_size: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for scene_seed, index, size in plan:
        fr = render(scene_seed, index, size)
        x = fcn_input(fr.image, input_size)
        y = torch.from_numpy(fr.class_map)
        if tuple(y.shape) != tuple(x.shape[1:]):
            y = F.interpolate(y[None, None].float(), size=x.shape[1:], mode="nearest-exact")[0, 0]
        xs.append(x)
        ys.append(y.long())
    # Padding as at inference (zeros after normalisation); padded pixels are ignored.
    return pad_batch(xs, 0.0), pad_batch(ys, 255)


# ------------------------------------------------------------------------------ models


def build(model_name: str, num_classes: int = len(CLASS_NAMES)) -> nn.Module:
    if model_name == "maskrcnn_demo":
        return build_maskrcnn_demo(num_classes)
    if model_name == "fcn_demo":
        return build_fcn_demo(num_classes)
    raise ValueError(f"unknown model {model_name!r} (choose from {', '.join(MODELS)})")


FG_WEIGHT = 2.0  # FCN cross-entropy weight of the shape classes (background 1)


def training_loss(
    model_name: str,
    model: nn.Module,
    plan,
    input_size: dict | None = None,
    fg_weight: float = FG_WEIGHT,
) -> tuple[torch.Tensor, dict[str, float]]:
    if model_name == "maskrcnn_demo":
        images, targets = maskrcnn_batch(plan)
        losses = model(images, targets)
        total = sum(losses.values())
        return total, {k.replace("loss_", ""): float(v.detach()) for k, v in losses.items()}
    x, y = fcn_batch(plan, input_size or FCN_DEMO_TRAIN_INPUT)
    logits = model(x)["out"]
    weight = torch.full((logits.shape[1],), float(fg_weight))
    weight[0] = 1.0
    loss = F.cross_entropy(logits, y, weight=weight, ignore_index=255)
    return loss, {"ce": float(loss.detach())}


def init_from_checkpoint(model_name: str, model: nn.Module, ckpt_path: str | Path) -> str:
    """Initialise ``model`` from a checkpoint: all weights when it holds the same model
    (fine-tuning), else only the ResNet + FPN of a maskrcnn_demo checkpoint. Returns a note."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if ckpt.get("model") == model_name:
        model.load_state_dict(ckpt["state_dict"])
        return f"all weights from {ckpt_path}"
    return f"{init_backbone_from(model, ckpt_path)} backbone tensors from {ckpt_path}"


def init_backbone_from(model: nn.Module, ckpt_path: str | Path) -> int:
    """Copy the ResNet + FPN weights of a maskrcnn_demo checkpoint into ``model``.

    Works for both demo models (the FCN's ``backbone.body`` is the same BackboneWithFPN as
    the Mask R-CNN's ``backbone``). Returns the number of tensors copied.
    """
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    src = {
        k[len("backbone.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("backbone.")
    }
    state = model.state_dict()
    prefix = (
        "backbone.body." if "backbone.body.fpn.inner_blocks.0.0.weight" in state else "backbone."
    )
    copied = 0
    for k, v in src.items():
        if prefix + k in state and state[prefix + k].shape == v.shape:
            state[prefix + k] = v.clone()
            copied += 1
    model.load_state_dict(state)
    return copied


def set_input_size(model: nn.Module, input_size: dict) -> None:
    """Set a Mask R-CNN's built-in resize (no-op for the FCN, whose input is resized outside)."""
    transform = getattr(model, "transform", None)
    if transform is not None:
        transform.min_size = (int(input_size["min_size"]),)
        transform.max_size = int(input_size["max_size"])


def lr_at(step: int, steps: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 2% of ``base``."""
    if step < warmup:
        return base * (0.1 + 0.9 * step / max(1, warmup))
    progress = (step - warmup) / max(1, steps - warmup)
    return base * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
    )


def train_steps(
    model_name: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    seed: int,
    start: int,
    stop: int,
    steps: int,
    batch_size: int,
    sizes: Sequence[tuple[int, int]],
    lr: float,
    warmup: int,
    clip: float = 10.0,
    on_step=None,
    input_size: dict | None = None,
    fg_weight: float = FG_WEIGHT,
) -> None:
    """Run steps ``start .. stop-1`` of a ``steps``-step schedule.

    ``input_size`` ({"min_size", "max_size"}) overrides the model-input size (tests use tiny
    sizes); by default the demo's ``*_DEMO_TRAIN_INPUT``. A Mask R-CNN's transform is left
    at the training size: call ``set_input_size`` before inference.
    """
    if model_name == "maskrcnn_demo":
        set_input_size(model, input_size or MASKRCNN_DEMO_TRAIN_INPUT)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    for step in range(start, stop):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        plan = batch_plan(seed, step, batch_size, sizes)
        loss, parts = training_loss(model_name, model, plan, input_size, fg_weight)
        if not torch.isfinite(loss):
            raise RuntimeError(f"step {step}: loss is {float(loss)} ({parts})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if on_step is not None:
            on_step(step, float(loss.detach()), parts)


# -------------------------------------------------------------------------- inference


@torch.no_grad()
def predict(model_name: str, model: nn.Module, image: np.ndarray, score_thresh: float = 0.05):
    """Run a demo model on one HxWx3 uint8 RGB frame.

    maskrcnn_demo: list of instance dicts (class_id, score, box, mask_array) at frame size.
    fcn_demo: [H, W] uint8 class map at frame size (argmax at model-input size, then
    nearest-neighbour resize, as the pipeline does).
    """
    model.eval()
    if model_name == "maskrcnn_demo":
        out = model([image_tensor(image)])[0]
        keep = out["scores"] >= score_thresh
        masks = (out["masks"][keep, 0] >= 0.5).numpy()
        return [
            {"class_id": int(c), "score": float(s), "box": [float(v) for v in b], "mask_array": m}
            for c, s, b, m in zip(
                out["labels"][keep], out["scores"][keep], out["boxes"][keep], masks, strict=True
            )
        ]
    x = fcn_input(image)
    h, w = x.shape[1:]
    logits = model(pad_batch([x], 0.0))["out"][:, :, :h, :w]
    cmap = logits.argmax(1).to(torch.uint8)
    if (h, w) != image.shape[:2]:
        cmap = F.interpolate(cmap[None], size=image.shape[:2], mode="nearest-exact")[0]
    return cmap[0].numpy()


def prediction_record(model_name: str, model_id: str, seq: int, image: np.ndarray, pred) -> dict:
    from pipeline.evaluate import frame_record

    h, w = image.shape[:2]
    if model_name == "maskrcnn_demo":
        return frame_record(seq, w, h, CLASS_NAMES, instances=pred, model=model_id)
    return frame_record(seq, w, h, CLASS_NAMES, class_map=pred, model=model_id)


def evaluate_frames(
    model_name: str, model: nn.Module, frames: Iterable[SceneFrame], model_id: str = "demo"
) -> dict[str, Any]:
    """Held-out accuracy of ``model`` on in-memory ground-truth frames."""
    from pipeline.evaluate import evaluate_instances, evaluate_semantic
    from pipeline.synthetic.coco import coco_dataset

    frames = list(frames)
    records = [
        prediction_record(
            model_name, model_id, fr.index, fr.image, predict(model_name, model, fr.image)
        )
        for fr in frames
    ]
    if model_name == "maskrcnn_demo":
        res = evaluate_instances(coco_dataset(frames), records)
        return {
            "mask_AP": res["segm"]["AP"],
            "mask_AP50": res["segm"]["AP50"],
            "mask_AP75": res["segm"]["AP75"],
            "box_AP": res["bbox"]["AP"],
            "box_AP50": res["bbox"]["AP50"],
            "mask_AP_per_class": res["segm"]["per_class_AP"],
            "gt_instances": res["gt_instances"],
        }
    res = evaluate_semantic(
        {fr.index: fr.class_map for fr in frames}, records, class_names=CLASS_NAMES
    )
    return {
        "mean_iou": res["mean_iou"],
        "pixel_accuracy": res["pixel_accuracy"],
        "mean_accuracy": res["mean_accuracy"],
        "frequency_weighted_iou": res["frequency_weighted_iou"],
        "per_class_iou": res["per_class_iou"],
    }


def held_out_frames(seed: int = EVAL_SEED, size=EVAL_SIZE, indices=EVAL_FRAMES) -> list[SceneFrame]:
    if seed in TRAIN_SEEDS:
        raise ValueError(
            f"seed {seed} is a training seed; held-out seeds are outside {TRAIN_SEEDS}"
        )
    scene = SyntheticScene(seed, size[0], size[1])
    return [scene.frame(i) for i in indices]


# ------------------------------------------------------------------------- checkpoints


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def checkpoint_payload(model_name: str, model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": model_name,
        "class_names": list(CLASS_NAMES),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": meta,
    }


def load_checkpoint(path: str | Path) -> tuple[str, nn.Module, dict[str, Any]]:
    """Load a segstream checkpoint of a demo model -> (model name, model in eval mode, meta)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a segstream checkpoint")
    name = ckpt["model"]
    model = build(name, len(ckpt["class_names"]))
    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    )
    return name, model.eval(), ckpt.get("meta", {})


ARCHITECTURE = {
    "maskrcnn_demo": (
        "torchvision `MaskRCNN` with a small ResNet-style backbone (`engines.models.demo.TinyResNet`: "
        "3x3 stride-2 stem with 24 channels, then BasicBlock stages of 32/48/96/128 channels "
        "at strides 4/8/16/32 with 1/2/2/1 blocks, BatchNorm) + FPN (64 channels, P2-P5 and a "
        "max-pool P6); standard RPN head with anchors 16/32/64/128/256 px x 3 aspect ratios; "
        "`TwoMLPHead` box head on [R, 64, 7, 7] RoIs (representation 128) + `FastRCNNPredictor`; "
        "standard mask head (4 x 3x3 conv, 64 channels, on [K, 64, 14, 14]) + `MaskRCNNPredictor` "
        "giving [K, 7, 28, 28] mask logits."
    ),
    "fcn_demo": (
        "torchvision `FCN` (aux head off) whose backbone is the same small ResNet + FPN "
        "(`engines.models.demo.FusedFPN`) plus a context module: P3, P4, P5 concatenated at "
        "stride 8, 1x1 conv to 64 channels, two dilated 3x3 convs (dilation 2, 4), upsampled to "
        "stride 4 and concatenated with P2 (128 channels); then the standard `FCNHead` (3x3 conv "
        "to 32 channels, BN, ReLU, dropout, 1x1 conv to 7 classes); logits are upsampled "
        "bilinearly to the input size."
    ),
}


def write_model_card(ckpt_path: str | Path, notes: str = "") -> Path:
    """Write ``<ckpt>.md`` (architecture, training, held-out accuracy) from a checkpoint."""
    ckpt_path = Path(ckpt_path)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    name, meta = ckpt["model"], ckpt["meta"]
    params = sum(v.numel() for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    acc = dict(meta.get("accuracy", {}))
    inp = meta.get("input", {})
    train_inp = meta.get("train_input", inp)
    lines = [
        f"# {name}",
        "",
        f"Demo {'instance' if name == 'maskrcnn_demo' else 'semantic'} segmentation model trained "
        "on the project's synthetic scenes (`pipeline.synthetic`) only; no downloaded or "
        "pretrained weights. Classes (id = index): "
        + ", ".join(f"{i} {c}" for i, c in enumerate(ckpt["class_names"]))
        + ".",
        "",
        "## Architecture",
        "",
        ARCHITECTURE[name],
        "",
        f"- parameters: {params:,} ({params * 4 / 1e6:.2f} MB as fp32; file {ckpt_path.stat().st_size / 1e6:.2f} MB, fp32)",
        f"- input at inference: RGB in [0, 1], ImageNet mean/std normalisation, resized so the "
        f"shorter side is {inp.get('min_size')} unless the longer would exceed "
        f"{inp.get('max_size')}, padded to a multiple of 32 (`{name.upper()[:-5]}_DEMO_INPUT` "
        "in `engines/models/demo.py`)",
        f"- trained at: shorter side {train_inp.get('min_size')} (max {train_inp.get('max_size')})",
        f"- file: `{ckpt_path.name}`, SHA-256 prefix `{_file_tag(ckpt_path)}`",
        "",
        "## Training",
        "",
        "```",
        meta.get("train_command", "?"),
        "```",
        "",
        "(`--state`/`--resume`/`--keep-state` only say where the resumable training state is "
        "kept; they do not change the result.)",
        "",
        (
            f"- initialisation: `--init-from {Path(meta['init_from']).name}` (a checkpoint of the "
            "same model: all weights; of maskrcnn_demo: its ResNet + FPN), see below"
            if meta.get("init_from")
            else "- initialisation: random (torch.manual_seed(seed)), no pretrained weights"
        ),
        f"- data: {meta.get('data_seed')}; render sizes {', '.join(meta.get('sizes', []))} "
        "(resized to the model input); no augmentation",
        (
            f"- loss: pixel cross-entropy, shape classes weighted {meta['fcn_fg_weight']} "
            "(background 1)"
            if meta.get("fcn_fg_weight")
            else "- loss: the standard torchvision Mask R-CNN losses (RPN + box + mask)"
        ),
        f"- schedule: {meta.get('steps')} AdamW steps, batch {meta.get('batch_size')}, peak lr {meta.get('lr')}, "
        "linear warm-up then cosine decay, weight decay 1e-4 (not on norms/biases), grad-norm clip 10",
        f"- time: {meta.get('train_time_s', 0) / 60:.1f} min wall on a shared 2-core CPU"
        + (f" ({meta['train_cpu_s'] / 60:.0f} CPU-min)" if meta.get("train_cpu_s") else "")
        + ", "
        f"{meta.get('threads')} torch thread(s), torch {meta.get('torch')}",
        "- reproducible: the same command (same seed and thread count) gives the same weights on CPU "
        "(`tests/test_demo_models.py::test_training_is_reproducible` checks a few steps)",
        "",
        "## Held-out accuracy",
        "",
        f"Scene seed {acc.get('eval_seed')} (never used in training), {acc.get('eval_size')}, "
        f"{len(acc.get('eval_frames', []))} frames (every 30th of the first minute), rendered frames "
        "evaluated in-process by `engines.train.evaluate_frames` with `pipeline.evaluate`:",
        "",
    ]
    if name == "maskrcnn_demo":
        lines += [
            "| metric | value |",
            "|---|---|",
            *(
                f"| {k} | {acc[k]:.3f} |"
                for k in ("mask_AP", "mask_AP50", "mask_AP75", "box_AP", "box_AP50")
                if k in acc
            ),
            "",
            "Per-class mask AP: "
            + ", ".join(f"{c} {v:.3f}" for c, v in acc.get("mask_AP_per_class", {}).items()),
        ]
        low = meta.get("accuracy_at_train_input")
        if low:
            lines += [
                "",
                f"The same frames at the training size (shorter side {low['input']['min_size']}): "
                f"mask AP {low['mask_AP']:.3f}, AP50 {low['mask_AP50']:.3f}, AP75 "
                f"{low['mask_AP75']:.3f}, box AP {low['box_AP']:.3f}. The inference size is "
                f"{inp.get('min_size')} because the larger input finds more of the smallest shapes.",
            ]
    else:
        lines += [
            "| metric | value |",
            "|---|---|",
            *(
                f"| {k} | {acc[k]:.4f} |"
                for k in ("mean_iou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou")
                if k in acc
            ),
            "",
            "Per-class IoU: "
            + ", ".join(f"{c} {v:.3f}" for c, v in acc.get("per_class_iou", {}).items()),
        ]
    lines += [
        "",
        "Through an encoded video (H.264, decoded with PyAV) and the saved-results format:",
        "",
        "```",
        "python -m pipeline.synthetic --seed 7 --frames 300 --size 640x480 --out /tmp/eval7",
        f"python -m engines.train --evaluate engines/weights/{name}.pt --gt /tmp/eval7 "
        f"--save-results /tmp/eval7/{name}.jsonl",
        f"python -m pipeline.evaluate --gt /tmp/eval7 --pred /tmp/eval7/{name}.jsonl",
        "```",
    ]
    if notes:
        lines += ["", notes.rstrip()]
    out = ckpt_path.with_suffix(".md")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


# -------------------------------------------------------------------------------- CLI


def _fmt_time(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run_training(args: argparse.Namespace, argv: Sequence[str]) -> int:
    name = args.model
    d = DEFAULTS[name]
    steps = args.steps or d["steps"]
    batch_size = args.batch_size or d["batch_size"]
    lr = args.lr or d["lr"]
    warmup = args.warmup if args.warmup is not None else min(300, steps // 10)
    sizes = parse_sizes(args.size or DEFAULT_SIZES[name])
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    state_path = Path(args.state) if args.state else out.with_name(out.name + ".state")

    torch.manual_seed(args.seed)
    model = build(name)
    if args.init_from:
        note = init_from_checkpoint(name, model, args.init_from)
        print(f"[train] initialised {note}", flush=True)
    train_input = (
        parse_input(args.input)
        if args.input
        else dict(MASKRCNN_DEMO_TRAIN_INPUT if name == "maskrcnn_demo" else FCN_DEMO_TRAIN_INPUT)
    )
    optimizer = make_optimizer(model, lr, args.weight_decay)
    start, elapsed = 0, 0.0
    if args.resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start, elapsed = int(state["step"]), float(state["elapsed"])
        print(f"[train] resumed {name} from {state_path} at step {start}", flush=True)

    command = "python -m engines.train " + " ".join(shlex.quote(a) for a in argv)
    print(
        f"[train] {name}: steps={steps} batch={batch_size} lr={lr} sizes={[f'{w}x{h}' for w, h in sizes]} "
        f"seed={args.seed} threads={args.threads}",
        flush=True,
    )
    t_start = time.time() - elapsed
    cpu_start = time.process_time()
    ema: dict[str, float] = {}

    def save_state(step_done: int) -> None:
        _atomic_save(
            {
                "step": step_done,
                "elapsed": time.time() - t_start,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
            state_path,
        )

    def on_step(step: int, loss: float, parts: dict[str, float]) -> None:
        for k, v in {"loss": loss, **parts}.items():
            ema[k] = v if k not in ema else 0.95 * ema[k] + 0.05 * v
        done = step + 1
        if done % args.log_every == 0 or done == steps:
            spent = time.time() - t_start
            rate = spent / max(1, done - start) if start else spent / done
            eta = rate * (steps - done)
            parts_s = " ".join(f"{k}={v:.4f}" for k, v in ema.items())
            print(
                f"[train] step {done}/{steps} {parts_s} lr={lr_at(step, steps, lr, warmup):.2e} "
                f"{rate:.2f}s/step elapsed {_fmt_time(spent)} eta {_fmt_time(eta)}",
                flush=True,
            )
        if args.checkpoint_every and done % args.checkpoint_every == 0 and done < steps:
            save_state(done)

    train_steps(
        name,
        model,
        optimizer,
        seed=args.seed,
        start=start,
        stop=steps,
        steps=steps,
        batch_size=batch_size,
        sizes=sizes,
        lr=lr,
        warmup=warmup,
        on_step=on_step,
        input_size=train_input,
        fg_weight=args.fg_weight,
    )
    train_time = time.time() - t_start
    if name == "maskrcnn_demo":
        set_input_size(model, MASKRCNN_DEMO_INPUT)  # evaluate at the inference size
    print(f"[train] done in {_fmt_time(train_time)}", flush=True)

    accuracy: dict[str, Any] = {}
    n_eval = len(EVAL_FRAMES) if args.eval_frames is None else args.eval_frames
    if n_eval:
        t0 = time.time()
        frames = held_out_frames(args.eval_seed, EVAL_SIZE, EVAL_FRAMES[:n_eval])
        accuracy = evaluate_frames(name, model, frames)
        accuracy.update(
            {
                "eval_seed": args.eval_seed,
                "eval_size": f"{EVAL_SIZE[0]}x{EVAL_SIZE[1]}",
                "eval_frames": [fr.index for fr in frames],
            }
        )
        print(
            f"[train] held-out accuracy ({time.time() - t0:.0f}s): {json.dumps(accuracy)}",
            flush=True,
        )
    meta = {
        "train_command": command,
        "seed": args.seed,
        "data_seed": f"scene seeds {TRAIN_SEEDS.start}..{TRAIN_SEEDS.stop - 1}, frames 0..{TRAIN_FRAMES - 1}, "
        f"batches drawn with numpy default_rng([{args.seed}, step])",
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "sizes": [f"{w}x{h}" for w, h in sizes],
        "train_input": train_input,
        "input": dict(MASKRCNN_DEMO_INPUT if name == "maskrcnn_demo" else FCN_DEMO_INPUT),
        "train_time_s": round(train_time, 1),
        "train_cpu_s": round(
            time.process_time() - cpu_start, 1
        ),  # this process (not resumed parts)
        "threads": args.threads,
        "init_from": args.init_from or None,
        "fcn_fg_weight": args.fg_weight if name == "fcn_demo" else None,
        "torch": str(torch.__version__),  # a plain str: loadable with weights_only=True
        "accuracy": accuracy,
    }
    _atomic_save(checkpoint_payload(name, model, meta), out)
    print(f"[train] wrote {out} ({out.stat().st_size / 1e6:.2f} MB)", flush=True)
    if not args.keep_state and state_path.is_file():
        state_path.unlink()
    return 0


def _file_tag(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def run_evaluation_dir(args: argparse.Namespace) -> int:
    import av

    from pipeline.evaluate import _finite, evaluate_dir

    torch.set_num_threads(args.threads)
    ckpt = Path(args.evaluate)
    name, model, _meta = load_checkpoint(ckpt)
    gt = Path(args.gt)
    video = gt / "video.mp4"
    if not video.is_file():
        print(
            f"error: {video} not found (write it with python -m pipeline.synthetic)",
            file=sys.stderr,
        )
        return 2
    results = Path(args.save_results) if args.save_results else gt / f"{name}.jsonl"
    model_id = f"{name}@{_file_tag(ckpt)}"
    t0 = time.time()
    n = 0
    with av.open(str(video)) as container, results.open("w", encoding="utf-8") as fh:
        for seq, frame in enumerate(container.decode(video=0)):
            if args.eval_frames and seq >= args.eval_frames:
                break
            image = frame.to_ndarray(format="rgb24")
            rec = prediction_record(name, model_id, seq, image, predict(name, model, image))
            fh.write(json.dumps(rec) + "\n")
            n += 1
    print(f"[eval] {n} frames in {time.time() - t0:.1f}s -> {results}", file=sys.stderr)
    res = evaluate_dir(gt, results, only_predicted=bool(args.eval_frames))
    print(json.dumps(_finite(res), indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(
        prog="python -m engines.train", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model", choices=MODELS)
    p.add_argument("--seed", type=int, default=0, help="training seed (init + batch order)")
    p.add_argument("--out", help="checkpoint to write (e.g. engines/weights/maskrcnn_demo.pt)")
    p.add_argument("--steps", type=int, default=0, help="optimiser steps (default per model)")
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--size", default="", help="render size(s) WxH[,WxH...] drawn per batch")
    p.add_argument("--lr", type=float, default=0.0, help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument(
        "--input",
        default="",
        metavar="MIN:MAX",
        help="model-input resize while training (default: the demo's *_DEMO_TRAIN_INPUT)",
    )
    p.add_argument(
        "--fg-weight",
        type=float,
        default=FG_WEIGHT,
        help=f"fcn_demo: cross-entropy weight of the shape classes (default {FG_WEIGHT})",
    )
    p.add_argument(
        "--init-from",
        metavar="CKPT",
        help="initialise from a checkpoint: the same model's (fine-tune) or the ResNet + FPN of "
        "a maskrcnn_demo checkpoint (default: random)",
    )
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is fastest on a shared, busy machine)",
    )
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--state", default="", help="training-state file (default <out>.state)")
    p.add_argument("--resume", action="store_true", help="continue from the state file")
    p.add_argument("--keep-state", action="store_true")
    p.add_argument("--eval-seed", type=int, default=EVAL_SEED)
    p.add_argument(
        "--eval-frames",
        type=int,
        default=None,
        help=f"held-out frames to evaluate after training (default {len(EVAL_FRAMES)}, 0 = skip); "
        "with --evaluate: only the first N frames of the video (default all)",
    )
    p.add_argument("--evaluate", metavar="CKPT", help="evaluate a checkpoint instead of training")
    p.add_argument("--card", metavar="CKPT", help="write the model card <CKPT>.md and exit")
    p.add_argument("--card-notes", default="", help="with --card: a markdown file appended to it")
    p.add_argument(
        "--gt", help="with --evaluate: ground-truth dir from python -m pipeline.synthetic"
    )
    p.add_argument("--save-results", help="with --evaluate: where to write the results JSON lines")
    args = p.parse_args(argv)
    if args.card:
        notes = Path(args.card_notes).read_text(encoding="utf-8") if args.card_notes else ""
        print(write_model_card(args.card, notes))
        return 0
    if args.evaluate:
        if not args.gt:
            p.error("--evaluate needs --gt DIR")
        return run_evaluation_dir(args)
    if not args.model or not args.out:
        p.error("training needs --model and --out")
    if args.eval_seed in TRAIN_SEEDS:
        p.error(f"--eval-seed {args.eval_seed} is a training seed ({TRAIN_SEEDS})")
    try:
        if args.size:
            parse_sizes(args.size)
        if args.input:
            parse_input(args.input)
    except ValueError as exc:
        p.error(str(exc))
    return run_training(args, argv)


if __name__ == "__main__":
    sys.exit(main())
