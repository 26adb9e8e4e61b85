"""The semantic models of the U-Net and FCN papers, as small demo models for the synthetic scenes.

* ``build_unet_demo``: a U-Net (Ronneberger et al., 2015) sized for the CPU. Contracting
  path: two 3x3 conv-BN-ReLU per level at ``UNET_WIDTHS`` channels (8, 16, 32, 64, 128, 128),
  2x2 max-pool between levels (stride 32 at the bottom). Expanding path: a 2x2 stride-2
  transposed conv halves the channels, the matching encoder features are **concatenated**
  (skip), then two 3x3 conv-BN-ReLU; a 1x1 conv classifies at the input resolution. Unlike
  the paper the convs are padded, so the output has the input's size and nothing is cropped
  but the odd extra row/column of an upsampled map (the pools use ``ceil_mode``).
* ``build_fcn32s_demo`` / ``build_fcn16s_demo`` / ``build_fcn8s_demo``: the FCN paper's
  skip architectures (Long et al., 2015) on one shared backbone, ``FCNSkip``: the fcn_demo
  ResNet body (``engines.models.demo.TinyResNet``, stages at strides 4/8/16/32) plus the
  paper's fc6/fc7 as convolutions (3x3 then 1x1, ``FC_WIDTH`` channels) and a 1x1 scorer.
  32s upsamples the stride-32 scores x32; 16s adds a 1x1 score of the stride-16 stage
  ("pool4") to the 2x-upsampled stride-32 scores and upsamples x16; 8s adds the stride-8
  stage ("pool3") the same way and upsamples x8.

  Upsampling, as in the paper: each 2x step is a learned transposed conv (kernel 4, stride
  2) *initialised* to bilinear interpolation; the final x32 / x16 / x8 step is *fixed*
  bilinear interpolation (the paper fixes that deconvolution to bilinear; interpolation is
  the same filter without its fall-off at the image border, and gives exactly the input
  size for any input). The new score layers of 16s / 8s are zero-initialised, so a 16s
  built from a 32s checkpoint (``init_from_coarser``) starts from the 32s scores (upsampled
  in two bilinear steps instead of one), as in the paper's staged training.

All return ``{"out": logits [B, num_classes, H, W]}`` at the input size, like torchvision's
segmentation models, so the split, export, backends and training treat them as ``fcn_demo``.
Inputs are normalised with the ImageNet mean / std (``engines.models.demo.IMAGE_MEAN``) and
padded to a multiple of 32 by the pipeline; other sizes work too (upsampled maps are cropped
to their skip's size).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from engines.models.demo import IMAGE_MEAN, IMAGE_STD, TinyResNet

__all__ = [
    "FCN_SKIP_DEMO_INPUT",
    "FCN_SKIP_DEMO_TRAIN_INPUT",
    "FCN_SKIP_MODELS",
    "FC_WIDTH",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "UNET_DEMO_INPUT",
    "UNET_DEMO_TRAIN_INPUT",
    "UNET_WIDTHS",
    "FCNSkip",
    "UNet",
    "bilinear_kernel",
    "build_fcn8s_demo",
    "build_fcn16s_demo",
    "build_fcn32s_demo",
    "build_unet_demo",
    "init_from_coarser",
]

# Shorter side 320 (the demo models' training size) at inference too: these are the CPU
# real-time variants; the registry reads these lazily, the pipeline pads to a multiple of 32.
UNET_DEMO_INPUT = {"min_size": 320, "max_size": 640}
UNET_DEMO_TRAIN_INPUT = {"min_size": 320, "max_size": 640}
FCN_SKIP_DEMO_INPUT = {"min_size": 320, "max_size": 640}
FCN_SKIP_DEMO_TRAIN_INPUT = {"min_size": 320, "max_size": 640}

# Six levels (strides 1..32): the stride-32 bottom sees a whole shape (up to a third of the
# 320-pixel input) at almost no cost (a 10x14 map). The full-resolution levels dominate the
# time, so they are thin: with 16 channels at the top (16..256) ONNX Runtime took 3.2x
# fcn_demo's time at 320x448 on 2 cores, with 8 it takes 1.4x.
UNET_WIDTHS = (8, 16, 32, 64, 128, 128)
FC_WIDTH = 256  # the FCN's fc6 / fc7 (4096 in the VGG-16 original)

#: registry name -> number of skips (0: 32s, 1: 16s adds pool4, 2: 8s adds pool3 too)
FCN_SKIP_MODELS: dict[str, int] = {"fcn32s_demo": 0, "fcn16s_demo": 1, "fcn8s_demo": 2}


def _check_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes must include background and >= 1 class, got {num_classes}")


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout))


def _crop_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` cut to ``ref``'s height and width (an upsampled map is never smaller, since
    every downsampling rounds up). A no-op slice on inputs padded to a multiple of 32."""
    return x[:, :, : ref.shape[2], : ref.shape[3]]


