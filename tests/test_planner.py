"""The planner's decisions, rule by rule (no processes)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from pipeline.config import config_from_dict
from pipeline.errors import ConfigError
from pipeline.planner import decide
from pipeline.sources.base import SourceInfo


def _info(live: bool = False, w: int = 320, h: int = 240, frames: int | None = 100) -> SourceInfo:
    return SourceInfo(width=w, height=h, fps=Fraction(30), frame_count=None if live else frames,
                      time_base=Fraction(1, 30), live=live)


def _config(uris=("a.mp4",), **sections):
    data = {"source": {"uri": list(uris)}, "model": {"name": "maskrcnn_demo", "min_size": 128, "max_size": 192},
            "batching": {"batch_size": 4}, "output": {"video": "out.mp4"}}
    for key, values in sections.items():
        data.setdefault(key, {}).update(values)
    return config_from_dict(data)


def test_one_file_is_batched_by_seq_and_commits_at_segments():
    d = decide(_config(), [_info()], cores=2)
    assert d.batching == "fixed" and d.fixed_batch_size == 4
    assert d.segment_frames == 32 and d.delivery == {"0": "lossless"} and not d.admissions
    assert d.ring_slots == 2 * 4 + 2 * 2 + 2 + 32  # two batches, the queues, the open segment
    assert d.frame_bytes == d.overlay_bytes == 320 * 240 * 3
    assert d.input_bytes == 3 * 4 * 128 * 170  # the largest model input: 240x320 -> 128x170
    assert d.resources.budget("infer").threads == 2


def test_a_file_without_video_commits_every_batch():
    d = decide(_config(output={"video": None}), [_info()], cores=2)
    assert d.segment_frames is None and d.commit_every == 4 and d.overlay_bytes == 0
    assert d.ring_slots == 2 * 4 + 2 * 2 + 2 + 4


def test_a_live_feed_is_batched_by_time_with_admissions():
    d = decide(_config(uris=["rtsp://127.0.0.1/x"], source={"live_policy": "drop_oldest"}), [_info(live=True)], 2)
    assert d.batching == "timed" and d.fixed_batch_size is None and d.admissions
    assert d.delivery == {"0": "drop_oldest"} and d.commit_every == 1
    assert d.resources.budget("capture").nice == 0  # a live capture keeps up with its feed


def test_several_streams_mix_delivery_and_size_the_ring_for_the_largest():
    d = decide(_config(uris=["a.mp4", "rtsp://127.0.0.1/x"]), [_info(w=640, h=480), _info(live=True)], 2)
    assert d.batching == "timed" and d.delivery == {"0": "lossless", "1": "latest"}
    assert d.frame_bytes == 640 * 480 * 3
    assert d.ring_slots == max(2, 8) + 2 + 2 * 32  # one open segment per stream


def test_an_explicit_ring_that_is_too_small_is_refused():
    with pytest.raises(ConfigError, match="transport.ring_slots: 4 is too few"):
        decide(_config(transport={"ring_slots": 4}), [_info()], 2)


def test_infos_must_match_the_streams():
    with pytest.raises(ValueError):
        decide(_config(uris=["a.mp4", "b.mp4"]), [_info()], 2)
