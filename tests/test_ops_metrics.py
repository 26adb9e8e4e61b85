"""FCN-paper semantic metrics against hand-computed confusion matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.ops.metrics import accumulate, confusion_matrix, semantic_scores

GT_A = np.array([[0, 0, 1], [1, 2, 2]], dtype=np.uint8)
PRED_A = np.array([[0, 1, 1], [1, 2, 0]], dtype=np.uint8)


def test_three_class_image_by_hand() -> None:
    conf = confusion_matrix(GT_A, PRED_A, 3)
    # n_00 = 1, n_01 = 1 (gt 0); n_11 = 2 (gt 1); n_22 = 1, n_20 = 1 (gt 2).
    assert conf.dtype == np.int64
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    s = semantic_scores(conf)
    # t = [2, 2, 2]; predicted column sums = [2, 3, 1].
    assert s["pixel_accuracy"] == pytest.approx(4 / 6)
    assert s["per_class_accuracy"] == pytest.approx([1 / 2, 2 / 2, 1 / 2])
    assert s["mean_accuracy"] == pytest.approx(2 / 3)
    # IoU_i = n_ii / (t_i + sum_j n_ji - n_ii): 1/(2+2-1), 2/(2+3-2), 1/(2+1-1).
    assert s["per_class_iou"] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert s["mean_iou"] == pytest.approx(0.5)
    assert s["frequency_weighted_iou"] == pytest.approx((2 / 3 + 4 / 3 + 1) / 6)


def test_ignore_index_and_absent_classes_by_hand() -> None:
    gt = np.array([[0, 0, 255], [1, 1, 1]], dtype=np.uint8)
    pred = np.array([[0, 2, 1], [1, 1, 0]], dtype=np.uint8)
    conf = confusion_matrix(gt, pred, 4)
    assert conf.tolist() == [[1, 0, 1, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    s = semantic_scores(conf)
    assert s["pixel_accuracy"] == pytest.approx(3 / 5)
    # Class 2: predicted but absent from gt -> accuracy NaN (left out), IoU 0 (counted).
    # Class 3: absent from both -> NaN in both, left out of both means.
    acc, iou = s["per_class_accuracy"], s["per_class_iou"]
    assert acc[:2] == pytest.approx([1 / 2, 2 / 3]) and math.isnan(acc[2]) and math.isnan(acc[3])
    assert iou[:3] == pytest.approx([1 / 3, 2 / 3, 0.0]) and math.isnan(iou[3])
    assert s["mean_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert s["mean_iou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert s["frequency_weighted_iou"] == pytest.approx((2 * (1 / 3) + 3 * (2 / 3)) / 5)


def test_accumulate_over_frames() -> None:
    gt_b = np.array([[2, 2], [2, 0]], dtype=np.uint8)
    pred_b = np.array([[2, 2], [1, 0]], dtype=np.uint8)
    conf = accumulate([(GT_A, PRED_A), (gt_b, pred_b)], 3)
    assert conf.tolist() == [[2, 1, 0], [0, 2, 0], [1, 1, 3]]
    flat = confusion_matrix(
        np.concatenate([GT_A.ravel(), gt_b.ravel()]),
        np.concatenate([PRED_A.ravel(), pred_b.ravel()]),
        3,
    )
    assert np.array_equal(conf, flat)
    s = semantic_scores(conf)
    # t = [3, 2, 5]; column sums = [3, 4, 3].
    assert s["pixel_accuracy"] == pytest.approx(7 / 10)
    assert s["per_class_iou"] == pytest.approx([2 / 4, 2 / 4, 3 / 5])
    assert s["mean_iou"] == pytest.approx((0.5 + 0.5 + 0.6) / 3)
    assert s["mean_accuracy"] == pytest.approx((2 / 3 + 1 + 3 / 5) / 3)
    assert s["frequency_weighted_iou"] == pytest.approx((3 * 0.5 + 2 * 0.5 + 5 * 0.6) / 10)
    assert accumulate([], 3).tolist() == [[0] * 3] * 3


def test_matches_bruteforce_on_random_maps() -> None:
    rng = np.random.default_rng(0)
    k = 6
    gt = rng.integers(0, k, (37, 53)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = rng.integers(0, k, gt.shape).astype(np.uint8)
    conf = confusion_matrix(gt, pred, k)
    expected = np.zeros((k, k), dtype=np.int64)
    for g, p in zip(gt.ravel(), pred.ravel(), strict=True):
        if g != 255:
            expected[g, p] += 1
    assert np.array_equal(conf, expected)


def test_perfect_empty_and_invalid() -> None:
    s = semantic_scores(confusion_matrix(GT_A, GT_A, 3))
    assert s["pixel_accuracy"] == s["mean_accuracy"] == s["mean_iou"] == 1.0
    assert s["frequency_weighted_iou"] == 1.0
    s = semantic_scores(
        confusion_matrix(np.full((2, 2), 255, np.uint8), np.zeros((2, 2), np.uint8), 3)
    )
    assert all(
        math.isnan(s[key])
        for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou")
    )
    with pytest.raises(ValueError):
        confusion_matrix(GT_A, np.full_like(GT_A, 3), 3)  # prediction out of range
    with pytest.raises(ValueError):
        confusion_matrix(np.full_like(GT_A, 7), GT_A, 3)  # gt out of range, not ignored
    with pytest.raises(ValueError):
        confusion_matrix(GT_A, GT_A[:, :2], 3)
