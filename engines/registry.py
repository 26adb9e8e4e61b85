"""The models the pipeline can serve: name -> task, builder, input defaults, class names.

Input defaults (resize of the shorter side to ``min_size`` unless the longer side would
exceed ``max_size``, see ``engines.transform``):

- Mask R-CNN: 800 / 1333, torchvision's detection defaults; padded to a multiple of 32.
- torchvision semantic models: 520 / 2048. torchvision evaluates them with the shorter side
  at 520 and no cap; 2048 only bounds memory for extreme aspect ratios (a 1080p frame becomes
  520 x 924). No padding is needed (``size_divisible`` 1): FCN / DeepLabV3 / LR-ASPP take
  any size and upsample their logits to the input size, so a batch of equal-size frames is
  run exactly as torchvision would run each frame.
- Demo models: the sizes (and mean / std) in their module, ``engines.models.demo``
  (``MASKRCNN_DEMO_INPUT``, ``FCN_DEMO_INPUT``) or ``engines.models.semantic_demo`` (the U-Net
  and FCN-32s/16s/8s: ``UNET_DEMO_INPUT``, ``FCN_SKIP_DEMO_INPUT``), read lazily so this module
  imports before those exist; all pad to a multiple of 32 (an FPN, or four stride-2 steps).
  Their class names are the synthetic scene's classes
  (``engines.models.demo_classes.DEMO_CLASS_NAMES``; the semantic demos of ``semantic_demo``
  also the panoptic scenes' stuff, ``DEMO_PANOPTIC_CLASS_NAMES``); the builders take the class
  count, which comes from the names that travel with the weights (the default names' count
  for random weights).

Mean / std are the ImageNet statistics every torchvision model here was trained with (a
Mask R-CNN takes them from its own ``transform`` when the backend builds it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from torch import nn

from engines.backends.base import Task
from engines.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Family = Literal["torchvision", "demo"]


@dataclass(frozen=True)
class InputDefaults:
    """How frames are resized, normalised and padded for a model."""

    min_size: int
    max_size: int
    size_divisible: int
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD


@dataclass(frozen=True)
class ModelEntry:
    """One servable model.

    ``builder(num_classes)`` returns the architecture with random initialisation.
    ``class_names_source`` says where default class names come from: ``"coco"`` (torchvision's
    91 COCO categories), ``"voc"`` (21 Pascal VOC classes), ``"synthetic"`` (the synthetic
    scene's shape classes) or ``"synthetic_panoptic"`` (the shapes and the panoptic scenes'
    stuff classes, for the semantic demo models trained on those scenes). ``default_weights`` is what ``weights="default"`` means.
    """

    name: str
    task: Task
    family: Family
    description: str
    builder: Callable[[int], nn.Module]
    inputs: Callable[[], InputDefaults]
    class_names_source: Literal["coco", "voc", "synthetic", "synthetic_panoptic"]
    default_weights: str

    def build(self, num_classes: int) -> nn.Module:
        """Build the architecture (random init) for ``num_classes`` classes incl. background."""
        return self.builder(num_classes)

    def input_defaults(self) -> InputDefaults:
        """Resize / normalisation defaults (resolved lazily for demo models)."""
        return self.inputs()

    @property
    def min_size(self) -> int:
        """Default shorter-side size of the model input."""
        return self.inputs().min_size

    @property
    def max_size(self) -> int:
        """Default cap on the longer side of the model input."""
        return self.inputs().max_size

    @property
    def size_divisible(self) -> int:
        """Batches are padded to a multiple of this."""
        return self.inputs().size_divisible

    def default_class_names(self) -> tuple[str, ...] | None:
        """Class names that go with this architecture's standard weights, if any."""
        from engines.models import torchvision_models as tvm

        if self.class_names_source == "coco":
            return tvm.coco_category_names()
        if self.class_names_source == "voc":
            return tvm.voc_category_names()
        if self.class_names_source == "synthetic":
            from engines.models.demo_classes import DEMO_CLASS_NAMES

            return DEMO_CLASS_NAMES
        if self.class_names_source == "synthetic_panoptic":
            from engines.models.demo_classes import DEMO_PANOPTIC_CLASS_NAMES

            return DEMO_PANOPTIC_CLASS_NAMES
        return None


