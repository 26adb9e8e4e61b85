"""Multi-object tracking metrics: HOTA, CLEAR MOT and Identity, as pure functions.

Input is a :class:`TrackingSequence`: per frame the ground-truth and predicted track ids and
their similarity matrix (here mask IoU, :func:`mask_iou`). Each metric reproduces TrackEval
(github.com/JonathonLuiten/TrackEval, ``trackeval.metrics``), which the tests check to 1e-9:

* **HOTA** (Luiten et al., "HOTA: A Higher Order Metric for Evaluating Multi-Object
  Tracking", IJCV 2021), at alpha = 0.05, 0.10, ..., 0.95. Per frame, detections are matched
  by the Hungarian algorithm on ``similarity * global alignment`` (the alignment of the two
  whole tracks: the sum over frames of ``S / (sum of S over the row + over the column - S)``
  divided by ``|gt track| + |pred track| - that sum``); a pair counts as a match at alpha
  when its similarity is >= alpha. DetA = TP / (TP + FN + FP), AssA = mean over matches of
  ``TPA / (TPA + FNA + FPA)``, LocA = mean similarity of the matches,
  HOTA_alpha = sqrt(DetA * AssA). Reported figures are the means over the 19 alphas.
* **CLEAR MOT** (Bernardin & Stiefelhagen 2008) at similarity >= 0.5: per frame, the
  Hungarian algorithm maximises ``1000 * (pair continues the previous frame's match) +
  similarity``, so a match is kept while it stays above the threshold. MOTA = 1 - (FN + FP
  + IDSW) / GT, MOTP = mean similarity of the matches; an ID switch is a GT track matched
  to another prediction than when last matched; a fragmentation is a resumption of a GT
  track's matching after an interruption. As in TrackEval, a frame without any GT or
  without any prediction interrupts nothing (the matches of the frame before carry over
  to the next one). MT / PT / ML: GT tracks matched in > 80%, >= 20% (and not MT), < 20%
  of their frames.
* **Identity** (Ristani et al. 2016) at similarity >= 0.5: one global min-cost assignment
  of GT tracks to predicted tracks; IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN), IDP, IDR.

Results are dicts of TrackEval's field names. Several sequences or classes combine with
:func:`combine` (detection-weighted: counts summed, AssA and LocA weighted by TP, as
TrackEval's ``combine_sequences`` / ``cls_comb_det_av``) or :func:`class_average` (the mean
of each rate over the classes that have any detection, TrackEval's ``cls_comb_cls_av`` with
``ignore_empty_classes``); :func:`summary` turns results into the reported scalars.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "ALPHAS",
    "TrackingSequence",
    "class_average",
    "clear_mot",
    "combine",
    "evaluate_sequence",
    "hota",
    "identity",
    "make_sequence",
    "mask_iou",
    "summary",
]

EPS = float(np.finfo(float).eps)
ALPHAS = np.arange(0.05, 0.99, 0.05)  # 0.05 .. 0.95, the same floats as TrackEval's
Result = dict[str, Any]


@dataclass(frozen=True)
class TrackingSequence:
    """Ids (0 .. num_*_ids - 1, unique in a frame) and similarity [n_gt, n_pred] per frame."""

    gt_ids: tuple[np.ndarray, ...]
    pred_ids: tuple[np.ndarray, ...]
    similarity: tuple[np.ndarray, ...]
    num_gt_ids: int
    num_pred_ids: int

    @property
    def num_frames(self) -> int:
        return len(self.gt_ids)

    @property
    def num_gt_dets(self) -> int:
        return int(sum(len(g) for g in self.gt_ids))

    @property
    def num_pred_dets(self) -> int:
        return int(sum(len(p) for p in self.pred_ids))


def _relabel(frames: Sequence[Sequence[int]], what: str) -> tuple[list[np.ndarray], int]:
    arrays = [np.asarray(f, dtype=np.int64).reshape(-1) for f in frames]
    for t, a in enumerate(arrays):
        if len(np.unique(a)) != len(a):
            raise ValueError(f"frame {t}: {what} ids are not unique: {a.tolist()}")
    unique = np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, np.int64)
    return [np.searchsorted(unique, a) for a in arrays], len(unique)


def make_sequence(
    gt_ids: Sequence[Sequence[int]],
    pred_ids: Sequence[Sequence[int]],
    similarity: Sequence[np.ndarray],
) -> TrackingSequence:
    """A :class:`TrackingSequence` from any integer ids (relabelled in sorted order, as
    TrackEval does). ``similarity[t]`` is [len(gt_ids[t]), len(pred_ids[t])]."""
    if not len(gt_ids) == len(pred_ids) == len(similarity):
        raise ValueError("gt_ids, pred_ids and similarity must have one entry per frame")
    gt, n_gt = _relabel(gt_ids, "ground-truth")
    pred, n_pred = _relabel(pred_ids, "predicted")
    sims = []
    for t, (g, p, s) in enumerate(zip(gt, pred, similarity, strict=True)):
        s = np.asarray(s, dtype=float).reshape(len(g), len(p))
        if s.size and not (s.min() >= 0.0 and s.max() <= 1.0 + EPS):
            raise ValueError(f"frame {t}: similarity outside [0, 1]")
        sims.append(s)
    return TrackingSequence(tuple(gt), tuple(pred), tuple(sims), n_gt, n_pred)


def mask_iou(gt_masks: Sequence[Mapping[str, Any]], pred_masks: Sequence[Mapping[str, Any]]):
    """Mask IoU [n_gt, n_pred] of COCO RLEs (``pycocotools.mask.iou``, box check first)."""
    if not gt_masks or not pred_masks:
        return np.zeros((len(gt_masks), len(pred_masks)))
    from pycocotools import mask as mask_utils

    ious = mask_utils.iou(list(gt_masks), list(pred_masks), [0] * len(pred_masks))
    return np.asarray(ious, dtype=float).reshape(len(gt_masks), len(pred_masks))


# ----------------------------------------------------------------------------------- HOTA


def _global_alignment(seq: TrackingSequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global alignment score [G, P] of track pairs; detections per GT / predicted id."""
    potential = np.zeros((seq.num_gt_ids, seq.num_pred_ids))
    gt_count = np.zeros((seq.num_gt_ids, 1))
    pred_count = np.zeros((1, seq.num_pred_ids))
    for g, p, s in zip(seq.gt_ids, seq.pred_ids, seq.similarity, strict=True):
        denom = s.sum(0)[np.newaxis, :] + s.sum(1)[:, np.newaxis] - s
        sim_iou = np.zeros_like(s)
        ok = denom > 0 + EPS
        sim_iou[ok] = s[ok] / denom[ok]
        potential[g[:, np.newaxis], p[np.newaxis, :]] += sim_iou
        gt_count[g] += 1
        pred_count[0, p] += 1
    return potential / (gt_count + pred_count - potential), gt_count[:, 0], pred_count[0]


