"""The model split every backend runs: compiled dense parts, eager data-dependent glue.

A torchvision Mask R-CNN is cut into three graphs with static structure and only dynamic
sizes (batch, height, width, number of RoIs), which export cleanly to ONNX and build into
TensorRT engines without plugins:

* ``DenseHead`` (engine A): backbone + FPN + RPN head convolutions.
  ``images [B, 3, H, W]`` -> ``(*features, *objectness, *bbox_deltas)``: the FPN maps in
  the backbone's key order (``feature_names``), then the RPN head's raw per-level
  objectness ``[B, A, h, w]`` and deltas ``[B, 4A, h, w]``.
* ``BoxHead`` (engine B): ``TwoMLPHead`` (or the v2 conv head) + ``FastRCNNPredictor`` on
  pooled RoIs ``[R, C, 7, 7]`` -> ``class_logits [R, num_classes]``,
  ``box_regression [R, 4 * num_classes]``.
* ``MaskHead`` (engine C): mask head + predictor on ``[K, C, 14, 14]`` ->
  ``mask_logits [K, num_classes, 28, 28]``.

Everything between them stays eager, on the device of the batch, using the model's own
torchvision modules and settings (so thresholds set on ``model.rpn`` / ``model.roi_heads``
apply): anchors, top-k, box decoding, clipping, batched NMS (``rpn.filter_proposals``),
``MultiScaleRoIAlign`` for boxes and masks, detection postprocessing (softmax, score
threshold, class-aware NMS) and the sigmoid + class gather of the masks.

``SplitMaskRCNN(model, dense=..., box=..., mask=...)`` takes any callables with the I/O
above, so the eager PyTorch modules, ONNX Runtime sessions and TensorRT engines all share
this one piece of glue. Semantic models (FCN, DeepLabV3, LR-ASPP, the demo FCN) are one
graph: ``SemanticHead`` returns the ``"out"`` logits, or with ``argmax=True`` the uint8
class map.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import maskrcnn_inference
from torchvision.models.detection.rpn import concat_box_prediction_layers

from engines.outputs import InstanceOutput, SemanticOutput

__all__ = [
    "BoxHead",
    "DenseHead",
    "DenseFn",
    "HeadFn",
    "MaskHead",
    "SemanticHead",
    "SplitMaskRCNN",
    "SplitSemantic",
    "configure_detection",
    "feature_names_of",
    "is_mask_rcnn",
]

#: Engine A as a callable: images [B, 3, H, W] -> (*features, *objectness, *bbox_deltas).
DenseFn = Callable[[Tensor], Sequence[Tensor]]
#: Engines B and C as callables: one batch of pooled RoIs -> the head's outputs.
HeadFn = Callable[[Tensor], Sequence[Tensor]]


def is_mask_rcnn(model: nn.Module) -> bool:
    """True for a torchvision-style Mask R-CNN (backbone, rpn and roi_heads with a mask head)."""
    heads = getattr(model, "roi_heads", None)
    return (
        hasattr(model, "backbone")
        and hasattr(model, "rpn")
        and heads is not None
        and getattr(heads, "mask_head", None) is not None
        and getattr(heads, "mask_predictor", None) is not None
    )


def feature_names_of(model: nn.Module, probe_size: int = 64) -> tuple[str, ...]:
    """The FPN output keys of ``model.backbone`` in order (e.g. ``("0", "1", "2", "3", "pool")``).

    Found by running the backbone once on a tiny zero image (a few milliseconds).
    """
    param = next(model.backbone.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    with torch.inference_mode():
        out = model.backbone(torch.zeros(1, 3, probe_size, probe_size, device=device))
    if isinstance(out, Tensor):
        return ("0",)
    return tuple(out.keys())


def configure_detection(
    model: nn.Module,
    *,
    box_score_thresh: float | None = None,
    box_nms_thresh: float | None = None,
    box_detections_per_img: int | None = None,
    rpn_pre_nms_top_n_test: int | None = None,
    rpn_post_nms_top_n_test: int | None = None,
) -> dict[str, float | int]:
    """Apply detection settings to a Mask R-CNN (``None`` keeps the model's own) and return
    the settings in effect. Backends reach it through
    ``engines.backends.options.DetectionOptions.apply``, which validates the values first."""
    heads, rpn = model.roi_heads, model.rpn
    if box_score_thresh is not None:
        heads.score_thresh = float(box_score_thresh)
    if box_nms_thresh is not None:
        heads.nms_thresh = float(box_nms_thresh)
    if box_detections_per_img is not None:
        heads.detections_per_img = int(box_detections_per_img)
    if rpn_pre_nms_top_n_test is not None:
        rpn._pre_nms_top_n["testing"] = int(rpn_pre_nms_top_n_test)
    if rpn_post_nms_top_n_test is not None:
        rpn._post_nms_top_n["testing"] = int(rpn_post_nms_top_n_test)
    return {
        "box_score_thresh": heads.score_thresh,
        "box_nms_thresh": heads.nms_thresh,
        "box_detections_per_img": heads.detections_per_img,
        "rpn_pre_nms_top_n_test": rpn._pre_nms_top_n["testing"],
        "rpn_post_nms_top_n_test": rpn._post_nms_top_n["testing"],
    }


class DenseHead(nn.Module):
    """Engine A: backbone + FPN + RPN head convolutions of a Mask R-CNN."""

    def __init__(self, model: nn.Module, feature_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.rpn_head = model.rpn.head
        #: FPN keys, in the order the feature outputs come.
        self.feature_names: tuple[str, ...] = tuple(feature_names or feature_names_of(model))

    @property
    def num_levels(self) -> int:
        """Number of feature levels (and of objectness / delta outputs)."""
        return len(self.feature_names)

    def output_names(self) -> list[str]:
        """Graph output names: ``feat_<key>``, ``objectness_<i>``, ``bbox_deltas_<i>``."""
        n = self.num_levels
        return (
            [f"feat_{k}" for k in self.feature_names]
            + [f"objectness_{i}" for i in range(n)]
            + [f"bbox_deltas_{i}" for i in range(n)]
        )

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """``images [B, 3, H, W]`` -> ``(*features, *objectness, *bbox_deltas)``."""
        out = self.backbone(images)
        feats = [out] if isinstance(out, Tensor) else [out[k] for k in self.feature_names]
        objectness, deltas = self.rpn_head(feats)
        return (*feats, *objectness, *deltas)


class BoxHead(nn.Module):
    """Engine B: box head + box predictor on pooled RoIs [R, C, 7, 7]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.box_head = model.roi_heads.box_head
        self.box_predictor = model.roi_heads.box_predictor

    def forward(self, rois: Tensor) -> tuple[Tensor, Tensor]:
        """``rois [R, C, 7, 7]`` -> ``(class_logits [R, N], box_regression [R, 4N])``."""
        class_logits, box_regression = self.box_predictor(self.box_head(rois))
        return class_logits, box_regression


class MaskHead(nn.Module):
    """Engine C: mask head + mask predictor on pooled RoIs [K, C, 14, 14]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.mask_head = model.roi_heads.mask_head
        self.mask_predictor = model.roi_heads.mask_predictor

    def forward(self, rois: Tensor) -> tuple[Tensor]:
        """``rois [K, C, 14, 14]`` -> ``(mask_logits [K, N, 28, 28],)``."""
        return (self.mask_predictor(self.mask_head(rois)),)


class SemanticHead(nn.Module):
    """The one graph of a semantic model: ``"out"`` logits at input size, aux head off.

    With ``argmax=True`` the graph ends in an argmax over classes and returns a uint8
    class map [B, H, W] (one byte per pixel instead of C floats).
    """

    def __init__(self, model: nn.Module, argmax: bool = False) -> None:
        super().__init__()
        self.model = model
        self.argmax = bool(argmax)
        if getattr(model, "aux_classifier", None) is not None:
            model.aux_classifier = None  # training-only head: never part of inference

    def forward(self, images: Tensor) -> Tensor:
        """``images [B, 3, H, W]`` -> logits ``[B, C, H, W]`` or class map ``[B, H, W]`` uint8."""
        out = self.model(images)
        logits = out["out"] if isinstance(out, dict) else out
        if logits.shape[-2:] != images.shape[-2:]:  # a head that does not upsample itself
            logits = F.interpolate(
                logits, size=images.shape[-2:], mode="bilinear", align_corners=False
            )
        if self.argmax:
            return logits.argmax(dim=1).to(torch.uint8)
        return logits


def _first(outputs: Sequence[Tensor] | Tensor) -> Tensor:
    return outputs if isinstance(outputs, Tensor) else outputs[0]


class SplitMaskRCNN:
    """Mask R-CNN inference as engines A / B / C plus the eager glue between them.

    ``model`` is a torchvision ``MaskRCNN`` (eval mode): its ``rpn`` and ``roi_heads``
    provide the anchor generator, box coders, RoI poolers and every threshold, read at
    call time. ``dense``, ``box`` and ``mask`` default to the model's own modules
    (``DenseHead`` / ``BoxHead`` / ``MaskHead``); pass ONNX Runtime or TensorRT callables
    with the same I/O to run those parts compiled. Only the glue then needs the model, so a
    compiled backend may free the heavy submodules with :meth:`drop_dense_weights`.

    ``__call__(batch, image_sizes)`` returns one ``InstanceOutput`` per image, in
    model-input coordinates, exactly like running ``backbone``, ``rpn`` and ``roi_heads``
    of the whole model.
    """

    def __init__(
        self,
        model: nn.Module,
        dense: DenseFn | None = None,
        box: HeadFn | None = None,
        mask: HeadFn | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> None:
        if not is_mask_rcnn(model):
            raise TypeError(f"{type(model).__name__} is not a torchvision-style Mask R-CNN")
        self.model = model.eval()
        self.rpn = model.rpn
        self.roi_heads = model.roi_heads
        self.feature_names: tuple[str, ...] = tuple(feature_names or feature_names_of(model))
        self.dense: DenseFn = dense or DenseHead(model, self.feature_names).eval()
        self.box: HeadFn = box or BoxHead(model).eval()
        self.mask: HeadFn = mask or MaskHead(model).eval()

    @property
    def num_levels(self) -> int:
        """Number of FPN levels engine A returns."""
        return len(self.feature_names)

    def drop_dense_weights(self) -> None:
        """Free the modules that compiled engines replace (backbone, RPN head, box/mask heads)."""
        self.model.backbone = nn.Identity()
        self.rpn.head = nn.Identity()
        self.roi_heads.box_head = nn.Identity()
        self.roi_heads.box_predictor = nn.Identity()
        self.roi_heads.mask_head = nn.Identity()
        self.roi_heads.mask_predictor = nn.Identity()

    def __call__(self, batch: Tensor, image_sizes: list[tuple[int, int]]) -> list[InstanceOutput]:
        """Run a padded batch [B, 3, H, W] with unpadded ``image_sizes``."""
        with torch.inference_mode():
            return self._run(batch, [(int(h), int(w)) for h, w in image_sizes])

    # ----------------------------------------------------------------------------- glue

    def _run(self, batch: Tensor, sizes: list[tuple[int, int]]) -> list[InstanceOutput]:
        outputs = list(self.dense(batch))
        n = self.num_levels
        if len(outputs) != 3 * n:
            raise RuntimeError(f"dense engine returned {len(outputs)} outputs, expected {3 * n}")
        features = OrderedDict(zip(self.feature_names, outputs[:n], strict=True))
        proposals = self._proposals(batch, sizes, features, outputs[n : 2 * n], outputs[2 * n :])
        boxes, scores, labels = self._detections(features, proposals, sizes)
        masks = self._masks(features, boxes, labels, sizes)
        return [
            InstanceOutput(boxes=b, scores=s, labels=lab, mask_probs=m)
            for b, s, lab, m in zip(boxes, scores, labels, masks, strict=True)
        ]

    def _proposals(
        self,
        batch: Tensor,
        sizes: list[tuple[int, int]],
        features: OrderedDict[str, Tensor],
        objectness: list[Tensor],
        deltas: list[Tensor],
    ) -> list[Tensor]:
        """RegionProposalNetwork.forward after its head: anchors, decode, top-k, NMS."""
        rpn = self.rpn
        feats = list(features.values())
        anchors = rpn.anchor_generator(ImageList(batch, sizes), feats)
        per_level = [int(o.shape[1] * o.shape[2] * o.shape[3]) for o in objectness]
        flat_obj, flat_deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(flat_deltas, anchors).view(len(anchors), -1, 4)
        boxes, _scores = rpn.filter_proposals(proposals, flat_obj, sizes, per_level)
        return boxes

    def _detections(
        self,
        features: OrderedDict[str, Tensor],
        proposals: list[Tensor],
        sizes: list[tuple[int, int]],
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Box RoIAlign -> engine B -> RoIHeads.postprocess_detections."""
        heads = self.roi_heads
        total = sum(int(p.shape[0]) for p in proposals)
        if total == 0:
            empty = proposals[0].new_zeros((0, 4)) if proposals else None
            return (
                [empty.clone() for _ in proposals],  # type: ignore[union-attr]
                [p.new_zeros((0,)) for p in proposals],
                [torch.zeros(0, dtype=torch.int64, device=p.device) for p in proposals],
            )
        rois = heads.box_roi_pool(features, proposals, sizes)
        class_logits, box_regression = self.box(rois)[:2]
        return heads.postprocess_detections(class_logits, box_regression, proposals, sizes)

    def _masks(
        self,
        features: OrderedDict[str, Tensor],
        boxes: list[Tensor],
        labels: list[Tensor],
        sizes: list[tuple[int, int]],
    ) -> list[Tensor]:
        """Mask RoIAlign -> engine C -> sigmoid and class gather: [K, M, M] per image."""
        heads = self.roi_heads
        total = sum(int(b.shape[0]) for b in boxes)
        if total == 0:
            m = self._mask_size()
            return [b.new_zeros((0, m, m)) for b in boxes]
        rois = heads.mask_roi_pool(features, boxes, sizes)
        logits = _first(self.mask(rois))
        return [p[:, 0] for p in maskrcnn_inference(logits, labels)]

    def _mask_size(self) -> int:
        """Side M of the mask head's output (2 x the mask RoIAlign output: 28 for torchvision)."""
        pool = self.roi_heads.mask_roi_pool
        size = getattr(pool, "output_size", (14, 14))
        side = size[0] if isinstance(size, (tuple, list)) else int(size)
        return 2 * int(side)


class SplitSemantic:
    """A semantic model as one graph plus the per-image crop of the class map.

    ``head`` is a callable images [B, 3, H, W] -> logits [B, C, H, W] (``argmax=False``) or
    a class map [B, H, W] of integers (``argmax=True``): the eager ``SemanticHead``, an ONNX
    Runtime session or a TensorRT engine.
    """

    def __init__(self, head: Callable[[Tensor], Tensor | Sequence[Tensor]], argmax: bool) -> None:
        self.head = head
        self.argmax = bool(argmax)

    def __call__(self, batch: Tensor, image_sizes: list[tuple[int, int]]) -> list[SemanticOutput]:
        """One uint8 class map [h, w] per image (its unpadded area)."""
        with torch.inference_mode():
            out = _first(self.head(batch))
            if self.argmax:
                classes = out.to(torch.uint8)
            else:
                if out.shape[-2:] != batch.shape[-2:]:
                    out = F.interpolate(
                        out, size=batch.shape[-2:], mode="bilinear", align_corners=False
                    )
                classes = out.argmax(dim=1).to(torch.uint8)
            return [
                SemanticOutput(class_map=classes[i, : int(h), : int(w)].contiguous())
                for i, (h, w) in enumerate(image_sizes)
            ]
