"""Semantic-segmentation metrics as defined in the FCN paper (Long et al.).

With ``n_ij`` the number of pixels of ground-truth class i predicted as class j and
``t_i = sum_j n_ij`` the pixels of class i:

* pixel accuracy          ``sum_i n_ii / sum_i t_i``
* mean accuracy           ``mean_i n_ii / t_i``
* mean IoU                ``mean_i n_ii / (t_i + sum_j n_ji - n_ii)``
* frequency-weighted IoU  ``(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)``

Classes that make a ratio 0/0 are left out of the mean instead of counting as 0 or 1
(NaN-ignoring means), because a class that never occurs says nothing about the model:

* a class absent from the ground truth (``t_i = 0``) has no accuracy (NaN) and is left
  out of the mean accuracy; if it was predicted anyway its IoU is 0 and does count;
* a class absent from both ground truth and prediction has IoU NaN and is left out of
  the mean IoU (it has weight ``t_i = 0`` in the frequency-weighted IoU anyway);
* with no labelled pixel at all, every score is NaN.

Pixels whose ground truth is ``ignore_index`` (255 = unlabeled by default) are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["accumulate", "confusion_matrix", "semantic_scores"]


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = 255
) -> np.ndarray:
    """Confusion matrix int64 [K, K]: entry (i, j) counts pixels of gt class i predicted j.

    Pixels with ``gt == ignore_index`` are skipped. Any other gt or predicted value
    outside ``[0, num_classes)`` raises ``ValueError`` rather than being dropped silently.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"gt shape {gt.shape} != prediction shape {pred.shape}")
    k = int(num_classes)
    valid = gt != ignore_index
    g = gt[valid].astype(np.int64, copy=False)
    p = pred[valid].astype(np.int64, copy=False)
    if g.size and (g.min() < 0 or g.max() >= k):
        raise ValueError(f"ground-truth class outside [0, {k}) (and not {ignore_index})")
    if p.size and (p.min() < 0 or p.max() >= k):
        raise ValueError(f"predicted class outside [0, {k})")
    return np.bincount(g * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def accumulate(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int, ignore_index: int = 255
) -> np.ndarray:
    """Sum of :func:`confusion_matrix` over ``(gt, pred)`` frames: a dataset-level matrix.

    Scores computed from the sum weight every pixel equally (the FCN paper's way),
    which differs from averaging per-frame scores.
    """
    k = int(num_classes)
    total = np.zeros((k, k), dtype=np.int64)
    for gt, pred in pairs:
        total += confusion_matrix(gt, pred, k, ignore_index)
    return total


def semantic_scores(conf: np.ndarray) -> dict[str, Any]:
    """FCN-paper scores from a confusion matrix (see the module docstring for NaN rules).

    Returns ``pixel_accuracy``, ``mean_accuracy``, ``mean_iou``,
    ``frequency_weighted_iou`` (floats) and ``per_class_accuracy``, ``per_class_iou``
    (lists of floats, NaN where undefined).
    """
    conf = np.asarray(conf, dtype=np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {conf.shape}")
    diag = np.diag(conf)
    t = conf.sum(axis=1)  # ground-truth pixels per class
    predicted = conf.sum(axis=0)
    union = t + predicted - diag
    total = t.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(t > 0, diag / t, np.nan)
        iou = np.where(union > 0, diag / union, np.nan)
    nan = float("nan")
    if total > 0:
        pixel_acc = float(diag.sum() / total)
        # t_i = 0 exactly where IoU may be NaN, so those terms carry no weight.
        fw_iou = float(np.sum(t[t > 0] * iou[t > 0]) / total)
    else:
        pixel_acc = fw_iou = nan
    mean_acc = float(np.mean(acc[~np.isnan(acc)])) if np.any(~np.isnan(acc)) else nan
    mean_iou = float(np.mean(iou[~np.isnan(iou)])) if np.any(~np.isnan(iou)) else nan
    return {
        "pixel_accuracy": pixel_acc,
        "mean_accuracy": mean_acc,
        "mean_iou": mean_iou,
        "frequency_weighted_iou": fw_iou,
        "per_class_accuracy": [float(v) for v in acc],
        "per_class_iou": [float(v) for v in iou],
    }