def hota(seq: TrackingSequence) -> Result:
    """HOTA of one sequence: arrays over :data:`ALPHAS` (HOTA, DetA, AssA, LocA, DetRe,
    DetPr, AssRe, AssPr, HOTA_TP, HOTA_FN, HOTA_FP)."""
    n = len(ALPHAS)
    res: Result = {k: np.zeros(n) for k in ("HOTA_TP", "HOTA_FN", "HOTA_FP", "LocA")}
    res.update({k: np.zeros(n) for k in ("AssA", "AssRe", "AssPr")})
    if seq.num_gt_dets == 0 or seq.num_pred_dets == 0:
        res["HOTA_FN"][:] = seq.num_gt_dets
        res["HOTA_FP"][:] = seq.num_pred_dets
        res["LocA"][:] = 1.0
        return _hota_final(res)
    align, gt_count, pred_count = _global_alignment(seq)
    pairs: list[list[np.ndarray]] = [[] for _ in ALPHAS]  # matched (gt, pred) id pairs
    for g, p, s in zip(seq.gt_ids, seq.pred_ids, seq.similarity, strict=True):
        if len(g) == 0 or len(p) == 0:
            res["HOTA_FP"] += len(p)
            res["HOTA_FN"] += len(g)
            continue
        rows, cols = linear_sum_assignment(-(align[g[:, np.newaxis], p[np.newaxis, :]] * s))
        matched_sim = s[rows, cols]
        for a, alpha in enumerate(ALPHAS):
            ok = matched_sim >= alpha - EPS
            k = int(ok.sum())
            res["HOTA_TP"][a] += k
            res["HOTA_FN"][a] += len(g) - k
            res["HOTA_FP"][a] += len(p) - k
            if k:
                res["LocA"][a] += matched_sim[ok].sum()
                pairs[a].append(g[rows[ok]] * seq.num_pred_ids + p[cols[ok]])
    for a in range(n):
        if not pairs[a]:
            continue
        keys, counts = np.unique(np.concatenate(pairs[a]), return_counts=True)
        gi, pi = np.divmod(keys, seq.num_pred_ids)
        m = counts.astype(float)
        tp = max(1.0, res["HOTA_TP"][a])
        res["AssA"][a] = np.sum(m * m / np.maximum(1, gt_count[gi] + pred_count[pi] - m)) / tp
        res["AssRe"][a] = np.sum(m * m / np.maximum(1, gt_count[gi])) / tp
        res["AssPr"][a] = np.sum(m * m / np.maximum(1, pred_count[pi])) / tp
    res["LocA"] = np.maximum(1e-10, res["LocA"]) / np.maximum(1e-10, res["HOTA_TP"])
    return _hota_final(res)


