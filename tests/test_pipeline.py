"""The five-process pipeline end to end, on real encoded videos, against the in-process
reference (same model, same ops, same decoded frames): results must be bit-identical."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from fractions import Fraction

import av
import numpy as np
import pytest
from conftest import make_video, segments_of, small_config, stage_processes

from pipeline.client import ResultSubscriber
from pipeline.config import apply_overrides
from pipeline.reference import run_reference
from pipeline.supervisor import Supervisor

VOLATILE = {"capture_ns", "publish_ns", "run"}  # wall-clock fields and the run id differ between two runs


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _normalise(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def _run(config) -> tuple[dict, Supervisor]:
    supervisor = Supervisor(config)
    report = supervisor.run()
    assert not segments_of(os.getpid()), "shared-memory segment left behind"
    assert not stage_processes(supervisor.run_id), "stage process left behind"
    return report, supervisor


def _video_frames(path) -> list[tuple[int, Fraction]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(frame.pts, frame.time_base) for frame in container.decode(stream)]


def _assert_matches_reference(config, tmp_path, n_frames: int) -> list[dict]:
    report, _ = _run(config)
    records = _records(tmp_path / "results.jsonl")
    assert [r["seq"] for r in records] == list(range(n_frames))
    for key in ("frames_read", "frames_processed", "frames_written", "frames_published"):
        assert report[key] == n_frames, key
    reference = [json.loads(json.dumps(r.to_json())) for r in run_reference(config)]
    assert len(reference) == n_frames
    for got, want in zip(records, reference, strict=True):
        got, want = _normalise(got), _normalise(want)
        differing = sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))
        assert not differing, f"frame {got['seq']} differs from the reference in {differing}"
    return records


CODECS = [
    ("bframes.mp4", "libx264", 160, 120, {"bframes": 2}),
    ("vp9.webm", "libvpx-vp9", 160, 120, {}),
    ("mjpeg.avi", "mjpeg", 160, 120, {"pix_fmt": "yuvj420p"}),
    ("odd.avi", "mjpeg", 1279, 719, {"pix_fmt": "yuvj420p"}),
]


@pytest.mark.parametrize("name, codec, width, height, extra", CODECS, ids=[c[0] for c in CODECS])
def test_lossless_and_identical_to_reference(tmp_path, name, codec, width, height, extra):
    n = 5
    video = make_video(tmp_path / name, n, width, height, codec, 25, **extra)
    config = small_config(video, tmp_path)
    records = _assert_matches_reference(config, tmp_path, n)
    assert any(r["instances"] for r in records), "test needs detections to compare"
    assert all(r["width"] == width and r["height"] == height for r in records)
    # masks are at the original (odd) size
    assert all(i["mask"]["size"] == [height, width] for r in records for i in r["instances"])
    # overlay video: same frame count and timestamps (in seconds) as the input
    source_ts = [float(p * tb) for p, tb in _video_frames(video)]
    output_ts = [float(p * tb) for p, tb in _video_frames(tmp_path / "overlay.mp4")]
    assert len(output_ts) == n
    np.testing.assert_allclose(output_ts, source_ts, atol=1e-3)
    assert [r["pts"] for r in records] == [p for p, _ in _video_frames(video)]


def test_zero_detections(tmp_path, h264_video):
    config = small_config(h264_video, tmp_path, model={"score_threshold": 1.0})
    report, _ = _run(config)
    records = _records(tmp_path / "results.jsonl")
    assert len(records) == 7 and all(r["instances"] == [] for r in records)
    assert report["frames_written"] == 7
    assert len(_video_frames(tmp_path / "overlay.mp4")) == 7


def test_semantic_model_class_map_matches_reference(tmp_path):
    video = make_video(tmp_path / "sem.webm", 4, 150, 101, "libvpx-vp9", 25)
    config = small_config(video, tmp_path, model={"name": "fcn_demo", "weights": "random"})
    records = _assert_matches_reference(config, tmp_path, 4)
    assert all(r["task"] == "semantic" and r["semantic"]["height"] == 101 for r in records)


def test_subscriber_gets_every_frame_with_decoded_masks(tmp_path, h264_video):
    config = small_config(h264_video, tmp_path, tracking={"high_score": 0.0})  # random weights: track all
    received = []
    subscriber = ResultSubscriber(config.output.publish)  # connects before the pipeline binds
    thread = threading.Thread(target=lambda: received.extend(subscriber.frames(count=7, timeout_s=120)))
    thread.start()
    try:
        _run(config)
        thread.join(timeout=130)
    finally:
        subscriber.close()
    records = _records(tmp_path / "results.jsonl")
    assert [f.seq for f in received] == list(range(7))
    assert any(i.track_id for f in received for i in f.instances)  # tracked ids arrive on the wire
    for frame, record in zip(received, records, strict=True):
        masks = frame.masks()
        assert masks.shape == (len(record["instances"]), 120, 160)
        assert [i.rle["counts"] for i in frame.instances] == [i["mask"]["counts"] for i in record["instances"]]
        assert [i.track_id for i in frame.instances] == [i["track_id"] for i in record["instances"]]
        assert frame.header["model"].startswith("maskrcnn_demo@") and frame.header["untrained"] is True


def test_subscribe_cli_prints_json_lines(tmp_path, h264_video):
    config = small_config(h264_video, tmp_path)
    sub = subprocess.Popen(
        [sys.executable, "-m", "pipeline.subscribe", config.output.publish, "--count", "7", "--timeout", "120"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        _run(config)
        out, _ = sub.communicate(timeout=130)
    finally:
        sub.kill()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["seq"] for line in lines] == list(range(7))
    assert all(line["schema"] == "segstream.frame" for line in lines)
    assert lines[0]["version"] == {"major": 1, "minor": 4}
    assert all("track_id" in inst and "mask" not in inst for line in lines for inst in line["instances"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tcp_hops_carry_pixels_and_match_reference(tmp_path, h264_video):
    hops = {"capture": f"tcp://127.0.0.1:{_free_port()}", "preprocess": f"tcp://127.0.0.1:{_free_port()}"}
    config = small_config(h264_video, tmp_path, transport={"hops": hops})
    _assert_matches_reference(config, tmp_path, 7)


def test_batching_is_invisible_in_results(tmp_path, h264_video):
    """Batches of 1 and of 3 give the same detections (CPU kernels may differ in the last bits)."""
    one = small_config(h264_video, tmp_path, batching={"batch_size": 1, "max_wait_ms": 0})
    _run(one)
    single = _records(tmp_path / "results.jsonl")
    _run(apply_overrides(one, {"batching.batch_size": 3, "batching.max_wait_ms": 10_000.0}))
    batched = _records(tmp_path / "results.jsonl")
    for a, b in zip(single, batched, strict=True):
        assert [i["class_id"] for i in a["instances"]] == [i["class_id"] for i in b["instances"]]
        np.testing.assert_allclose([i["score"] for i in a["instances"]], [i["score"] for i in b["instances"]], atol=1e-3)


def test_image_folder_in_sorted_order(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in (1, 2, 10):  # natural order: 1, 2, 10
        Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    config = small_config(folder, tmp_path)
    records = _assert_matches_reference(config, tmp_path, 3)
    assert [r["pts"] for r in records] == [0, 1, 2]


def test_report_has_required_fields(tmp_path, h264_video):
    report, _ = _run(small_config(h264_video, tmp_path))
    for key in ("frames_read", "frames_processed", "frames_written", "frames_published", "frames_dropped",
                "wall_s", "fps", "latency_ms", "stages"):
        assert key in report
    assert set(report["latency_ms"]) == {"p50", "p95", "p99"}
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert set(report["stages"]) == {"capture", "preprocess", "infer", "postprocess", "publish"}
    assert report["stages"]["infer"]["busy_s"] > 0
    assert report["fps"] > 0 and report["frames_dropped"] == 0
