"""Builders for the torchvision architectures the pipeline serves.

Every builder makes the architecture only (random initialisation, nothing downloaded);
weights are loaded afterwards by ``engines.weights``. One architecture per registry name,
whatever the weights, so every checkpoint of that name fits the same module tree:

- ``maskrcnn_resnet50_fpn``: ResNet-50 body with ``FrozenBatchNorm2d`` (as torchvision builds
  it for any trained model) and ``eps`` 0.0, the value torchvision sets for its COCO_V1
  weights (they come from Detectron, trained without eps). A checkpoint may carry another
  value in its ``meta["bn_eps"]``.
- ``maskrcnn_resnet50_fpn_v2``: torchvision's v2 layout (BatchNorm2d everywhere, 2-conv RPN
  head, 4-conv box head).
- FCN / DeepLabV3 / LR-ASPP: torchvision's builders with the auxiliary head off
  (``aux_loss=False``); the aux head only serves training, so its weights are dropped on load.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch import nn
from torchvision.models import segmentation
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

#: eps of FrozenBatchNorm2d in torchvision's COCO_V1 Mask R-CNN (see module docstring).
MASKRCNN_V1_BN_EPS = 0.0


def set_frozen_bn_eps(model: nn.Module, eps: float) -> None:
    """Set ``eps`` of every ``FrozenBatchNorm2d`` in ``model``."""
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.eps = eps


def build_maskrcnn_resnet50_fpn(
    num_classes: int,
    *,
    min_size: int = 800,
    max_size: int = 1333,
    bn_eps: float = MASKRCNN_V1_BN_EPS,
    **kwargs: Any,
) -> MaskRCNN:
    """Mask R-CNN ResNet-50 FPN (v1), laid out like torchvision's trained model.

    ``kwargs`` go to ``MaskRCNN`` (e.g. ``box_score_thresh``, ``rpn_post_nms_top_n_test``).
    """
    backbone = resnet_fpn_backbone(
        backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=3
    )
    model = MaskRCNN(
        backbone, num_classes=num_classes, min_size=min_size, max_size=max_size, **kwargs
    )
    set_frozen_bn_eps(model, bn_eps)
    return model


def build_maskrcnn_resnet50_fpn_v2(
    num_classes: int, *, min_size: int = 800, max_size: int = 1333, **kwargs: Any
) -> MaskRCNN:
    """Mask R-CNN ResNet-50 FPN v2 (torchvision's improved recipe), random init."""
    return maskrcnn_resnet50_fpn_v2(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes,
        min_size=min_size,
        max_size=max_size,
        **kwargs,
    )


def _semantic_builder(fn: Callable[..., nn.Module], has_aux: bool) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None}
        if has_aux:
            kwargs["aux_loss"] = False
        return fn(num_classes=num_classes, **kwargs)

    build.__name__ = f"build_{fn.__name__}"
    build.__doc__ = f"torchvision ``{fn.__name__}`` without aux head, random init."
    return build


build_fcn_resnet50 = _semantic_builder(segmentation.fcn_resnet50, has_aux=True)
build_fcn_resnet101 = _semantic_builder(segmentation.fcn_resnet101, has_aux=True)
build_deeplabv3_resnet50 = _semantic_builder(segmentation.deeplabv3_resnet50, has_aux=True)
build_deeplabv3_resnet101 = _semantic_builder(segmentation.deeplabv3_resnet101, has_aux=True)
build_lraspp_mobilenet_v3_large = _semantic_builder(
    segmentation.lraspp_mobilenet_v3_large, has_aux=False
)


@cache
def coco_category_names() -> tuple[str, ...]:
    """The 91 COCO category names of torchvision's detection weights (index 0 background,
    unused ids named ``N/A``)."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    return tuple(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


@cache
def voc_category_names() -> tuple[str, ...]:
    """The 21 Pascal VOC class names of torchvision's segmentation weights (0 background)."""
    from torchvision.models.segmentation import FCN_ResNet50_Weights

    return tuple(FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.meta["categories"])


def is_frozen_bn_model(model: nn.Module) -> bool:
    """True if ``model`` contains a ``FrozenBatchNorm2d`` (its eps is not in the state_dict)."""
    return any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())


def state_dict_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """Shapes of ``model.state_dict()`` entries, without copying any data."""
    return {k: v.shape for k, v in model.state_dict(keep_vars=True).items()}