def _hota_final(res: Result) -> Result:
    tp, fn, fp = res["HOTA_TP"], res["HOTA_FN"], res["HOTA_FP"]
    res["DetRe"] = tp / np.maximum(1, tp + fn)
    res["DetPr"] = tp / np.maximum(1, tp + fp)
    res["DetA"] = tp / np.maximum(1, tp + fn + fp)
    res["HOTA"] = np.sqrt(res["DetA"] * res["AssA"])
    return res


# ------------------------------------------------------------------------------ CLEAR MOT


def clear_mot(seq: TrackingSequence, threshold: float = 0.5) -> Result:
    """CLEAR MOT of one sequence: MOTA, MOTP, MODA, CLR_TP/FN/FP, IDSW, Frag, MT, PT, ML."""
    res: Result = dict.fromkeys(("CLR_TP", "CLR_FN", "CLR_FP", "IDSW", "MOTP_sum"), 0)
    seen = np.zeros(seq.num_gt_ids)  # frames each GT id is present
    matched = np.zeros(seq.num_gt_ids)  # ... and matched
    starts = np.zeros(seq.num_gt_ids)  # times its matching (re)started
    last_pred = np.full(seq.num_gt_ids, np.nan)  # last matched prediction, for IDSW
    prev_pred = np.full(seq.num_gt_ids, np.nan)  # match in the previous frame
    for g, p, s in zip(seq.gt_ids, seq.pred_ids, seq.similarity, strict=True):
        seen[g] += 1
        if len(g) == 0 or len(p) == 0:  # matches of the frame before carry over (TrackEval)
            res["CLR_FP"] += len(p)
            res["CLR_FN"] += len(g)
            continue
        score = 1000 * (p[np.newaxis, :] == prev_pred[g[:, np.newaxis]]) + s
        score[s < threshold - EPS] = 0
        rows, cols = linear_sum_assignment(-score)
        ok = score[rows, cols] > 0 + EPS
        rows, cols = rows[ok], cols[ok]
        mg, mp = g[rows], p[cols]
        before = last_pred[mg]
        res["IDSW"] += int(np.sum(~np.isnan(before) & (mp != before)))
        matched[mg] += 1
        resumed = np.isnan(prev_pred)
        last_pred[mg] = mp
        prev_pred[:] = np.nan
        prev_pred[mg] = mp
        starts += resumed & ~np.isnan(prev_pred)
        res["CLR_TP"] += len(mg)
        res["CLR_FN"] += len(g) - len(mg)
        res["CLR_FP"] += len(p) - len(mg)
        res["MOTP_sum"] += float(s[rows, cols].sum())
    ratio = matched[seen > 0] / seen[seen > 0]
    res["MT"] = int(np.sum(ratio > 0.8))
    res["PT"] = int(np.sum(ratio >= 0.2)) - res["MT"]
    res["ML"] = seq.num_gt_ids - res["MT"] - res["PT"]
    res["Frag"] = int(np.sum(starts[starts > 0] - 1))
    return _clear_final(res)


