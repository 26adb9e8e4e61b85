"""The training tasks: what differs between an instance and a semantic demo model.

A ``Task`` knows how to build its model (``engines.registry``), initialise it from a
checkpoint, turn a batch plan into a loss, predict on one frame, and score predictions
(``pipeline.evaluate``); the loop, the checkpoints, the CLI and the model cards only talk to
this interface. ``get_task(name)`` gives the task of a demo model by its registry task kind
(``FCNSkipTask`` for the FCN-32s/16s/8s, whose initialisation follows the FCN paper).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engines.models import demo, semantic_demo
from engines.models.semantic_demo import FCN_SKIP_MODELS, init_from_coarser
from engines.registry import get_model_entry, list_models
from engines.transform import batch_images
from engines.weights import resolve_weights
from pipeline.evaluate import evaluate_instances, evaluate_semantic, frame_record
from pipeline.synthetic import CLASS_NAMES, SceneFrame
from pipeline.synthetic.coco import coco_dataset
from pipeline.training.data import Plan, image_tensor, instance_batch, model_input, semantic_batch

__all__ = [
    "FG_WEIGHT",
    "MODELS",
    "FCNSkipTask",
    "InstanceTask",
    "SemanticTask",
    "Task",
    "TrainDefaults",
    "get_task",
]

FG_WEIGHT = 2.0  # semantic cross-entropy weight of the shape classes (background 1)
# Training render sizes. The model input is resized from them (shorter side 320), so the
# mix covers native-size renders and larger frames downscaled by the input transform, in
# 4:3 and 16:9.
DEFAULT_SIZES = "427x320,427x320,640x480,569x320"


@dataclass(frozen=True)
class TrainDefaults:
    """A model's default schedule (what the CLI uses when a flag is not given)."""

    steps: int
    batch_size: int
    lr: float
    sizes: str = DEFAULT_SIZES