def bilinear_kernel(channels: int, kernel: int) -> torch.Tensor:
    """A [channels, channels, k, k] transposed-conv weight that upsamples each channel
    bilinearly (the FCN paper's initialisation; zero between different channels)."""
    factor = (kernel + 1) // 2
    center = factor - 1 if kernel % 2 == 1 else factor - 0.5
    og = torch.arange(kernel, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel, kernel)
    weight[range(channels), range(channels)] = filt[:, None] * filt[None, :]
    return weight


def _bilinear_up2(channels: int) -> nn.ConvTranspose2d:
    """A learned 2x upsampling (kernel 4, stride 2, padding 1: output exactly 2n) started
    at bilinear interpolation."""
    up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 4))
    return up


def _zero_score(cin: int, num_classes: int) -> nn.Conv2d:
    """A skip's 1x1 scorer, zero-initialised: adding it leaves the coarser net's output."""
    score = nn.Conv2d(cin, num_classes, 1)
    nn.init.zeros_(score.weight)
    nn.init.zeros_(score.bias)
    return score


class UNet(nn.Module):
    """The U-Net described in the module docstring: ``forward(x)["out"]`` = [B, K, H, W]."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = UNET_WIDTHS) -> None:
        super().__init__()
        _check_classes(num_classes)
        self.widths = tuple(widths)
        cins = (3, *self.widths[:-1])
        self.down = nn.ModuleList(
            _double_conv(c, w) for c, w in zip(cins, self.widths, strict=True)
        )
        # ceil_mode: an odd-sized map keeps its last row, so the way up can crop, never pad
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        pairs = list(zip(self.widths[1:], self.widths[:-1], strict=True))[::-1]  # deepest first
        self.up = nn.ModuleList(nn.ConvTranspose2d(hi, lo, 2, stride=2) for hi, lo in pairs)
        self.decode = nn.ModuleList(_double_conv(2 * lo, lo) for _, lo in pairs)
        self.classifier = nn.Conv2d(self.widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x [B, 3, H, W]`` (normalised) -> ``{"out": logits [B, K, H, W]}``."""
        skips = []
        y = x
        for level, block in enumerate(self.down):
            if level:
                y = self.pool(y)
            y = block(y)
            skips.append(y)
        for up, block, skip in zip(self.up, self.decode, skips[-2::-1], strict=True):
            y = block(torch.cat([skip, _crop_to(up(y), skip)], dim=1))
        return OrderedDict(out=self.classifier(y))


