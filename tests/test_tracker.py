"""The tracker as a pure object: association, motion in seconds, ids, lost time, state."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from pipeline.synthetic.scene import SyntheticScene
from pipeline.tracking import (
    Crop,
    Detections,
    FrameClock,
    RunTracking,
    StreamTracker,
    TrackerParams,
)
from pipeline.tracking.association import assign, box_iou_matrix, crop_iou


def _square(x: int, y: int, size: int = 20) -> tuple[list[float], Crop]:
    return [x, y, x + size, y + size], Crop.of(x, y, np.ones((size, size), bool))


def _dets(*objects: tuple[int, int, int, float]) -> Detections:
    """objects: (x, y, class, score) squares of 20 px."""
    boxes, crops = [], []
    for x, y, _, _ in objects:
        box, crop = _square(x, y)
        boxes.append(box)
        crops.append(crop)
    return Detections(np.array(boxes, float).reshape(-1, 4), np.array([o[3] for o in objects], float),
                      np.array([o[2] for o in objects], np.int64), crops)


def test_crop_iou_counts_only_the_overlap():
    a = Crop.of(0, 0, np.ones((10, 10), bool))
    assert crop_iou(a, a) == 1.0
    assert crop_iou(a, a.moved(5, 0)) == pytest.approx(50 / 150)
    assert crop_iou(a, a.moved(10, 0)) == 0.0
    ring = np.ones((10, 10), bool)
    ring[3:7, 3:7] = False
    assert crop_iou(Crop.of(0, 0, ring), a) == pytest.approx(84 / 100)


def test_box_iou_matrix_and_assignment_are_optimal():
    iou = box_iou_matrix([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10]])
    assert iou[0].tolist() == pytest.approx([1.0, 50 / 150])
    # greedy would give row 0 col 0 (0.9) and leave row 1 with 0.1; optimal total is 1.6
    sim = np.array([[0.9, 0.8], [0.8, 0.1]])
    matches, rows, cols = assign(sim, 0.05)
    assert matches == [(0, 1), (1, 0)] and rows == [] and cols == []
    matches, rows, cols = assign(sim, 0.85)
    assert matches == [(0, 0)] and rows == [1] and cols == [1]


def test_ids_count_from_one_and_follow_moving_objects():
    tracker = StreamTracker(TrackerParams(), (200, 300))
    for k in range(10):
        ids = tracker.update(k / 30, _dets((10 + 3 * k, 50, 1, 0.9), (200 - 3 * k, 120, 2, 0.9))).track_ids
        assert ids == [1, 2]


def test_new_objects_need_min_hits_and_unmatched_tentatives_burn_no_id():
    tracker = StreamTracker(TrackerParams(min_hits=2), (200, 300))
    assert tracker.update(0.0, _dets((10, 10, 1, 0.9))).track_ids == [1]  # first frame: confirmed at once
    assert tracker.update(0.1, _dets((10, 10, 1, 0.9), (150, 150, 1, 0.9))).track_ids == [1, None]
    assert tracker.update(0.2, _dets((10, 10, 1, 0.9))).track_ids == [1]  # the newcomer vanished
    assert tracker.update(0.3, _dets((10, 10, 1, 0.9), (100, 100, 1, 0.9))).track_ids == [1, None]
    assert tracker.update(0.4, _dets((10, 10, 1, 0.9), (100, 100, 1, 0.9))).track_ids == [1, 2]


def test_low_score_detections_keep_a_track_but_do_not_start_one():
    tracker = StreamTracker(TrackerParams(high_score=0.6), (200, 300))
    tracker.update(0.0, _dets((10, 10, 1, 0.9)))
    assert tracker.update(0.1, _dets((11, 10, 1, 0.3), (150, 150, 1, 0.3))).track_ids == [1, None]
    assert tracker.confirmed_count == 1 and len(tracker.tracks) == 1


def test_a_flickering_class_keeps_the_identity_and_is_voted_away():
    tracker = StreamTracker(TrackerParams(), (200, 300))
    for k in range(3):
        tracker.update(k * 0.1, _dets((10 + k, 10, 1, 0.9)))
    flicker = tracker.update(0.3, _dets((13, 10, 2, 0.8)))  # the detector says class 2 once
    assert flicker.track_ids == [1] and flicker.classes == [1]
    for k in range(4, 9):  # ... then keeps saying it, more confidently: the vote turns
        last = tracker.update(k * 0.1, _dets((10 + k, 10, 2, 0.95)))
    assert last.track_ids == [1] and last.classes == [2]
    assert tracker.update(1.0, _dets((150, 150, 3, 0.9))).classes == [3]  # untracked: its own class


def test_lost_time_is_frame_time_in_seconds_not_frames():
    params = TrackerParams(max_lost_s=1.0)
    for fps in (10, 60):
        tracker = StreamTracker(params, (200, 300))
        tracker.update(0.0, _dets((50, 50, 1, 0.9)))
        frames_unseen = int(0.9 * fps)
        for k in range(1, frames_unseen + 1):
            tracker.update(k / fps, Detections.empty())
        assert tracker.update((frames_unseen + 1) / fps, _dets((50, 50, 1, 0.9))).track_ids == [1], fps
    tracker = StreamTracker(params, (200, 300))
    tracker.update(0.0, _dets((50, 50, 1, 0.9)))
    tracker.update(1.5, Detections.empty())  # one dropped-frames gap longer than max_lost_s
    assert tracker.update(1.6, _dets((50, 50, 1, 0.9))).track_ids == [None]


def test_motion_model_bridges_an_occlusion_at_constant_velocity():
    tracker = StreamTracker(TrackerParams(), (200, 400))
    speed = 120.0  # px per second; the object moves 60 px while hidden: no overlap with its last place
    for k in range(5):
        assert tracker.update(k * 0.1, _dets((int(10 + speed * k * 0.1), 80, 1, 0.9))).track_ids == [1]
    for k in range(5, 10):
        tracker.update(k * 0.1, Detections.empty())
    assert tracker.update(1.0, _dets((int(10 + speed * 1.0), 80, 1, 0.9))).track_ids == [1]


def test_a_track_that_left_through_an_edge_waits_there():
    tracker = StreamTracker(TrackerParams(max_lost_s=3.0), (100, 200))
    for k in range(4):
        tracker.update(k * 0.1, _dets((150 + 10 * k, 40, 1, 0.9)))  # reaches the right edge
    for k in range(4, 20):
        tracker.update(k * 0.1, Detections.empty())
    assert tracker.update(2.0, _dets((178, 42, 1, 0.9))).track_ids == [1]  # comes back where it left


def test_state_round_trips_through_json_and_resumes_identically():
    scene = SyntheticScene(seed=11, width=320, height=240)
    frames = [scene.frame(i) for i in range(40)]

    def detections(frame) -> Detections:
        boxes = frame.boxes()
        crops = [Crop.of(int(b[0]), int(b[1]), m[int(b[1]):int(b[3]), int(b[0]):int(b[2])])
                 for b, m in zip(boxes, frame.masks, strict=True)]
        return Detections(boxes, np.full(len(boxes), 0.9), frame.labels, crops)

    straight = RunTracking()
    expected = [straight.track("0", i, i, Fraction(1, 30), 0, 30.0, (240, 320), detections(f)).track_ids
                for i, f in enumerate(frames)]
    first = RunTracking()
    for i, f in enumerate(frames[:17]):
        first.track("0", i, i, Fraction(1, 30), 0, 30.0, (240, 320), detections(f))
    resumed = RunTracking()
    resumed.restore("0", json.loads(json.dumps(first.stream_state("0"))))
    got = [resumed.track("0", i, i, Fraction(1, 30), 0, 30.0, (240, 320), detections(f)).track_ids
           for i, f in enumerate(frames[17:], start=17)]
    assert got == expected[17:]
    # ground-truth masks in, ground-truth identities out: one id per scene track
    pairs = {(int(gt), tid) for f, ids in zip(frames, expected, strict=True)
             for gt, tid in zip(f.instance_ids, ids, strict=True) if tid is not None}
    assert len({gt for gt, _ in pairs}) == len(pairs)
    assert len({tid for _, tid in pairs}) == len(pairs)


def test_streams_are_independent():
    run = RunTracking()
    for k in range(3):
        a = run.track("a", k, k, Fraction(1, 30), 0, 30.0, (200, 300), _dets((10 + k, 10, 1, 0.9))).track_ids
        b = run.track("b", k, k, Fraction(1, 30), 0, 30.0, (200, 300),
                      _dets((100, 100, 1, 0.9), (10 + k, 10, 1, 0.9))).track_ids
        assert a == [1] and b == [1, 2]


def test_frame_clock_uses_pts_and_bridges_a_pts_reset():
    clock = FrameClock()
    tb = Fraction(1, 90000)
    assert clock.time(0, 0, tb, 0, 30.0) == 0.0
    assert clock.time(1, 9000, tb, 0, 30.0) == pytest.approx(0.1)  # 10 fps by its pts, not 30
    # the feed reconnected after 2 s of wall clock and its pts start again from 0
    clock = FrameClock()
    clock.time(0, 90000, tb, 1_000_000_000, 30.0)
    assert clock.time(1, 0, tb, 3_000_000_000, 30.0) == pytest.approx(3.0)
    assert clock.time(2, 9000, tb, 3_100_000_000, 30.0) == pytest.approx(3.1)
    assert FrameClock().time(30, None, None, 0, 15.0) == pytest.approx(2.0)


def test_bad_detections_are_refused():
    with pytest.raises(ValueError, match="detections"):
        Detections(np.zeros((2, 4)), np.zeros(1), np.zeros(2, np.int64), [None, None])


def test_a_duplicate_under_another_class_grows_no_second_track():
    tracker = StreamTracker(TrackerParams(), (200, 300))
    for k in range(4):
        got = tracker.update(k * 0.1, _dets((10 + k, 10, 1, 0.9), (10 + k, 10, 2, 0.7), (100, 100, 2, 0.8)))
        assert got.track_ids[0] == 1 and got.track_ids[1] is None and got.track_ids[2] == 2
    assert len(tracker.tracks) == 2


def test_a_lost_track_is_refound_by_place_class_and_size_after_a_turn():
    tracker = StreamTracker(TrackerParams(max_lost_s=3.0), (300, 400))
    for k in range(5):  # moving right at 100 px/s ...
        assert tracker.update(k * 0.1, _dets((100 + 10 * k, 100, 1, 0.9))).track_ids == [1]
    for k in range(5, 12):
        tracker.update(k * 0.1, Detections.empty())
    # ... hidden for 0.7 s, it paused and comes out below where it went in: no overlap with
    # the prediction (far right), within reach of its last place
    assert tracker.update(1.2, _dets((140, 140, 1, 0.9))).track_ids == [1]
    # another class, or another size, at that place is not the lost object
    tracker = StreamTracker(TrackerParams(max_lost_s=3.0), (300, 400))
    tracker.update(0.0, _dets((100, 100, 1, 0.9)))
    tracker.update(0.5, Detections.empty())
    assert tracker.update(1.0, _dets((130, 130, 2, 0.9))).track_ids == [None]
