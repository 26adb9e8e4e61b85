"""paste_masks against torchvision's paste_masks_in_image (the reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.ops.paste import (
    MaskCrop,
    crop_to_full,
    expand_paste_boxes,
    paste_masks,
    paste_masks_reference,
)

FRAME_SIZES = [(719, 1279), (240, 320), (97, 61)]


def _random_boxes(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """Boxes of log-uniform size from sub-pixel to twice the frame, centres around it."""
    cx = rng.uniform(-0.15 * width, 1.15 * width, n)
    cy = rng.uniform(-0.15 * height, 1.15 * height, n)
    bw = np.exp(rng.uniform(np.log(0.2), np.log(2.0 * width), n))
    bh = np.exp(rng.uniform(np.log(0.2), np.log(2.0 * height), n))
    return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)


def _reference_safe(boxes: torch.Tensor, height: int, width: int, m: int = 28) -> torch.Tensor:
    """Boxes torchvision's paste can handle: it raises for boxes wholly outside the frame."""
    e = expand_paste_boxes(boxes, m)
    return (e[:, 0] < width) & (e[:, 1] < height) & (e[:, 2] >= -1) & (e[:, 3] >= -1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _compare(
    probs: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], **kw
) -> tuple[int, int, float]:
    crops = paste_masks(probs, boxes, size, **kw)
    ref = paste_masks_reference(probs, boxes, size)
    assert len(crops) == probs.shape[0]
    exact, worst = 0, 1.0
    for crop, expected in zip(crops, ref, strict=True):
        assert crop.mask.dtype == bool
        got = crop_to_full(crop, *size)
        iou = _iou(got, expected)
        worst = min(worst, iou)
        exact += int(np.array_equal(got, expected))
    return len(crops), exact, worst


def test_paste_matches_torchvision_random_cases() -> None:
    rng = np.random.default_rng(1234)
    total = exact = 0
    worst = 1.0
    for case in range(12):
        height, width = FRAME_SIZES[case % len(FRAME_SIZES)]
        n = 24
        probs = torch.from_numpy(rng.random((n, 28, 28), dtype=np.float32))
        if case % 2:
            # Smooth, mask-like probabilities as a real mask head produces.
            probs = torch.sigmoid(8 * F.avg_pool2d(probs[:, None] - 0.5, 5, 1, 2)[:, 0])
        boxes = torch.from_numpy(_random_boxes(rng, n, height, width))
        ok = _reference_safe(boxes, height, width)
        # Small chunk budget on half the cases so multi-chunk planning is exercised.
        kw = {"chunk_pixels": 20_000} if case % 3 == 0 else {}
        t, e, w = _compare(probs[ok], boxes[ok], (height, width), **kw)
        total, exact, worst = total + t, exact + e, min(worst, w)
    print(f"paste_masks vs torchvision: {exact}/{total} masks identical, worst IoU {worst:.5f}")
    assert total >= 200
    assert worst >= 0.99
    # Rounding differences only flip pixels within ~1e-6 of the threshold.
    assert exact >= 0.95 * total


def test_paste_chunking_does_not_change_result() -> None:
    rng = np.random.default_rng(7)
    height, width = 240, 320
    probs = torch.from_numpy(rng.random((30, 28, 28), dtype=np.float32))
    boxes = torch.from_numpy(_random_boxes(rng, 30, height, width))
    big = paste_masks(probs, boxes, (height, width))
    tiny = paste_masks(probs, boxes, (height, width), chunk_pixels=1)
    for a, b in zip(big, tiny, strict=True):
        assert (a.x0, a.y0) == (b.x0, b.y0)
        assert np.array_equal(a.mask, b.mask)