class FCNSkip(nn.Module):
    """FCN-32s / 16s / 8s (``skips`` 0 / 1 / 2) on the TinyResNet body (module docstring).

    Parameter names are shared across the three, so a coarser net's state dict is a subset
    of a finer one's (``init_from_coarser``).
    """

    def __init__(self, num_classes: int, skips: int) -> None:
        super().__init__()
        _check_classes(num_classes)
        if skips not in (0, 1, 2):
            raise ValueError(f"skips must be 0 (32s), 1 (16s) or 2 (8s), got {skips}")
        self.skips = skips
        self.backbone = TinyResNet()
        w8, w16, w32 = self.backbone.widths[1:]
        # fc6 / fc7 as convolutions (the paper's "convolutionalised" classifier)
        self.fc = nn.Sequential(
            *_conv_bn_relu(w32, FC_WIDTH), *_conv_bn_relu(FC_WIDTH, FC_WIDTH, 1)
        )
        self.score_fr = nn.Conv2d(FC_WIDTH, num_classes, 1)
        if skips >= 1:
            self.upscore2 = _bilinear_up2(num_classes)
            self.score_pool4 = _zero_score(w16, num_classes)
        if skips >= 2:
            self.upscore_pool4 = _bilinear_up2(num_classes)
            self.score_pool3 = _zero_score(w8, num_classes)

    @property
    def output_stride(self) -> int:
        """32, 16 or 8: the stride of the scores that are upsampled to the input size."""
        return 32 >> self.skips

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stage outputs at strides 8, 16 and 32 ("pool3", "pool4", "pool5")."""
        body = self.backbone
        s4 = body.layer1(body.stem(x))
        s8 = body.layer2(s4)
        s16 = body.layer3(s8)
        return s8, s16, body.layer4(s16)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x [B, 3, H, W]`` (normalised) -> ``{"out": logits [B, K, H, W]}``."""
        s8, s16, s32 = self._features(x)
        score = self.score_fr(self.fc(s32))
        if self.skips >= 1:
            score = _crop_to(self.upscore2(score), s16) + self.score_pool4(s16)
        if self.skips >= 2:
            score = _crop_to(self.upscore_pool4(score), s8) + self.score_pool3(s8)
        out = F.interpolate(score, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return OrderedDict(out=out)


def build_unet_demo(num_classes: int) -> UNet:
    """Small U-Net for the synthetic scenes (``num_classes`` includes background)."""
    return UNet(num_classes)


def build_fcn32s_demo(num_classes: int) -> FCNSkip:
    """FCN-32s on the small ResNet body (``num_classes`` includes background)."""
    return FCNSkip(num_classes, FCN_SKIP_MODELS["fcn32s_demo"])


def build_fcn16s_demo(num_classes: int) -> FCNSkip:
    """FCN-16s: FCN-32s plus the stride-16 skip (zero-initialised scorer)."""
    return FCNSkip(num_classes, FCN_SKIP_MODELS["fcn16s_demo"])


def build_fcn8s_demo(num_classes: int) -> FCNSkip:
    """FCN-8s: FCN-16s plus the stride-8 skip (zero-initialised scorer)."""
    return FCNSkip(num_classes, FCN_SKIP_MODELS["fcn8s_demo"])


def init_from_coarser(model: FCNSkip, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Load a coarser (or the same) FCN's ``state_dict`` into ``model``, the paper's staged
    training: 16s from a trained 32s, 8s from a trained 16s.

    Every tensor of the source must exist in ``model`` with the same shape (so the class
    counts must match); the layers the source lacks keep their initialisation (bilinear
    upsampling, zero scorers). Returns the names of those new tensors. Raises
    ``ValueError`` when the source does not fit (a finer net, another model, other classes).
    """
    if not isinstance(model, FCNSkip):
        raise ValueError(f"{type(model).__name__} is not an FCN-32s/16s/8s")
    target = model.state_dict()
    for key, value in state_dict.items():
        if key not in target:
            raise ValueError(
                f"the source has '{key}', which FCN-{model.output_stride}s lacks "
                "(initialise from a coarser FCN: 16s from 32s, 8s from 16s)"
            )
        if tuple(target[key].shape) != tuple(value.shape):
            raise ValueError(
                f"'{key}' has shape {tuple(value.shape)} in the source, "
                f"{tuple(target[key].shape)} here (another class count?)"
            )
    model.load_state_dict(state_dict, strict=False)
    return [k for k in target if k not in state_dict]
