"""The optimisation loop: schedule, optimiser, initialisation, and the training steps.

The same seed and torch thread count give the same weights on the CPU: batches come from
``data.batch_plan(seed, step)``, initialisation and the RoI samplers from the torch RNG the
caller seeded (``torch.manual_seed``) before building the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from pipeline.training.data import batch_plan
from pipeline.training.tasks import FG_WEIGHT, Task, get_task

__all__ = [
    "build",
    "init_backbone_from",
    "init_from_checkpoint",
    "lr_at",
    "make_optimizer",
    "train_steps",
]

StepFn = Callable[[int, float, dict[str, float]], None]


def build(model: str | Task, num_classes: int | None = None) -> nn.Module:
    """A demo model with random initialisation (``Task.build``; the global torch RNG)."""
    task = get_task(model)
    return task.build() if num_classes is None else task.build(num_classes)


def lr_at(step: int, steps: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 2% of ``base``."""
    if step < warmup:
        return base * (0.1 + 0.9 * step / max(1, warmup))
    progress = (step - warmup) / max(1, steps - warmup)
    return base * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on weights only (not on norms and biases)."""
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


def train_steps(
    model_name: str | Task,
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
    on_step: StepFn | None = None,
    input_size: dict[str, int] | None = None,
    fg_weight: float = FG_WEIGHT,
) -> None:
    """Run steps ``start .. stop-1`` of a ``steps``-step schedule.

    ``input_size`` ({"min_size", "max_size"}) overrides the model-input size (tests use tiny
    sizes); by default the task's training input (``*_DEMO_TRAIN_INPUT``). A Mask R-CNN's
    transform is left at the training size: call ``Task.prepare_inference`` before inference.
    """
    task = get_task(model_name)
    size = input_size or task.train_input
    task.prepare_training(model, size)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    for step in range(start, stop):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        plan = batch_plan(seed, step, batch_size, sizes)
        loss, parts = task.loss(model, plan, size, fg_weight)
        if not torch.isfinite(loss):
            raise RuntimeError(f"step {step}: loss is {float(loss)} ({parts})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if on_step is not None:
            on_step(step, float(loss.detach()), parts)