def test_paste_edge_cases() -> None:
    height, width = 50, 60
    probs = torch.full((5, 28, 28), 0.9)
    boxes = torch.tensor(
        [
            [10.2, 10.2, 10.7, 10.6],  # smaller than a pixel
            [-30.0, -30.0, 100.0, 100.0],  # covers the whole frame
            [0.0, 0.0, 59.0, 49.0],  # exactly the frame
            [200.0, 10.0, 230.0, 20.0],  # wholly right of the frame
            [10.0, -50.0, 20.0, -20.0],  # wholly above the frame
        ]
    )
    crops = paste_masks(probs, boxes, (height, width))
    ref = paste_masks_reference(probs[:3], boxes[:3], (height, width))
    for crop, expected in zip(crops[:3], ref, strict=True):
        assert np.array_equal(crop_to_full(crop, height, width), expected)
    assert crops[0].mask.sum() >= 1
    assert crops[1].mask.shape == (height, width) and crops[1].mask.all()
    for crop in crops[3:]:
        assert crop.mask.size == 0
        assert not crop_to_full(crop, height, width).any()


def test_paste_crops_stay_inside_frame_and_threshold_is_used() -> None:
    rng = np.random.default_rng(3)
    height, width = 719, 1279
    probs = torch.from_numpy(rng.random((40, 28, 28), dtype=np.float32))
    boxes = torch.from_numpy(_random_boxes(rng, 40, height, width))
    for threshold in (0.2, 0.8):
        crops = paste_masks(probs, boxes, (height, width), threshold=threshold)
        ok = _reference_safe(boxes, height, width)
        ref = paste_masks_reference(probs[ok], boxes[ok], (height, width), threshold)
        got = [c for c, keep in zip(crops, ok.tolist(), strict=True) if keep]
        for crop, expected in zip(got, ref, strict=True):
            assert _iou(crop_to_full(crop, height, width), expected) >= 0.99
        for crop in crops:
            assert 0 <= crop.x0 <= crop.x1 <= width
            assert 0 <= crop.y0 <= crop.y1 <= height


def test_paste_empty_and_shapes() -> None:
    assert paste_masks(torch.zeros((0, 28, 28)), torch.zeros((0, 4)), (10, 10)) == []
    empty_ref = paste_masks_reference(torch.zeros((0, 28, 28)), torch.zeros((0, 4)), (10, 10))
    assert empty_ref.shape == (0, 10, 10)
    # [N, 1, M, M] (Mask R-CNN's layout) is accepted too.
    probs = torch.rand((2, 1, 28, 28))
    boxes = torch.tensor([[1.0, 2.0, 8.0, 9.0], [0.0, 0.0, 4.0, 4.0]])
    crops = paste_masks(probs, boxes, (12, 12))
    ref = paste_masks_reference(probs, boxes, (12, 12))
    assert all(np.array_equal(crop_to_full(c, 12, 12), r) for c, r in zip(crops, ref, strict=True))
    with pytest.raises(ValueError):
        paste_masks(torch.rand((2, 28, 28)), torch.zeros((3, 4)), (10, 10))


def test_crop_to_full() -> None:
    crop = MaskCrop(x0=2, y0=1, mask=np.array([[True, False], [False, True]]))
    full = crop_to_full(crop, 4, 5)
    assert full.sum() == 2 and full[1, 2] and full[2, 3]
    assert (crop.x1, crop.y1) == (4, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_paste_on_cuda_matches_cpu_reference() -> None:
    rng = np.random.default_rng(11)
    height, width = 719, 1279
    probs = torch.from_numpy(rng.random((60, 28, 28), dtype=np.float32))
    boxes = torch.from_numpy(_random_boxes(rng, 60, height, width))
    ok = _reference_safe(boxes, height, width)
    probs, boxes = probs[ok], boxes[ok]
    crops = paste_masks(probs.cuda(), boxes.cuda(), (height, width), chunk_pixels=200_000)
    ref = paste_masks_reference(probs, boxes, (height, width))
    for crop, expected in zip(crops, ref, strict=True):
        assert _iou(crop_to_full(crop, height, width), expected) >= 0.99


def test_expanded_boxes_match_torchvision() -> None:
    from torchvision.models.detection.roi_heads import expand_boxes

    rng = np.random.default_rng(5)
    boxes = torch.from_numpy(_random_boxes(rng, 500, 719, 1279))
    expected = expand_boxes(boxes, 30 / 28).to(torch.int64)
    assert torch.equal(expand_paste_boxes(boxes, 28), expected)
