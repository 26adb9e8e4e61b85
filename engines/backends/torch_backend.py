"""Eager PyTorch backend: runs the torchvision modules directly.

Mask R-CNN runs its own submodules without its ``transform`` (the batch arrives already
normalised, resized and padded by ``engines.transform``): backbone + FPN, RPN, RoI heads.
Outputs stay in model-input coordinates with 28 x 28 mask probabilities; rescaling and
paste-back belong to the postprocess stage. Semantic models return their logits at input
size; the argmax over classes happens here, on the device, per image over its unpadded area.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.image_list import ImageList

from engines.backends.base import Backend, ModelSpec
from engines.errors import ModelError
from engines.outputs import InstanceOutput, SemanticOutput
from engines.registry import ModelEntry, get_model_entry
from engines.weights import DEFAULT_SEED, LoadedWeights, build_model, resolve_weights


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a ``torch.device``; ``ModelError`` if unusable."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelError(f"unknown device '{device}' (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError("--device cuda requested but no CUDA GPU is available")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ModelError(f"--device {device} requested but only {count} CUDA GPU(s) exist")
        if dev.index is None:  # name the GPU, so tensor.device == backend.device holds
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise ModelError(f"unsupported device '{device}' (use cpu, cuda or cuda:N)")
    return dev


def build_spec(
    entry: ModelEntry,
    weights: LoadedWeights,
    model: nn.Module | None = None,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
) -> ModelSpec:
    """The ``ModelSpec`` of a model from its registry entry, its weights and (optionally) the
    built module: a torchvision Mask R-CNN's own ``transform`` supplies mean / std / padding."""
    defaults = entry.input_defaults()
    mean, std, divisible = defaults.image_mean, defaults.image_std, defaults.size_divisible
    transform = getattr(model, "transform", None)
    if transform is not None and hasattr(transform, "image_mean"):
        mean = tuple(float(v) for v in transform.image_mean)
        std = tuple(float(v) for v in transform.image_std)
        divisible = int(transform.size_divisible)
    spec = ModelSpec(
        name=entry.name,
        task=entry.task,
        class_names=tuple(weights.class_names),
        model_id=weights.model_id,
        untrained=weights.untrained,
        min_size=int(min_size if min_size is not None else defaults.min_size),
        max_size=int(max_size if max_size is not None else defaults.max_size),
        image_mean=mean,  # type: ignore[arg-type]
        image_std=std,  # type: ignore[arg-type]
        size_divisible=divisible,
    )
    if spec.min_size < 1 or spec.max_size < spec.min_size:
        raise ModelError(
            f"bad input size for {entry.name}: min_size {spec.min_size}, max_size {spec.max_size}"
        )
    return spec