class Task(abc.ABC):
    """Training, prediction and scoring of one demo model (see the module docstring)."""

    kind: ClassVar[str]  # the registry task: "instance" or "semantic"
    #: model-card table: metric keys of ``evaluate_frames``, their format, the per-class key
    card_metrics: ClassVar[tuple[str, ...]]
    card_format: ClassVar[str]
    card_per_class: ClassVar[tuple[str, str]]  # (accuracy key, label)

    def __init__(self, model_name: str, defaults: TrainDefaults, train_input: dict[str, int]):
        self.model_name = model_name
        self.entry = get_model_entry(model_name)
        self.defaults = defaults
        self.train_input = dict(train_input)
        #: the classes it learns (index = class id): the shapes, or shapes + stuff
        self.class_names: tuple[str, ...] = self.entry.default_class_names() or CLASS_NAMES
        #: the synthetic scene kind it trains and is held-out scored on: the models that
        #: learn stuff see the panoptic scenes, the others the default (plain) scenes
        self.scene_kind = "panoptic" if len(self.class_names) > len(CLASS_NAMES) else "default"
        #: the kinds its batches are drawn from (``--scenes``; default: ``scene_kind``)
        self.scene_kinds: tuple[str, ...] = (self.scene_kind,)

    @property
    def inference_input(self) -> dict[str, int]:
        """The registry's model-input resize at inference (``{"min_size", "max_size"}``)."""
        d = self.entry.input_defaults()
        return {"min_size": d.min_size, "max_size": d.max_size}

    def build(self, num_classes: int | None = None) -> nn.Module:
        """The architecture with random initialisation (the global torch RNG); by default
        for ``class_names``."""
        return self.entry.build(num_classes or len(self.class_names))

    def init_from(self, model: nn.Module, ckpt_path: str | Path) -> str:
        """Initialise ``model`` from a checkpoint (``--init-from``); returns a note for the log.

        Default: all weights of the same model (fine-tuning), else the ResNet + FPN of a
        maskrcnn_demo checkpoint (``pipeline.training.loop.init_from_checkpoint``).
        """
        from pipeline.training.loop import init_from_checkpoint  # the loop imports this module

        return init_from_checkpoint(self.model_name, model, ckpt_path)

    def prepare_training(self, model: nn.Module, input_size: dict[str, int]) -> None:  # noqa: B027
        """Set what the model itself resizes to while training (default: nothing)."""

    def prepare_inference(self, model: nn.Module) -> None:  # noqa: B027
        """Undo ``prepare_training`` before predicting (default: nothing)."""

    @abc.abstractmethod
    def loss(
        self, model: nn.Module, plan: Plan, input_size: dict[str, int], fg_weight: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of batch ``plan`` (model in train mode) and its named parts for the log."""

    @abc.abstractmethod
    def predict(self, model: nn.Module, image: np.ndarray, score_thresh: float = 0.05) -> Any:
        """Prediction on one HxWx3 uint8 RGB frame, at frame size (model put in eval mode)."""

    @abc.abstractmethod
    def record(self, model_id: str, seq: int, image: np.ndarray, pred: Any) -> dict[str, Any]:
        """A ``pipeline.evaluate.frame_record`` of ``pred``."""

    @abc.abstractmethod
    def metrics(self, frames: Sequence[SceneFrame], records: list[dict[str, Any]]) -> dict[str, Any]:
        """Held-out accuracy of ``records`` against the ground truth of ``frames``."""

    def card_notes(self, meta: dict[str, Any]) -> list[str]:
        """Extra model-card lines after the accuracy table (default: none)."""
        return []

    def _kinds(self) -> str | tuple[str, ...]:
        return self.scene_kinds[0] if len(self.scene_kinds) == 1 else self.scene_kinds


class InstanceTask(Task):
    """A torchvision Mask R-CNN: it resizes and normalises inside, and returns its losses."""

    kind = "instance"
    card_metrics = ("mask_AP", "mask_AP50", "mask_AP75", "box_AP", "box_AP50")
    card_format = ".3f"
    card_per_class = ("mask_AP_per_class", "Per-class mask AP")

    def prepare_training(self, model: nn.Module, input_size: dict[str, int]) -> None:
        set_input_size(model, input_size)

    def prepare_inference(self, model: nn.Module) -> None:
        set_input_size(model, self.inference_input)

    def loss(self, model, plan, input_size, fg_weight):
        images, targets = instance_batch(plan, self._kinds())
        losses = model(images, targets)
        total = sum(losses.values())
        return total, {k.replace("loss_", ""): float(v.detach()) for k, v in losses.items()}

    @torch.no_grad()
    def predict(self, model, image, score_thresh=0.05):
        """Instance dicts (class_id, score, box, mask_array) at frame size."""
        model.eval()
        out = model([image_tensor(image)])[0]
        keep = out["scores"] >= score_thresh
        masks = (out["masks"][keep, 0] >= 0.5).numpy()
        return [
            {"class_id": int(c), "score": float(s), "box": [float(v) for v in b], "mask_array": m}
            for c, s, b, m in zip(
                out["labels"][keep], out["scores"][keep], out["boxes"][keep], masks, strict=True
            )
        ]

    def record(self, model_id, seq, image, pred):
        h, w = image.shape[:2]
        return frame_record(seq, w, h, self.class_names, instances=pred, model=model_id)

    def metrics(self, frames, records):
        res = evaluate_instances(coco_dataset(list(frames)), records)
        return {
            "mask_AP": res["segm"]["AP"],
            "mask_AP50": res["segm"]["AP50"],
            "mask_AP75": res["segm"]["AP75"],
            "box_AP": res["bbox"]["AP"],
            "box_AP50": res["bbox"]["AP50"],
            "mask_AP_per_class": res["segm"]["per_class_AP"],
            "gt_instances": res["gt_instances"],
        }

    def card_notes(self, meta):
        low = meta.get("accuracy_at_train_input")
        if not low:
            return []
        return [
            "",
            f"The same frames at the training size (shorter side {low['input']['min_size']}): "
            f"mask AP {low['mask_AP']:.3f}, AP50 {low['mask_AP50']:.3f}, AP75 "
            f"{low['mask_AP75']:.3f}, box AP {low['box_AP']:.3f}. The inference size is "
            f"{meta.get('input', {}).get('min_size')} because the larger input finds more of "
            "the smallest shapes.",
        ]


class SemanticTask(Task):
    """A torchvision-style FCN: normalised, resized, padded input; pixel cross-entropy."""

    kind = "semantic"
    card_metrics = ("mean_iou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou")
    card_format = ".4f"
    card_per_class = ("per_class_iou", "Per-class IoU")

    def _input(self, image: np.ndarray, input_size: dict[str, int]) -> torch.Tensor:
        d = self.entry.input_defaults()
        return model_input(image, input_size, d.image_mean, d.image_std)

    def loss(self, model, plan, input_size, fg_weight):
        d = self.entry.input_defaults()
        x, y = semantic_batch(plan, input_size, d.image_mean, d.image_std, self._kinds())
        logits = model(x)["out"]
        weight = torch.full((logits.shape[1],), float(fg_weight))
        weight[0] = 1.0
        loss = F.cross_entropy(logits, y, weight=weight, ignore_index=255)
        return loss, {"ce": float(loss.detach())}

    @torch.no_grad()
    def predict(self, model, image, score_thresh=0.05):
        """[H, W] uint8 class map at frame size: argmax at model-input size, then a
        nearest-neighbour resize, as the pipeline does."""
        model.eval()
        x = self._input(image, self.inference_input)
        h, w = x.shape[1:]
        logits = model(batch_images([x], 32)[0])["out"][:, :, :h, :w]
        cmap = logits.argmax(1).to(torch.uint8)
        if (h, w) != image.shape[:2]:
            cmap = F.interpolate(cmap[None], size=image.shape[:2], mode="nearest-exact")[0]
        return cmap[0].numpy()

    def record(self, model_id, seq, image, pred):
        h, w = image.shape[:2]
        return frame_record(seq, w, h, self.class_names, class_map=pred, model=model_id)

    def metrics(self, frames, records):
        res = evaluate_semantic(
            {fr.index: fr.class_map for fr in frames}, records, class_names=self.class_names
        )
        return {
            "mean_iou": res["mean_iou"],
            "pixel_accuracy": res["pixel_accuracy"],
            "mean_accuracy": res["mean_accuracy"],
            "frequency_weighted_iou": res["frequency_weighted_iou"],
            "per_class_iou": res["per_class_iou"],
        }


class FCNSkipTask(SemanticTask):
    """FCN-32s / 16s / 8s: a semantic task whose ``--init-from`` follows the FCN paper.

    The paper trains 32s first, then 16s from it, then 8s from 16s, the new skip scorers
    zero-initialised (``engines.models.semantic_demo.init_from_coarser``). Its 32s starts
    from a pretrained classifier; here the analogue is the small ResNet of a trained
    maskrcnn_demo or fcn_demo checkpoint (same body, trained on the same scenes).
    """

    def init_from(self, model: nn.Module, ckpt_path: str | Path) -> str:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        source = ckpt.get("model") if isinstance(ckpt, dict) else None
        if source in FCN_SKIP_MODELS:
            if FCN_SKIP_MODELS[source] > FCN_SKIP_MODELS[self.model_name]:
                raise ValueError(
                    f"cannot initialise {self.model_name} from the finer {source} "
                    f"({ckpt_path}): use fcn32s_demo for fcn16s_demo, fcn16s_demo for fcn8s_demo"
                )
            # engines.weights reads it as the pipeline would (format, class names, shapes)
            new = init_from_coarser(model, resolve_weights(source, str(ckpt_path)).state_dict)
            layers = sorted({k.rsplit(".", 1)[0] for k in new})
            added = f"; new: {', '.join(layers)} (bilinear / zero init)" if layers else ""
            return f"all {source} weights from {ckpt_path}{added}"
        if source in ("maskrcnn_demo", "fcn_demo"):
            copied = _copy_resnet_body(model.backbone, ckpt["state_dict"])
            return f"{copied} ResNet body tensors of {source} from {ckpt_path}"
        raise ValueError(
            f"{ckpt_path} holds {source!r}; {self.model_name} initialises from an FCN-32s/16s "
            "checkpoint (the paper's stages) or the ResNet of maskrcnn_demo / fcn_demo"
        )


def _copy_resnet_body(body: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Copy a checkpoint's ``TinyResNet`` tensors (found by its stem) into ``body``."""
    stems = [k for k in state if k.endswith("stem.0.weight")]
    if len(stems) != 1:
        raise ValueError(f"expected one TinyResNet in the checkpoint, found {len(stems)}")
    prefix = stems[0][: -len("stem.0.weight")]
    own = body.state_dict()
    picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    picked = {k: v for k, v in picked.items() if k in own and own[k].shape == v.shape}
    body.load_state_dict(picked, strict=False)
    return len(picked)


def set_input_size(model: nn.Module, input_size: dict[str, int]) -> None:
    """Set a Mask R-CNN's built-in resize (no-op for models whose input is resized outside)."""
    transform = getattr(model, "transform", None)
    if transform is not None:
        transform.min_size = (int(input_size["min_size"]),)
        transform.max_size = int(input_size["max_size"])


_KINDS: dict[str, type[Task]] = {"instance": InstanceTask, "semantic": SemanticTask}
_FCN_SKIP_INPUT = semantic_demo.FCN_SKIP_DEMO_TRAIN_INPUT
# The trainable models: the registry's demo family, with their schedules and training sizes.
# fcn16s / fcn8s continue from a trained coarser net (--init-from), hence fewer steps at a
# lower rate, as in the FCN paper's staged training.
_SETTINGS: dict[str, tuple[TrainDefaults, dict[str, int]]] = {
    "maskrcnn_demo": (TrainDefaults(2500, 4, 2e-3), demo.MASKRCNN_DEMO_TRAIN_INPUT),
    "fcn_demo": (TrainDefaults(2500, 6, 3e-3), demo.FCN_DEMO_TRAIN_INPUT),
    "unet_demo": (TrainDefaults(2500, 6, 3e-3), semantic_demo.UNET_DEMO_TRAIN_INPUT),
    "fcn32s_demo": (TrainDefaults(2500, 6, 3e-3), _FCN_SKIP_INPUT),
    "fcn16s_demo": (TrainDefaults(1000, 6, 5e-4), _FCN_SKIP_INPUT),
    "fcn8s_demo": (TrainDefaults(1000, 6, 5e-4), _FCN_SKIP_INPUT),
}
_TASK_CLASSES: dict[str, type[Task]] = dict.fromkeys(FCN_SKIP_MODELS, FCNSkipTask)
MODELS = tuple(n for n in list_models() if n in _SETTINGS)


def get_task(model: str | Task) -> Task:
    """The task of demo model ``model`` (a ``Task`` is returned as is)."""
    if isinstance(model, Task):
        return model
    if model not in _SETTINGS:
        raise ValueError(f"unknown model {model!r} (choose from {', '.join(MODELS)})")
    defaults, train_input = _SETTINGS[model]
    cls = _TASK_CLASSES.get(model) or _KINDS[get_model_entry(model).task]
    return cls(model, defaults, train_input)
