"""A mask-aware multi-object tracker for one stream (pure: no clocks, sockets or files).

Each frame's detections (boxes, scores, classes, box-local masks) are associated with the
tracks in three stages, in the manner of ByteTrack:

1. detections scoring at least ``high_score`` against every confirmed track, lost ones too;
2. the remaining lower-score detections against the confirmed tracks seen in the previous
   frame (a partly hidden object often scores low: this keeps its track alive);
3. the remaining high-score detections against tentative tracks.

Similarity mixes mask IoU and box IoU (``association.py``), solved optimally, whatever the
classes: a detector's class flickers on hard frames, an object's identity does not. Each
track's class is instead a score-weighted vote over its detections, and a tracked instance
is reported with its track's class, which fixes most single-frame misclassifications. Motion is a
constant-velocity model on the box, in pixels per **second** of the frames' own clock, so
dropped frames and variable frame rates predict the right place. A tentative track is
confirmed after ``min_hits`` matches (at once in a stream's first frame) and only then gets
an id: ids count from 1 per stream and are never reused. A confirmed track that is not
seen is *lost*; it is kept ``max_lost_s`` seconds of frame time and then ended. A lost
track that left through a frame edge waits at that edge (objects come back where they left).

The whole state round-trips through :meth:`StreamTracker.state` / :meth:`from_state`
(plain JSON values), which is what lets a restarted stage resume with the same ids.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.tracking.association import Crop, assign, box_iou_matrix, crop_iou, similarity_matrix

__all__ = ["Assignment", "Detections", "StreamTracker", "TrackerParams"]

_VELOCITY_GAIN = 0.5  # weight of the newest displacement in the velocity estimate


@dataclass(frozen=True)
class TrackerParams:
    """Thresholds of the tracker (the ``tracking:`` config section)."""

    high_score: float = 0.6  # detections at least this confident take part in stage 1 and start tracks
    match_similarity: float = 0.2  # minimum similarity for stages 1 and 3
    low_match_similarity: float = 0.4  # minimum similarity for stage 2 (low-score detections)
    mask_weight: float = 0.5  # similarity = w * mask IoU + (1 - w) * box IoU
    min_hits: int = 2  # matches before a track is confirmed and gets an id
    max_lost_s: float = 2.0  # a track unseen this long (frame time) ends
    duplicate_iou: float = 0.7  # a detection overlapping a better one this much is a duplicate
    refind_reach: float = 2.0  # a lost track is re-found within (1 + this × seconds lost) box diagonals


@dataclass(frozen=True)
class Detections:
    """One frame's detections: boxes [N, 4] (x0, y0, x1, y1, frame pixels), scores [N],
    class ids [N] and one box-local mask per detection (or None: box IoU only)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    crops: list[Crop | None]

    def __post_init__(self) -> None:
        n = len(self.crops)
        shapes = (np.shape(self.boxes), np.shape(self.scores), np.shape(self.labels))
        if shapes != ((n, 4), (n,), (n,)) and not (n == 0 and np.size(self.boxes) == 0):
            raise ValueError(f"detections: boxes {shapes[0]}, scores {shapes[1]}, labels {shapes[2]}, {n} masks")

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), [])

    @classmethod
    def of(cls, boxes: Any, scores: Any, labels: Any, masks: Sequence[tuple[int, int, np.ndarray]]) -> Detections:
        """Detections from what postprocess makes (boxes, scores, class ids, and each mask as
        ``(x0, y0, box-local bool mask)``): the one place the pipeline's outputs become the
        tracker's input (publish, the reference path, the stage-cost benchmark)."""
        return cls(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(scores, dtype=np.float64),
                   np.asarray(labels, dtype=np.int64), [Crop.of(x0, y0, mask) for x0, y0, mask in masks])


@dataclass(frozen=True)
class Assignment:
    """One frame's answer: per detection, its track id (None: no confirmed track) and the
    class to report (its track's voted class, or the detection's own when untracked)."""

    track_ids: list[int | None]
    classes: list[int]