class TorchBackend(Backend):
    """Eager PyTorch inference of one registry model.

    ``weights`` is anything ``engines.weights.resolve_weights`` accepts (or an already
    resolved ``LoadedWeights``). Options: ``num_classes``, ``seed`` (random weights),
    ``min_size`` / ``max_size`` (override the registry's resize), and for Mask R-CNN
    ``box_score_thresh``, ``box_nms_thresh``, ``box_detections_per_img``,
    ``rpn_pre_nms_top_n_test`` / ``rpn_post_nms_top_n_test``; ``None`` keeps the model's own
    setting (torchvision: 0.05, 0.5, 100, 1000, 1000; the demo model sets its own);
    ``threads``: torch's intra-op threads for this process (None: unchanged).

    Outputs are produced under ``torch.inference_mode()``: they are inference tensors, so
    update them out of place (or ``.clone()`` first) outside that mode.
    """

    name = "pytorch"

    def __init__(
        self,
        model: str,
        weights: str | LoadedWeights | None = "default",
        device: str | torch.device = "cpu",
        *,
        num_classes: int | None = None,
        seed: int | None = DEFAULT_SEED,
        min_size: int | None = None,
        max_size: int | None = None,
        box_score_thresh: float | None = None,
        box_nms_thresh: float | None = None,
        box_detections_per_img: int | None = None,
        rpn_pre_nms_top_n_test: int | None = None,
        rpn_post_nms_top_n_test: int | None = None,
        progress: bool = False,
        threads: int | None = None,
    ) -> None:
        entry = get_model_entry(model)
        self.device = resolve_device(device)
        if threads:  # torch's pool is per process: a backend owns its process's model threads
            torch.set_num_threads(int(threads))
        if isinstance(weights, LoadedWeights):
            if weights.model_name != entry.name:
                raise ModelError(f"weights for {weights.model_name} given to model {entry.name}")
            loaded = weights
        else:
            loaded = resolve_weights(entry.name, weights, num_classes, seed=seed, progress=progress)
        if entry.task == "semantic" and loaded.num_classes > 256:
            raise ModelError(
                f"{entry.name} has {loaded.num_classes} classes; class maps are uint8 (at most 256)"
            )

        net = build_model(loaded)
        #: What was loaded (without its tensors, which now live in ``model``).
        self.weights: LoadedWeights = dataclasses.replace(loaded, state_dict=None)
        del loaded
        self.spec: ModelSpec = build_spec(
            entry, self.weights, net, min_size=min_size, max_size=max_size
        )

        if entry.task == "instance":
            for part in ("backbone", "rpn", "roi_heads"):
                if not hasattr(net, part):
                    raise ModelError(f"{entry.name} is not a Mask R-CNN style model (no .{part})")
            heads = net.roi_heads
            if box_score_thresh is not None:
                heads.score_thresh = float(box_score_thresh)
            if box_nms_thresh is not None:
                heads.nms_thresh = float(box_nms_thresh)
            if box_detections_per_img is not None:
                heads.detections_per_img = int(box_detections_per_img)
            if rpn_pre_nms_top_n_test is not None:
                net.rpn._pre_nms_top_n["testing"] = int(rpn_pre_nms_top_n_test)
            if rpn_post_nms_top_n_test is not None:
                net.rpn._post_nms_top_n["testing"] = int(rpn_post_nms_top_n_test)
            if hasattr(net, "transform"):  # keep the whole-model path consistent with the spec
                net.transform.min_size = (self.spec.min_size,)
                net.transform.max_size = self.spec.max_size
        self.model: nn.Module = net.to(self.device).eval()
        #: The detection settings in effect (Mask R-CNN only).
        self.options: dict[str, Any] = {}
        if entry.task == "instance":
            self.options = {
                "box_score_thresh": net.roi_heads.score_thresh,
                "box_nms_thresh": net.roi_heads.nms_thresh,
                "box_detections_per_img": net.roi_heads.detections_per_img,
                "rpn_pre_nms_top_n_test": net.rpn._pre_nms_top_n["testing"],
                "rpn_post_nms_top_n_test": net.rpn._post_nms_top_n["testing"],
            }

    def __repr__(self) -> str:
        return f"TorchBackend({self.spec.model_id}, device={self.device})"

    def infer(
        self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]
    ) -> list[InstanceOutput] | list[SemanticOutput]:
        """Run one padded batch [B, 3, H, W]; one output per image, on ``self.device``."""
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a [B, 3, H, W] batch, got {tuple(batch.shape)}")
        if len(image_sizes) != batch.shape[0]:
            raise ValueError(f"{len(image_sizes)} image sizes for a batch of {batch.shape[0]}")
        sizes = [(int(h), int(w)) for h, w in image_sizes]
        for h, w in sizes:
            if h > batch.shape[2] or w > batch.shape[3]:
                raise ValueError(f"image size {h}x{w} exceeds the batch {tuple(batch.shape)}")
        with torch.inference_mode():
            batch = batch.to(self.device, torch.float32, non_blocking=True)
            if self.spec.task == "instance":
                return self._infer_instance(batch, sizes)
            return self._infer_semantic(batch, sizes)

    def _infer_instance(
        self, batch: torch.Tensor, sizes: list[tuple[int, int]]
    ) -> list[InstanceOutput]:
        model = self.model
        features = model.backbone(batch)
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
        images = ImageList(batch, sizes)
        proposals, _ = model.rpn(images, features)
        detections, _ = model.roi_heads(features, proposals, sizes)
        return [
            InstanceOutput(
                boxes=det["boxes"],
                scores=det["scores"],
                labels=det["labels"],
                mask_probs=det["masks"][:, 0],
            )
            for det in detections
        ]

    def _infer_semantic(
        self, batch: torch.Tensor, sizes: list[tuple[int, int]]
    ) -> list[SemanticOutput]:
        out = self.model(batch)
        logits = out["out"] if isinstance(out, dict) else out
        if logits.shape[-2:] != batch.shape[-2:]:  # a head that does not upsample itself
            logits = F.interpolate(
                logits, size=batch.shape[-2:], mode="bilinear", align_corners=False
            )
        classes = logits.argmax(dim=1).to(torch.uint8)
        return [
            SemanticOutput(class_map=classes[i, :h, :w].contiguous())
            for i, (h, w) in enumerate(sizes)
        ]

    def close(self) -> None:
        """Drop the model (and the CUDA cache it used)."""
        self.model = nn.Identity()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
