"""Several streams in one pipeline: own ids, seqs, topics and videos; batched together;
one ending early does not stop the others."""

from __future__ import annotations

import json

import av
import pytest
from conftest import leftovers, make_video, small_config

from pipeline.errors import ConfigError
from pipeline.supervisor import Supervisor


@pytest.mark.parametrize("lengths", [(8, 3), (6, 2, 6, 4)], ids=["two", "four"])
def test_streams_finish_whole_when_one_ends_early(tmp_path, lengths):
    sizes = [(160, 120), (200, 150), (160, 120), (128, 96)]
    videos = [make_video(tmp_path / f"s{i}.mp4", n, *sizes[i], "libx264", 25) for i, n in enumerate(lengths)]
    config = small_config([str(v) for v in videos], tmp_path)
    report = Supervisor(config).run()
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    total = sum(lengths)
    assert report["frames_published"] == report["frames_read"] == total
    assert report["status_events"].get("eos") == len(lengths)  # one end-of-stream per stream
    # capture interleaves the streams round-robin (publish order = capture order), so the
    # infer stage's batches hold frames of several streams; and batching did happen
    order = [r["stream"] for r in records]
    switches = sum(a != b for a, b in zip(order, order[1:], strict=False))
    assert switches > 2 * (len(lengths) - 1), f"streams ran one after another: {order}"
    assert report["batches"] < total
    for i, n in enumerate(lengths):
        mine = [r for r in records if r["stream"] == str(i)]
        assert [r["seq"] for r in mine] == list(range(n)), f"stream {i}"
        assert all((r["width"], r["height"]) == sizes[i] for r in mine)
        with av.open(str(tmp_path / f"overlay-{i}.mp4")) as container:
            assert sum(1 for _ in container.decode(video=0)) == n
        assert report["streams"][str(i)]["frames"] == n
    assert not leftovers()


def test_long_streams_with_overlay_segments_do_not_starve_the_ring(tmp_path):
    """Publish holds each stream's open overlay segment until it closes: the ring must have
    room for one open segment per stream, or capture and publish would wait for each other."""
    lengths = (20, 20, 20)
    videos = [make_video(tmp_path / f"s{i}.mp4", n, 96, 64, "libx264", 25) for i, n in enumerate(lengths)]
    config = small_config([str(v) for v in videos], tmp_path, batching={"batch_size": 2, "max_wait_ms": 200},
                          supervision={"video_segment_frames": 8})
    report = Supervisor(config).run()
    assert report["frames_published"] == sum(lengths)
    for i, n in enumerate(lengths):
        with av.open(str(tmp_path / f"overlay-{i}.mp4")) as container:
            assert sum(1 for _ in container.decode(video=0)) == n
    assert not leftovers()


def test_too_small_ring_is_refused_with_one_clear_error(tmp_path):
    video = make_video(tmp_path / "in.mp4", 4, 96, 64, "libx264", 25)
    config = small_config(str(video), tmp_path, transport={"ring_slots": 4}, supervision={"video_segment_frames": 8})
    with pytest.raises(ConfigError, match=r"transport.ring_slots: 4 is too few .* needs at least 10"):
        Supervisor(config).run()
    assert not leftovers()