def _clear_final(res: Result) -> Result:
    tp, fn, fp, idsw = res["CLR_TP"], res["CLR_FN"], res["CLR_FP"], res["IDSW"]
    gt = max(1.0, tp + fn)
    res["MOTA"] = (tp - fp - idsw) / gt
    res["MODA"] = (tp - fp) / gt
    res["MOTP"] = res["MOTP_sum"] / max(1.0, tp)
    res["CLR_Re"] = tp / gt
    res["CLR_Pr"] = tp / max(1.0, tp + fp)
    return res


# ------------------------------------------------------------------------------- Identity


def identity(seq: TrackingSequence, threshold: float = 0.5) -> Result:
    """Identity metrics of one sequence: IDF1, IDP, IDR, IDTP, IDFN, IDFP."""
    res: Result = {"IDTP": 0, "IDFN": seq.num_gt_dets, "IDFP": seq.num_pred_dets}
    if seq.num_gt_dets == 0 or seq.num_pred_dets == 0:
        return _identity_final(res)
    n_g, n_p = seq.num_gt_ids, seq.num_pred_ids
    overlap = np.zeros((n_g, n_p))  # frames in which the two tracks match
    gt_count, pred_count = np.zeros(n_g), np.zeros(n_p)
    for g, p, s in zip(seq.gt_ids, seq.pred_ids, seq.similarity, strict=True):
        r, c = np.nonzero(s >= threshold)
        overlap[g[r], p[c]] += 1
        gt_count[g] += 1
        pred_count[p] += 1
    # (n_g + n_p) square: a GT track is assigned a predicted one or its own "unmatched"
    # column (cost: all its frames missed), likewise for predicted tracks.
    fn = np.zeros((n_g + n_p, n_g + n_p))
    fp = np.zeros((n_g + n_p, n_g + n_p))
    fp[n_g:, :n_p] = 1e10
    fn[:n_g, n_p:] = 1e10
    fn[:n_g, :n_p] = gt_count[:, np.newaxis] - overlap
    fn[np.arange(n_g), n_p + np.arange(n_g)] = gt_count
    fp[:n_g, :n_p] = pred_count[np.newaxis, :] - overlap
    fp[n_g + np.arange(n_p), np.arange(n_p)] = pred_count
    rows, cols = linear_sum_assignment(fn + fp)
    res["IDFN"] = int(fn[rows, cols].sum())
    res["IDFP"] = int(fp[rows, cols].sum())
    res["IDTP"] = int(gt_count.sum()) - res["IDFN"]
    return _identity_final(res)


def _identity_final(res: Result) -> Result:
    tp, fn, fp = res["IDTP"], res["IDFN"], res["IDFP"]
    res["IDR"] = tp / max(1.0, tp + fn)
    res["IDP"] = tp / max(1.0, tp + fp)
    res["IDF1"] = tp / max(1.0, tp + 0.5 * fp + 0.5 * fn)
    return res


# ---------------------------------------------------------------------------- combining


