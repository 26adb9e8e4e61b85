"""The model split (engines.split) in eager PyTorch equals the whole torchvision model.

Random weights at small input sizes keep this CPU-only and quick; the demo model uses its
trained checkpoint when one is there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models.detection.image_list import ImageList

from engines.backends.torch_backend import TorchBackend, build_spec
from engines.registry import get_model_entry
from engines.split import (
    BoxHead,
    DenseHead,
    MaskHead,
    SemanticHead,
    SplitMaskRCNN,
    SplitSemantic,
    configure_detection,
    feature_names_of,
    is_mask_rcnn,
)
from engines.transform import prepare_batch
from engines.weights import build_model, demo_weights_path, resolve_weights


def _demo_weights(name: str) -> str:
    return "demo" if demo_weights_path(name).is_file() else "random"


def _images(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth gradients with flat blobs: more RPN structure than noise."""
    gen = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(n):
        img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 80)], -1).astype(np.uint8)
        for _ in range(3):
            y0, x0 = gen.integers(0, h // 2), gen.integers(0, w // 2)
            img[y0 : y0 + h // 3, x0 : x0 + w // 3] = gen.integers(0, 256, size=3)
        out.append(img)
    return out


def _whole(model, batch, sizes):
    """torchvision's own path: backbone -> rpn -> roi_heads (as TorchBackend runs it)."""
    with torch.inference_mode():
        feats = model.backbone(batch)
        proposals, _ = model.rpn(ImageList(batch, sizes), feats)
        dets, _ = model.roi_heads(feats, proposals, sizes)
    return dets


def _assert_same(dets, outs) -> int:
    total = 0
    for det, out in zip(dets, outs, strict=True):
        assert out.boxes.shape == det["boxes"].shape
        torch.testing.assert_close(out.boxes, det["boxes"], rtol=0, atol=1e-5)
        torch.testing.assert_close(out.scores, det["scores"], rtol=0, atol=1e-6)
        assert torch.equal(out.labels, det["labels"])
        torch.testing.assert_close(out.mask_probs, det["masks"][:, 0], rtol=0, atol=1e-6)
        total += int(out.boxes.shape[0])
    return total


@pytest.mark.parametrize(
    ("name", "size"),
    [("maskrcnn_resnet50_fpn", (128, 192)), ("maskrcnn_demo", (160, 224))],
)
def test_split_equals_whole_model(name: str, size: tuple[int, int]) -> None:
    weights = _demo_weights(name) if name.endswith("demo") else "random"
    loaded = resolve_weights(name, weights)
    model = build_model(loaded)
    configure_detection(
        model, box_score_thresh=0.01, rpn_post_nms_top_n_test=100, box_detections_per_img=20
    )
    spec = build_spec(get_model_entry(name), loaded, model, min_size=size[0], max_size=size[1])
    batch, sizes = prepare_batch(_images(2, 120, 170), spec)
    dets = _whole(model, batch, sizes)
    outs = SplitMaskRCNN(model)(batch, sizes)
    assert _assert_same(dets, outs) > 0, "no detections: the comparison would be empty"
    for out in outs:
        assert out.mask_probs.shape[1:] == (28, 28)


def test_parts_have_the_documented_io() -> None:
    model = build_model(resolve_weights("maskrcnn_demo", "random"))
    names = feature_names_of(model)
    assert names == ("0", "1", "2", "3", "pool")
    dense = DenseHead(model)
    outs = dense(torch.zeros(2, 3, 96, 128))
    assert len(outs) == 3 * len(names) == len(dense.output_names())
    assert outs[0].shape == (2, 64, 24, 32)  # stride 4
    assert outs[len(names)].shape[:2] == (2, 3)  # objectness: A = 3 anchors
    assert outs[2 * len(names)].shape[:2] == (2, 12)  # deltas: 4A
    logits, deltas = BoxHead(model)(torch.zeros(5, 64, 7, 7))
    assert logits.shape == (5, 7) and deltas.shape == (5, 28)
    (masks,) = MaskHead(model)(torch.zeros(4, 64, 14, 14))
    assert masks.shape == (4, 7, 28, 28)
    assert is_mask_rcnn(model)
    assert not is_mask_rcnn(build_model(resolve_weights("fcn_demo", "random")))


def test_split_with_no_detections_returns_empty_outputs() -> None:
    model = build_model(resolve_weights("maskrcnn_demo", "random"))
    configure_detection(model, box_score_thresh=0.999)
    batch = torch.zeros(2, 3, 96, 128)
    outs = SplitMaskRCNN(model)(batch, [(96, 128), (90, 100)])
    for out in outs:
        assert out.boxes.shape == (0, 4)
        assert out.scores.shape == (0,) and out.labels.shape == (0,)
        assert out.labels.dtype == torch.int64
        assert out.mask_probs.shape == (0, 28, 28)


def test_split_takes_swapped_callables() -> None:
    """The glue only sees the callables' outputs: wrapping them changes nothing."""
    model = build_model(resolve_weights("maskrcnn_demo", "random"))
    configure_detection(model, box_score_thresh=0.0, box_detections_per_img=10)
    calls = {"dense": 0, "box": 0, "mask": 0}
    dense, box, mask = DenseHead(model), BoxHead(model), MaskHead(model)

    def counted(key, fn):
        def run(x):
            calls[key] += 1
            return [t.clone() for t in fn(x)]

        return run

    split = SplitMaskRCNN(
        model, dense=counted("dense", dense), box=counted("box", box), mask=counted("mask", mask)
    )
    batch = torch.randn(2, 3, 96, 128)
    sizes = [(96, 128), (96, 128)]
    got = split(batch, sizes)
    ref = SplitMaskRCNN(model)(batch, sizes)
    assert calls == {"dense": 1, "box": 1, "mask": 1}  # one launch per engine per batch
    for a, b in zip(got, ref, strict=True):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.mask_probs, b.mask_probs)


def test_configure_detection_reports_settings() -> None:
    model = build_model(resolve_weights("maskrcnn_demo", "random"))
    opts = configure_detection(model, box_nms_thresh=0.3, rpn_pre_nms_top_n_test=77)
    assert opts["box_nms_thresh"] == 0.3 and model.roi_heads.nms_thresh == 0.3
    assert opts["rpn_pre_nms_top_n_test"] == 77 and model.rpn.pre_nms_top_n() == 77
    assert opts["box_detections_per_img"] == 50  # the demo model's own setting, kept


@pytest.mark.parametrize("argmax", [False, True])
# FCN-8s holds every operator of 32s and 16s (same backbone, one more skip each)
@pytest.mark.parametrize("name", ["fcn_demo", "unet_demo", "fcn8s_demo"])
def test_semantic_head_equals_torch_backend(name: str, argmax: bool) -> None:
    weights = _demo_weights(name)
    backend = TorchBackend(name, weights, min_size=96, max_size=160)
    batch, sizes = prepare_batch(_images(2, 90, 150, seed=3), backend.spec)
    ref = backend.infer(batch, sizes)
    model = build_model(resolve_weights(name, weights))
    head = SemanticHead(model, argmax=argmax).eval()
    with torch.inference_mode():
        raw = head(batch)
    assert raw.dtype == (torch.uint8 if argmax else torch.float32)
    got = SplitSemantic(head, argmax=argmax)(batch, sizes)
    for a, b, (h, w) in zip(got, ref, sizes, strict=True):
        assert a.class_map.shape == (h, w) and a.class_map.dtype == torch.uint8
        assert torch.equal(a.class_map, b.class_map)