def _tv(builder_name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        from engines.models import torchvision_models as tvm

        return getattr(tvm, builder_name)(num_classes)

    build.__name__ = builder_name
    return build


def _demo_module(module: str = "demo") -> Any:
    try:
        return importlib.import_module(f"engines.models.{module}")
    except ImportError as exc:
        raise ModelError(
            f"demo models are unavailable: cannot import engines.models.{module} ({exc})"
        ) from exc


def _demo_builder(fn_name: str, module: str = "demo") -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        return getattr(_demo_module(module), fn_name)(num_classes)

    build.__name__ = fn_name
    return build


def _demo_inputs(
    const_name: str, size_divisible: int, module: str = "demo"
) -> Callable[[], InputDefaults]:
    def inputs() -> InputDefaults:
        demo = _demo_module(module)
        const = getattr(demo, const_name)
        mean = const.get("image_mean", getattr(demo, "IMAGE_MEAN", IMAGENET_MEAN))
        std = const.get("image_std", getattr(demo, "IMAGE_STD", IMAGENET_STD))
        return InputDefaults(
            min_size=int(const["min_size"]),
            max_size=int(const["max_size"]),
            size_divisible=int(const.get("size_divisible", size_divisible)),
            image_mean=tuple(float(v) for v in mean),  # type: ignore[arg-type]
            image_std=tuple(float(v) for v in std),  # type: ignore[arg-type]
        )

    return inputs


def _fixed(defaults: InputDefaults) -> Callable[[], InputDefaults]:
    return lambda: defaults


_MASKRCNN_INPUT = InputDefaults(min_size=800, max_size=1333, size_divisible=32)
_SEMANTIC_INPUT = InputDefaults(min_size=520, max_size=2048, size_divisible=1)


def _torchvision_entry(
    name: str, task: Task, classes: Literal["coco", "voc"], description: str
) -> ModelEntry:
    """A torchvision model: ``torchvision_models.build_<name>``, its standard weights by default."""
    inputs = _MASKRCNN_INPUT if task == "instance" else _SEMANTIC_INPUT
    return ModelEntry(
        name, task, "torchvision", description, _tv(f"build_{name}"), _fixed(inputs), classes,
        "DEFAULT",
    )  # fmt: skip


def _demo_entry(
    name: str, task: Task, module: str, inputs_const: str, description: str
) -> ModelEntry:
    """A demo model: ``engines.models.<module>.build_<name>``, sizes from its ``inputs_const``.

    The semantic demos of ``semantic_demo`` learn the panoptic scenes (shapes and stuff)."""
    classes = "synthetic_panoptic" if module == "semantic_demo" else "synthetic"
    return ModelEntry(
        name, task, "demo", description, _demo_builder(f"build_{name}", module),
        _demo_inputs(inputs_const, 32, module), classes, "demo",
    )  # fmt: skip


# The servable models, in registry order (``list_models``); one row each, built below.
_TORCHVISION_MODELS: tuple[tuple[str, Task, Literal["coco", "voc"], str], ...] = (
    # name, task, where its class names come from, description
    ("maskrcnn_resnet50_fpn", "instance", "coco", "Mask R-CNN ResNet-50 FPN (torchvision, COCO)"),
    ("maskrcnn_resnet50_fpn_v2", "instance", "coco",
     "Mask R-CNN ResNet-50 FPN v2 (torchvision, COCO)"),
    ("fcn_resnet50", "semantic", "voc", "FCN ResNet-50 (torchvision, VOC classes)"),
    ("fcn_resnet101", "semantic", "voc", "FCN ResNet-101 (torchvision, VOC classes)"),
    ("deeplabv3_resnet50", "semantic", "voc", "DeepLabV3 ResNet-50 (torchvision, VOC classes)"),
    ("deeplabv3_resnet101", "semantic", "voc", "DeepLabV3 ResNet-101 (torchvision, VOC classes)"),
    ("lraspp_mobilenet_v3_large", "semantic", "voc",
     "LR-ASPP MobileNetV3-Large (torchvision, VOC classes)"),
)  # fmt: skip
_DEMO_MODELS: tuple[tuple[str, Task, str, str, str], ...] = (
    # name, task, its module in engines.models, its input constant there, description
    ("maskrcnn_demo", "instance", "demo", "MASKRCNN_DEMO_INPUT",
     "small Mask R-CNN trained on the synthetic scenes"),
    ("fcn_demo", "semantic", "demo", "FCN_DEMO_INPUT", "small FCN trained on the synthetic scenes"),
    ("unet_demo", "semantic", "semantic_demo", "UNET_DEMO_INPUT",
     "small U-Net (skip concatenations) trained on the panoptic scenes (shapes + stuff)"),
    ("fcn32s_demo", "semantic", "semantic_demo", "FCN_SKIP_DEMO_INPUT",
     "FCN-32s (FCN paper) on a small ResNet, trained on the panoptic scenes"),
    ("fcn16s_demo", "semantic", "semantic_demo", "FCN_SKIP_DEMO_INPUT",
     "FCN-16s (FCN paper, stride-16 skip), initialised from FCN-32s"),
    ("fcn8s_demo", "semantic", "semantic_demo", "FCN_SKIP_DEMO_INPUT",
     "FCN-8s (FCN paper, stride-16 and stride-8 skips), initialised from FCN-16s"),
)  # fmt: skip


@cache
def _entries() -> dict[str, ModelEntry]:
    entries = [_torchvision_entry(*row) for row in _TORCHVISION_MODELS]
    entries += [_demo_entry(*row) for row in _DEMO_MODELS]
    return {e.name: e for e in entries}


def list_models() -> list[str]:
    """Names of all servable models, in registry order."""
    return list(_entries())


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; an unknown name raises ``ModelError``."""
    try:
        return _entries()[name]
    except KeyError:
        raise ModelError(
            f"unknown model '{name}' (available: {', '.join(list_models())})"
        ) from None