def evaluate_sequence(seq: TrackingSequence, threshold: float = 0.5) -> dict[str, Result]:
    """``{"HOTA": hota(seq), "CLEAR": clear_mot(seq), "Identity": identity(seq)}``."""
    return {
        "HOTA": hota(seq),
        "CLEAR": clear_mot(seq, threshold),
        "Identity": identity(seq, threshold),
    }


_HOTA_COUNTS = ("HOTA_TP", "HOTA_FN", "HOTA_FP")
_CLEAR_COUNTS = ("CLR_TP", "CLR_FN", "CLR_FP", "IDSW", "MT", "PT", "ML", "Frag", "MOTP_sum")
_ID_COUNTS = ("IDTP", "IDFN", "IDFP")


def combine(results: Sequence[Mapping[str, Result]]) -> dict[str, Result]:
    """Detection-weighted combination of :func:`evaluate_sequence` results (sequences or
    classes): counts summed, AssA/AssRe/AssPr and LocA weighted by HOTA_TP."""
    h: Result = {
        k: sum(r["HOTA"][k] for r in results) + np.zeros(len(ALPHAS)) for k in _HOTA_COUNTS
    }
    tp = np.maximum(1.0, h["HOTA_TP"])
    for k in ("AssA", "AssRe", "AssPr"):
        h[k] = sum(r["HOTA"][k] * r["HOTA"]["HOTA_TP"] for r in results) / tp
    loca = sum(r["HOTA"]["LocA"] * r["HOTA"]["HOTA_TP"] for r in results)
    h["LocA"] = np.maximum(1e-10, loca) / np.maximum(1e-10, h["HOTA_TP"])
    c: Result = {k: sum(r["CLEAR"][k] for r in results) for k in _CLEAR_COUNTS}
    i: Result = {k: sum(r["Identity"][k] for r in results) for k in _ID_COUNTS}
    return {"HOTA": _hota_final(h), "CLEAR": _clear_final(c), "Identity": _identity_final(i)}


def _has_detections(r: Mapping[str, Result]) -> bool:
    return bool(r["CLEAR"]["CLR_TP"] + r["CLEAR"]["CLR_FN"] + r["CLEAR"]["CLR_FP"] > 0)


def class_average(results: Sequence[Mapping[str, Result]]) -> dict[str, Result]:
    """Class-averaged combination: every rate is the mean over the classes with at least
    one GT or predicted detection (NaN when there is none); counts are summed."""
    kept = [r for r in results if _has_detections(r)]
    out = combine(kept)
    with np.errstate(invalid="ignore"):
        for metric, fields in (
            ("HOTA", ("HOTA", "DetA", "AssA", "LocA", "DetRe", "DetPr", "AssRe", "AssPr")),
            ("CLEAR", ("MOTA", "MODA", "MOTP", "CLR_Re", "CLR_Pr")),
            ("Identity", ("IDF1", "IDP", "IDR")),
        ):
            for f in fields:
                vals = [np.asarray(r[metric][f], dtype=float) for r in kept]
                out[metric][f] = np.mean(vals, axis=0) if vals else np.nan * out[metric][f]
    return out


def summary(res: Mapping[str, Result]) -> dict[str, float | int]:
    """Reported scalars: HOTA fields averaged over the alphas, then CLEAR and Identity."""
    h, c, i = res["HOTA"], res["CLEAR"], res["Identity"]
    out: dict[str, float | int] = {
        k: float(np.mean(h[k]))
        for k in ("HOTA", "DetA", "AssA", "LocA", "DetRe", "DetPr", "AssRe", "AssPr")
    }
    out.update({k: float(i[k]) for k in ("IDF1", "IDP", "IDR")})
    out.update({k: int(i[k]) for k in ("IDTP", "IDFN", "IDFP")})
    out.update({k: float(c[k]) for k in ("MOTA", "MOTP", "MODA")})
    out.update({k: int(c[k]) for k in ("CLR_TP", "CLR_FN", "CLR_FP", "IDSW", "Frag")})
    out.update({k: int(c[k]) for k in ("MT", "PT", "ML")})
    return out