@dataclass
class _Track:
    id: int  # 0 while tentative
    votes: dict[int, float]  # class id -> summed detection scores
    box: np.ndarray  # last observed box, float64 [4]
    velocity: np.ndarray  # box coordinates per second, float64 [4]
    seen_t: float  # frame time of the last match, seconds
    crop: Crop | None
    hits: int = 1
    lost: bool = False
    parked: bool = False  # left through a frame edge: wait there instead of moving on

    @property
    def label(self) -> int:
        """The class with the most score behind it (the smaller id on a tie)."""
        return min(self.votes, key=lambda k: (-self.votes[k], k))

    def predicted_box(self, t: float) -> np.ndarray:
        if self.parked:
            return self.box
        return self.box + self.velocity * (t - self.seen_t)

    def predicted_crop(self, predicted_box: np.ndarray) -> Crop | None:
        """The last mask moved as the box is predicted to move (``predicted_box``)."""
        if self.crop is None:
            return None
        shift = predicted_box[:2] - self.box[:2]
        return self.crop.moved(int(round(shift[0])), int(round(shift[1])))

    def update(self, t: float, box: np.ndarray, crop: Crop | None, label: int, score: float) -> None:
        self.votes[label] = self.votes.get(label, 0.0) + score
        dt = t - self.seen_t
        if dt > 0:
            observed = (box - self.box) / dt
            gain = 1.0 if self.hits == 1 else _VELOCITY_GAIN
            self.velocity = self.velocity + gain * (observed - self.velocity)
        self.box, self.crop, self.seen_t = box, crop, t
        self.hits += 1
        self.lost = self.parked = False


