"""Small demo models trained on the synthetic scenes (``pipeline.synthetic``).

Both are torchvision-compatible so every backend (PyTorch, ONNX Runtime, TensorRT) can run
them through the same model split as the full-size models:

* ``build_maskrcnn_demo``: a ``torchvision.models.detection.MaskRCNN`` with a small
  ResNet-style backbone (BatchNorm, five stride-2 steps) + FPN (64 channels, levels
  P2..P5 + max-pool P6), the standard RPN head, a ``TwoMLPHead`` box head on [R, 64, 7, 7]
  RoIs (representation 128) and the standard mask head (four 3x3 convs + transposed conv)
  giving [K, num_classes, 28, 28] mask logits.
* ``build_fcn_demo``: a ``torchvision.models.segmentation.FCN`` whose backbone is the same
  kind of small ResNet + FPN, fused to one stride-4 map, with a standard ``FCNHead``;
  ``forward(x)["out"]`` are logits at the input size, no aux head.

Inputs are RGB scaled to [0, 1] and normalised with the ImageNet mean/std
(``IMAGE_MEAN``/``IMAGE_STD``), resized so the shorter side is ``min_size`` unless the
longer side would exceed ``max_size`` (the ``*_INPUT`` constants).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.segmentation import FCN
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.ops import MultiScaleRoIAlign

from engines.models.demo_classes import DEMO_CLASS_NAMES

__all__ = [
    "DEMO_CLASS_NAMES",
    "FCN_DEMO_INPUT",
    "FCN_DEMO_TRAIN_INPUT",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "MASKRCNN_DEMO_INPUT",
    "MASKRCNN_DEMO_TRAIN_INPUT",
    "TinyResNet",
    "build_fcn_demo",
    "build_maskrcnn_demo",
]

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

# Model input sizes at inference (shorter side -> min_size unless the longer side would
# exceed max_size; batches padded to a multiple of 32). The pipeline resizes frames to these.
# Both models were *trained* at a 320-pixel shorter side (``*_TRAIN_INPUT``); running the
# Mask R-CNN 1.3x larger at inference makes the smallest shapes (16 px in a 480-line frame)
# easier to find: held-out mask AP 0.79 -> 0.83, AP50 0.935 -> 0.955 (engines/weights/*.md).
MASKRCNN_DEMO_INPUT = {"min_size": 416, "max_size": 832}
FCN_DEMO_INPUT = {"min_size": 416, "max_size": 832}
MASKRCNN_DEMO_TRAIN_INPUT = {"min_size": 320, "max_size": 640}
FCN_DEMO_TRAIN_INPUT = {"min_size": 320, "max_size": 640}

FPN_CHANNELS = 64
STAGE_WIDTHS = (32, 48, 96, 128)  # strides 4, 8, 16, 32
STAGE_DEPTHS = (1, 2, 2, 1)


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs, BatchNorm, projection shortcut when needed)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    """A small ResNet: stem (stride 2) then four stages at strides 4, 8, 16, 32.

    Children run in order (stem, layer1..layer4) so torchvision's ``IntermediateLayerGetter``
    can tap the stage outputs.
    """

    def __init__(self, widths=STAGE_WIDTHS, depths=STAGE_DEPTHS, stem: int = 24):
        super().__init__()
        self.stem = _conv_bn_relu(3, stem, stride=2)
        cin = stem
        for k, (w, d) in enumerate(zip(widths, depths, strict=True), start=1):
            blocks = [BasicBlock(cin, w, stride=2)]
            blocks += [BasicBlock(w, w) for _ in range(d - 1)]
            setattr(self, f"layer{k}", nn.Sequential(*blocks))
            cin = w
        self.widths = tuple(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for k in range(1, len(self.widths) + 1):
            x = getattr(self, f"layer{k}")(x)
        return x


def _backbone_with_fpn() -> BackboneWithFPN:
    body = TinyResNet()
    return BackboneWithFPN(
        body,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=list(body.widths),
        out_channels=FPN_CHANNELS,
    )


def build_maskrcnn_demo(num_classes: int) -> MaskRCNN:
    """Small Mask R-CNN for the synthetic shapes (``num_classes`` includes background)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must include background and >= 1 class, got {num_classes}")
    backbone = _backbone_with_fpn()
    anchor_generator = AnchorGenerator(
        sizes=((16,), (32,), (64,), (128,), (256,)),
        aspect_ratios=((0.5, 1.0, 2.0),) * 5,
    )
    c = FPN_CHANNELS
    rep = 128
    model = MaskRCNN(
        backbone,
        num_classes=None,
        min_size=MASKRCNN_DEMO_INPUT["min_size"],
        max_size=MASKRCNN_DEMO_INPUT["max_size"],
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        rpn_anchor_generator=anchor_generator,
        rpn_head=RPNHead(c, anchor_generator.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=1000,
        rpn_pre_nms_top_n_test=500,
        rpn_post_nms_top_n_train=500,
        rpn_post_nms_top_n_test=200,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(c * 7 * 7, rep),
        box_predictor=FastRCNNPredictor(rep, num_classes),
        box_batch_size_per_image=128,
        box_detections_per_img=50,
        mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=14, sampling_ratio=2),
        mask_head=MaskRCNNHeads(c, [c, c, c, c], 1),
        mask_predictor=MaskRCNNPredictor(c, c, num_classes),
    )
    return model


class FusedFPN(nn.Module):
    """Backbone for the FCN: TinyResNet + FPN with a context module -> {"out": map}.

    P3, P4 and P5 are concatenated at stride 8, reduced by a 1x1 conv and passed through
    two dilated 3x3 convs (dilation 2 and 4) that widen the receptive field so every pixel
    sees the whole shape it belongs to; the result is upsampled to stride 4 and
    concatenated with P2 (detail), giving ``2 * FPN_CHANNELS`` channels at stride 4.
    """

    def __init__(self):
        super().__init__()
        c = FPN_CHANNELS
        self.body = _backbone_with_fpn()
        self.context = nn.Sequential(
            nn.Conv2d(3 * c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=2, dilation=2, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=4, dilation=4, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        )
        self.out_channels = 2 * c

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p2, p3, p4, p5 = list(self.body(x).values())[:4]  # strides 4..32 (pool level dropped)
        s8 = p3.shape[-2:]
        ctx = torch.cat(
            [
                p3,
                F.interpolate(p4, size=s8, mode="bilinear", align_corners=False),
                F.interpolate(p5, size=s8, mode="bilinear", align_corners=False),
            ],
            dim=1,
        )
        ctx = self.context(ctx)
        ctx = F.interpolate(ctx, size=p2.shape[-2:], mode="bilinear", align_corners=False)
        return OrderedDict(out=torch.cat([p2, ctx], dim=1))


def build_fcn_demo(num_classes: int) -> FCN:
    """Small FCN for the synthetic shapes: ``forward(x)["out"]`` = [B, num_classes, H, W]."""
    if num_classes < 2:
        raise ValueError(f"num_classes must include background and >= 1 class, got {num_classes}")
    backbone = FusedFPN()
    return FCN(backbone, FCNHead(backbone.out_channels, num_classes), aux_classifier=None)
