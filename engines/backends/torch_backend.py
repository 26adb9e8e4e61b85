"""Eager PyTorch backend: the model split (``engines.split``) on the model's own modules.

Mask R-CNN runs its own submodules without its ``transform`` (the batch arrives already
normalised, resized and padded by ``engines.transform``): backbone + FPN and the RPN head
(``DenseHead``), then the same eager glue every backend shares (anchors, NMS, RoIAlign,
postprocess) around the box and mask heads. Outputs stay in model-input coordinates with
28 x 28 mask probabilities; rescaling and paste-back belong to the postprocess stage.
Semantic models return their logits at input size; the argmax over classes happens here,
on the device, per image over its unpadded area.

``resolve_device`` and ``build_spec`` are shared with the exported-graph backends.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from engines.backends.base import ModelSpec, SplitBackend
from engines.backends.options import ModelOptions
from engines.errors import ModelError
from engines.registry import ModelEntry, get_model_entry
from engines.split import SemanticHead, SplitMaskRCNN, SplitSemantic, is_mask_rcnn
from engines.weights import LoadedWeights, build_model, resolve_weights


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


class TorchBackend(SplitBackend):
    """Eager PyTorch inference of one registry model, on the shared model split.

    ``weights`` is anything ``engines.weights.resolve_weights`` accepts (or an already
    resolved ``LoadedWeights``). Options: the shared ones only (``ModelOptions``, given
    flat: ``num_classes``, ``seed``, ``min_size``, ``max_size``, ``threads`` (torch's
    intra-op threads for this process), ``progress``, and the Mask R-CNN thresholds of
    ``DetectionOptions``), or all at once as ``model_options``.

    The split's parts are the model's own modules (``DenseHead`` / ``BoxHead`` /
    ``MaskHead``, ``SemanticHead``), so this is the same computation as running
    ``backbone``, ``rpn`` and ``roi_heads`` of the whole model (bit-identical on the CPU).
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
        model_options: ModelOptions | None = None,
        **options: Any,
    ) -> None:
        opts = ModelOptions.take(self.name, type(self), model_options, options)
        #: The shared options this backend was opened with.
        self.model_options = opts
        entry = get_model_entry(model)
        self.device = resolve_device(device)
        if opts.threads:  # torch's pool is per process: a backend owns its process's model threads
            torch.set_num_threads(opts.threads)
        if isinstance(weights, LoadedWeights):
            if weights.model_name != entry.name:
                raise ModelError(f"weights for {weights.model_name} given to model {entry.name}")
            loaded = weights
        else:
            loaded = resolve_weights(
                entry.name, weights, opts.num_classes, seed=opts.seed, progress=opts.progress
            )
        if entry.task == "semantic" and loaded.num_classes > 256:
            raise ModelError(
                f"{entry.name} has {loaded.num_classes} classes; class maps are uint8 (at most 256)"
            )

        net = build_model(loaded)
        #: What was loaded (without its tensors, which now live in ``model``).
        self.weights: LoadedWeights = dataclasses.replace(loaded, state_dict=None)
        del loaded
        self.spec: ModelSpec = build_spec(
            entry, self.weights, net, min_size=opts.min_size, max_size=opts.max_size
        )
        #: The detection settings in effect (Mask R-CNN only).
        self.options: dict[str, Any] = {}
        if entry.task == "instance":
            if not is_mask_rcnn(net):
                raise ModelError(f"{entry.name} is not a Mask R-CNN style model")
            self.options = opts.detection.apply(net)
            if hasattr(net, "transform"):  # keep the whole-model path consistent with the spec
                net.transform.min_size = (self.spec.min_size,)
                net.transform.max_size = self.spec.max_size
        #: The whole model (the split runs its submodules; tests run it whole as reference).
        self.model: nn.Module = net.to(self.device).eval()
        if entry.task == "instance":
            self._run = SplitMaskRCNN(self.model)
        else:
            self._run = SplitSemantic(SemanticHead(self.model).eval(), argmax=False)

    def __repr__(self) -> str:
        return f"TorchBackend({self.spec.model_id}, device={self.device})"

    def close(self) -> None:
        """Drop the model (and the CUDA cache it used)."""
        self.model = nn.Identity()
        super().close()