@dataclass
class StreamTracker:
    """Tracks of one stream. Call :meth:`update` once per frame, in frame order."""

    params: TrackerParams = field(default_factory=TrackerParams)
    frame_size: tuple[int, int] | None = None  # (height, width): lost tracks park at its edges
    next_id: int = 1
    frames: int = 0
    tracks: list[_Track] = field(default_factory=list)

    def update(self, t: float, detections: Detections) -> Assignment:
        """Associate one frame's detections (frame time ``t`` in seconds): each detection's
        track id (None where it belongs to no confirmed track) and class to report."""
        p = self.params
        n = len(detections.crops)
        boxes = np.asarray(detections.boxes, dtype=np.float64).reshape(n, 4)
        scores = np.asarray(detections.scores, dtype=np.float64).reshape(n)
        labels = np.asarray(detections.labels, dtype=np.int64).reshape(n)
        owner: list[_Track | None] = [None] * n
        # class-aware NMS keeps one object's detections under two classes: the weaker is
        # a duplicate, left untracked (else it would grow a second track on the object)
        keep = _not_duplicates(boxes, scores, detections.crops, p.duplicate_iou)
        high = [i for i in keep if scores[i] >= p.high_score]
        low = [i for i in keep if scores[i] < p.high_score]
        confirmed = [tr for tr in self.tracks if tr.id]
        recent = [tr for tr in confirmed if not tr.lost]
        tentative = [tr for tr in self.tracks if not tr.id]

        rest_high, left_confirmed = self._match(t, confirmed, high, boxes, scores, detections, p.match_similarity, owner)
        left_recent = [tr for tr in left_confirmed if tr in recent]
        self._match(t, left_recent, low, boxes, scores, detections, p.low_match_similarity, owner)
        left_lost = [tr for tr in left_confirmed if tr.lost]
        rest_high = self._refind(t, left_lost, rest_high, boxes, scores, labels, detections, owner)
        rest_high, _ = self._match(t, tentative, rest_high, boxes, scores, detections, p.match_similarity, owner)

        matched = {id(tr) for tr in owner if tr is not None}
        kept: list[_Track] = []
        for tr in self.tracks:
            if id(tr) in matched:
                if not tr.id and (tr.hits >= p.min_hits):
                    tr.id, self.next_id = self.next_id, self.next_id + 1
                kept.append(tr)
            elif tr.id and t - tr.seen_t <= p.max_lost_s:
                self._lose(tr)
                kept.append(tr)
            # an unmatched tentative track, or a lost one past its time, ends here
        first_frame = self.frames == 0
        for i in rest_high:
            track = _Track(0, {int(labels[i]): float(scores[i])}, boxes[i].copy(), np.zeros(4), t,
                           detections.crops[i])
            if first_frame or p.min_hits <= 1:
                track.id, self.next_id = self.next_id, self.next_id + 1
            owner[i] = track
            kept.append(track)
        self.tracks = kept
        self.frames += 1
        confirmed_owner = [tr if tr is not None and tr.id else None for tr in owner]
        return Assignment([tr.id if tr else None for tr in confirmed_owner],
                          [tr.label if tr else int(labels[i]) for i, tr in enumerate(confirmed_owner)])

    def _match(self, t, tracks, dets, boxes, scores, detections, min_similarity, owner):
        """Match ``tracks`` with the detections ``dets`` (indices); update matched tracks and
        record them in ``owner``. Returns (unmatched detection indices, unmatched tracks)."""
        if not tracks or not dets:
            return dets, tracks
        predicted = [tr.predicted_box(t) for tr in tracks]
        sim = similarity_matrix(
            np.stack(predicted),
            [tr.predicted_crop(box) for tr, box in zip(tracks, predicted, strict=True)],
            boxes[dets],
            [detections.crops[i] for i in dets],
            self.params.mask_weight,
        )
        matches, rest_tracks, rest_dets = assign(sim, min_similarity)
        labels = np.asarray(detections.labels, dtype=np.int64).reshape(-1)
        for row, col in matches:
            d = dets[col]
            tracks[row].update(t, boxes[d].copy(), detections.crops[d], int(labels[d]), float(scores[d]))
            owner[d] = tracks[row]
        return [dets[j] for j in rest_dets], [tracks[i] for i in rest_tracks]

    def _refind(self, t, tracks, dets, boxes, scores, labels, detections, owner) -> list[int]:
        """Lost tracks that overlap no detection (the object paused or turned while hidden,
        or came back in where it left): match by place, class and size instead. A detection
        of the track's class, of a similar size (side ratio within 2/3..3/2) and whose centre
        lies within ``(1 + refind_reach × seconds lost)`` box diagonals of the track's last
        or predicted centre; the nearest wins (Hungarian on distance). Returns the
        detections left."""
        if not tracks or not dets:
            return dets
        reach = self.params.refind_reach
        cost = np.full((len(tracks), len(dets)), np.inf)
        for r, tr in enumerate(tracks):
            last, pred = tr.box, tr.predicted_box(t)
            diag = float(np.hypot(last[2] - last[0], last[3] - last[1])) or 1.0
            limit = diag * (1.0 + reach * (t - tr.seen_t))
            for c, d in enumerate(dets):
                box = boxes[d]
                if int(labels[d]) != tr.label or not _similar_size(last, box):
                    continue
                centre = (box[:2] + box[2:]) / 2
                dist = min(np.hypot(*(centre - (last[:2] + last[2:]) / 2)), np.hypot(*(centre - (pred[:2] + pred[2:]) / 2)))
                if dist <= limit:
                    cost[r, c] = dist / limit
        matches, _, rest = assign(np.where(np.isfinite(cost), 1.0 - cost, -1.0), 0.0)
        for row, col in matches:
            d = dets[col]
            tracks[row].update(t, boxes[d].copy(), detections.crops[d], int(labels[d]), float(scores[d]))
            owner[d] = tracks[row]
        return [dets[j] for j in rest]

    def _lose(self, track: _Track) -> None:
        """An unseen confirmed track: lost; parked at the edge if it was leaving the frame."""
        if track.lost:
            return
        track.lost = True
        if self.frame_size is None:
            return
        height, width = self.frame_size
        x0, y0, x1, y1 = track.box
        vx, vy = track.velocity[0], track.velocity[1]
        margin = 0.02 * max(height, width)
        leaving = (x0 <= margin and vx < 0) or (x1 >= width - margin and vx > 0) or (
            y0 <= margin and vy < 0) or (y1 >= height - margin and vy > 0)
        if leaving:
            track.parked = True
            track.velocity = np.zeros(4)

    @property
    def confirmed_count(self) -> int:
        return sum(1 for tr in self.tracks if tr.id)

    # -- state ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The whole tracker as plain JSON values (floats round-trip exactly)."""
        return {
            "next_id": self.next_id,
            "frames": self.frames,
            "frame_size": None if self.frame_size is None else list(self.frame_size),
            "tracks": [_track_state(tr) for tr in self.tracks],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], params: TrackerParams) -> StreamTracker:
        """The tracker :meth:`state` described, with ``params`` (from the config)."""
        size = state.get("frame_size")
        return cls(
            params=params,
            frame_size=None if size is None else (int(size[0]), int(size[1])),
            next_id=int(state["next_id"]),
            frames=int(state["frames"]),
            tracks=[_track_from_state(s) for s in state["tracks"]],
        )


