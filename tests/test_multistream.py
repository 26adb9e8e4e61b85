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


def test_each_stream_has_its_own_track_ids(tmp_path):
    """Two streams of the same scene: each counts its ids from 1, so both get the same ids
    frame for frame (a shared counter would give the second stream other numbers)."""
    from pipeline.sources import open_source

    source = open_source("synthetic://?seed=5001&size=320x240&fps=30&frames=16&kind=tracking")
    frames = [f.image for f in source.frames()]
    source.close()
    video = tmp_path / "scene.mp4"
    with av.open(str(video), "w") as container:  # lossless: both streams decode the same pixels
        stream = container.add_stream("ffv1", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "bgr0"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    config = small_config([str(video), str(video)], tmp_path, model={"weights": "demo", "score_threshold": 0.5,
                                                                     "min_size": 240, "max_size": 320})
    Supervisor(config).run()
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    ids = {sid: [[(i["track_id"], i["class_id"]) for i in sorted(r["instances"], key=lambda i: i["box"])]
                 for r in sorted((r for r in records if r["stream"] == sid), key=lambda r: r["seq"])]
           for sid in ("0", "1")}
    assert len(ids["0"]) == len(ids["1"]) == len(frames)
    assert ids["0"] == ids["1"]
    first = {tid for tid, _ in ids["0"][0]} - {None}  # None: a duplicate or weak detection
    assert first == set(range(1, len(first) + 1)) and len(first) >= 2  # per stream, from 1
    assert not leftovers()
