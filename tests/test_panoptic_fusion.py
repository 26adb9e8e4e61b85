"""Panoptic fusion rules (Panoptic FPN): score order, overlap drop, stuff minimum area,
thing classes never stuff; hand-built cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.ops.panoptic_fusion import fuse_panoptic, stuff_area_for


def _box(h: int, w: int) -> np.ndarray:
    return np.ones((h, w), bool)


def test_instances_in_score_order_then_stuff():
    class_map = np.zeros((20, 30), np.uint8)
    class_map[:10] = 7  # stuff "sky" on top
    class_map[10:] = 8  # stuff "road" below
    class_map[12:16, 2:6] = 1  # the semantic model also saw a thing here: never stuff
    crops = [(0, 0, _box(6, 6)), (3, 3, _box(6, 6))]
    segment_map, segments = fuse_panoptic((20, 30), crops, [0.6, 0.9], [1, 2], class_map, {1, 2},
                                          stuff_min_area=10)
    ids = {s.id: s for s in segments}
    assert [(s.category_id, s.isthing) for s in segments] == [(2, True), (1, True), (7, False), (8, False)]
    assert segments[0].instance == 1 and segments[1].instance == 0
    assert (segment_map[3:9, 3:9] == 1).all()  # the better instance keeps the overlap
    assert ids[2].area == 36 - 9 and ids[2].bbox == (0, 0, 6, 6)
    assert ids[3].area == int(((segment_map == 3)).sum()) and ids[3].bbox == (0, 0, 30, 10)
    assert (segment_map[12:16, 2:6] == 0).all()  # thing pixels of the class map stay void
    assert sum(s.area for s in segments) == int((segment_map > 0).sum())


def test_an_instance_mostly_covered_is_dropped():
    crops = [(0, 0, _box(10, 10)), (2, 0, _box(10, 10))]  # 80 % under the first
    segment_map, segments = fuse_panoptic((12, 14), crops, [0.9, 0.8], [1, 1], None, {1})
    assert len(segments) == 1 and segment_map.max() == 1
    _, kept = fuse_panoptic((12, 14), crops, [0.9, 0.8], [1, 1], None, {1}, overlap_threshold=0.9)
    assert len(kept) == 2 and kept[1].area == 20


def test_low_scores_small_stuff_and_edges():
    class_map = np.full((10, 10), 9, np.uint8)
    class_map[0, 0] = 255  # unlabeled is never a segment
    _, segments = fuse_panoptic((10, 10), [(8, 8, _box(4, 4))], [0.3], [1], class_map, {1})
    assert [s.category_id for s in segments] == [9]  # the weak instance is skipped
    _, segments = fuse_panoptic((10, 10), [(8, 8, _box(4, 4))], [0.7], [1], class_map, {1}, stuff_min_area=99)
    assert [(s.category_id, s.area, s.bbox) for s in segments] == [(1, 4, (8, 8, 2, 2))]  # clipped to the frame
    assert stuff_area_for(480, 640) == 4096 and stuff_area_for(720, 1280) == 12288


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="masks"):
        fuse_panoptic((4, 4), [(0, 0, _box(1, 1))], [], [1], None, {1})
    with pytest.raises(ValueError, match="class map"):
        fuse_panoptic((4, 4), [], [], [], np.zeros((3, 3), np.uint8), set())