def _similar_size(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether boxes ``a`` and ``b`` have sides within a factor 1.5 of each other (by the
    square root of their areas: a turning object changes its box's aspect, not its size)."""
    area_a = max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
    area_b = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
    if area_a <= 0 or area_b <= 0:
        return False
    return 1 / 1.5 <= float(np.sqrt(area_b / area_a)) <= 1.5


def _not_duplicates(boxes: np.ndarray, scores: np.ndarray, crops: list[Crop | None], max_iou: float) -> list[int]:
    """Indices of the detections that do not overlap a higher-scoring one by more than
    ``max_iou`` (mask IoU where both have masks, else box IoU), in index order."""
    n = len(crops)
    if n < 2 or max_iou >= 1.0:
        return list(range(n))
    box_iou = box_iou_matrix(boxes, boxes)
    # mask IoU <= box intersection / the larger mask: pairs below max_iou by that bound
    # cannot be duplicates, and most pairs of a frame are ruled out without their masks
    x0 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y0 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x1 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y1 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    inter = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    areas = np.array([c.area if c is not None else np.inf for c in crops], dtype=np.float64)
    possible = inter > max_iou * np.maximum(areas[:, None], areas[None, :])
    possible |= ~np.isfinite(areas)[:, None] | ~np.isfinite(areas)[None, :]
    order = sorted(range(n), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        duplicate = False
        for j in kept:
            if box_iou[i, j] <= 0 or not possible[i, j]:
                continue
            both = crops[i] is not None and crops[j] is not None
            if (crop_iou(crops[i], crops[j]) if both else box_iou[i, j]) > max_iou:
                duplicate = True
                break
        if not duplicate:
            kept.append(i)
    return sorted(kept)


def _track_state(tr: _Track) -> dict[str, Any]:
    crop = None
    if tr.crop is not None:
        h, w = tr.crop.mask.shape
        bits = base64.b64encode(np.packbits(tr.crop.mask, axis=None).tobytes()).decode("ascii")
        crop = {"x0": tr.crop.x0, "y0": tr.crop.y0, "h": h, "w": w, "bits": bits}
    return {
        "id": tr.id, "votes": [[k, float(v)] for k, v in sorted(tr.votes.items())], "box": [float(v) for v in tr.box],
        "velocity": [float(v) for v in tr.velocity], "seen_t": float(tr.seen_t), "hits": tr.hits,
        "lost": tr.lost, "parked": tr.parked, "crop": crop,
    }


def _track_from_state(s: dict[str, Any]) -> _Track:
    crop = None
    if s["crop"] is not None:
        c = s["crop"]
        h, w = int(c["h"]), int(c["w"])
        bits = np.frombuffer(base64.b64decode(c["bits"]), dtype=np.uint8)
        mask = np.unpackbits(bits, count=h * w).reshape(h, w).astype(bool)
        crop = Crop.of(c["x0"], c["y0"], mask)
    return _Track(
        id=int(s["id"]), votes={int(k): float(v) for k, v in s["votes"]}, box=np.array(s["box"], dtype=np.float64),
        velocity=np.array(s["velocity"], dtype=np.float64), seen_t=float(s["seen_t"]), crop=crop,
        hits=int(s["hits"]), lost=bool(s["lost"]), parked=bool(s["parked"]),
    )
