"""``--mcap``: every frame's results as ROS 2 messages in an MCAP file, read back with the
``mcap`` reader and mcap_ros2's decoder and checked against the ``--save-results`` JSON
lines of the same run; a bad path fails before the model loads; a restarted publish stage
salvages the committed frames of its ``.partial`` exactly once."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import leftovers, make_video, run_cli, small_config
from PIL import Image

from pipeline.ops.rle import decode, encode_mask
from pipeline.results import FrameResult, Instance
from pipeline.sinks.mcap_recorder import McapRecorder, frame_messages, partial_path
from pipeline.supervisor import Supervisor

pytest.importorskip("mcap_ros2", reason="the robotics extra (mcap, mcap-ros2-support) is not installed")

from mcap.reader import make_reader  # noqa: E402
from mcap_ros2.decoder import DecoderFactory  # noqa: E402

IMAGE, COMPRESSED, DETECTIONS = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "vision_msgs/msg/Detection2DArray"


def _read(path: Path) -> tuple[dict[str, list], dict[str, dict]]:
    """Per topic, (schema name, message record, decoded message) in seq order; metadata by name."""
    found: dict[str, list] = defaultdict(list)
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            found[channel.topic].append((schema.name, message, decoded))
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
    return {t: sorted(ms, key=lambda m: m[1].sequence) for t, ms in found.items()}, metadata


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _pixels(msg, dtype) -> np.ndarray:
    assert msg.step == msg.width * np.dtype(dtype).itemsize and msg.is_bigendian == 0
    return np.frombuffer(bytes(msg.data), dtype).reshape(msg.height, msg.width)


def _check_header(decoded, record: dict) -> None:
    seconds = Fraction(record["pts"]) * Fraction(*record["time_base"])
    assert decoded.header.frame_id == record["stream"]
    assert decoded.header.stamp.sec + decoded.header.stamp.nanosec / 1e9 == pytest.approx(float(seconds), abs=1e-6)


def _jpeg_size(decoded) -> tuple[int, int]:
    assert decoded.format == "jpeg"
    return Image.open(io.BytesIO(bytes(decoded.data))).size


def _instance_ids(record: dict) -> np.ndarray:
    """What instance_masks should hold: index + 1, the lower index winning overlaps."""
    ids = np.zeros((record["height"], record["width"]), np.uint16)
    for k in reversed(range(len(record["instances"]))):
        ids[decode(record["instances"][k]["mask"])] = k + 1
    return ids


def test_instance_run_with_tracking(tmp_path, h264_video):
    mcap = tmp_path / "rec" / "run.mcap"
    config = small_config(h264_video, tmp_path, output={"mcap": str(mcap)},
                          tracking={"high_score": 0.0})  # random weights: track everything
    Supervisor(config).run()
    records = _records(tmp_path / "results.jsonl")
    topics, metadata = _read(mcap)
    assert not partial_path(mcap).exists() and sorted(p.name for p in mcap.parent.iterdir()) == ["run.mcap"]
    prefix = "/segstream/0/"
    assert sorted(topics) == [prefix + t for t in ("detections", "instance_masks", "overlay")]
    assert {t: {m[0] for m in ms} for t, ms in topics.items()} == {
        prefix + "detections": {DETECTIONS}, prefix + "instance_masks": {IMAGE}, prefix + "overlay": {COMPRESSED}}
    assert all(len(ms) == len(records) == 7 for ms in topics.values())
    assert metadata["segstream"]["run"] == records[0]["run"]
    assert json.loads(metadata["segstream"]["class_names"]) == records[0]["class_names"]
    assert any(i["track_id"] for r in records for i in r["instances"]), "test needs tracked instances"
    assert sum(len(r["instances"]) > 1 for r in records) >= 3, "test needs frames with several masks"
    frames = zip(records, topics[prefix + "detections"], topics[prefix + "instance_masks"], topics[prefix + "overlay"],
                 strict=True)
    for record, (_, det_rec, det), (_, _, masks), (_, _, jpeg) in frames:
        assert det_rec.sequence == record["seq"]
        for decoded in (det, masks, jpeg):
            _check_header(decoded, record)
        assert det_rec.log_time == record["capture_ns"]
        assert len(det.detections) == len(record["instances"])
        for d, inst in zip(det.detections, record["instances"], strict=True):
            hypothesis = d.results[0].hypothesis
            assert hypothesis.class_id == str(inst["class_id"])
            assert hypothesis.score == pytest.approx(inst["score"])
            c, sx, sy = d.bbox.center.position, d.bbox.size_x, d.bbox.size_y
            np.testing.assert_allclose([c.x - sx / 2, c.y - sy / 2, c.x + sx / 2, c.y + sy / 2], inst["box"], atol=1.0)
            assert d.id == ("" if inst["track_id"] is None else str(inst["track_id"]))
        assert masks.encoding == "mono16"
        np.testing.assert_array_equal(_pixels(masks, "<u2"), _instance_ids(record))
        assert _jpeg_size(jpeg) == (record["width"], record["height"])
    assert not leftovers()


def test_semantic_run_records_the_class_map_and_the_source_frame(tmp_path):
    video = make_video(tmp_path / "sem.mp4", 4, 150, 100, "libx264", 25)
    mcap = tmp_path / "sem.mcap"
    config = small_config(video, tmp_path, model={"name": "fcn_demo", "weights": "random"},
                          output={"mcap": str(mcap), "video": None})  # no overlay: the source frame
    Supervisor(config).run()
    records = _records(tmp_path / "results.jsonl")
    topics, _ = _read(mcap)
    assert not partial_path(mcap).exists()
    assert sorted(topics) == ["/segstream/0/class_map", "/segstream/0/image"]
    assert [len(ms) for ms in topics.values()] == [4, 4]
    with av.open(str(video)) as container:
        source = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    pairs = zip(records, topics["/segstream/0/class_map"], topics["/segstream/0/image"], source, strict=True)
    for record, (schema, _, class_map), (_, _, jpeg), frame in pairs:
        assert schema == IMAGE and class_map.encoding == "mono8"
        _check_header(class_map, record)
        classes = _pixels(class_map, np.uint8)
        labelled = np.zeros(classes.shape, bool)
        for entry in record["semantic"]["classes"]:
            mask = decode(entry["mask"])
            np.testing.assert_array_equal(classes == entry["class_id"], mask)
            labelled |= mask
        assert np.isin(classes[~labelled], [0, 255]).all()  # background, unlabeled: not in the JSON lines
        decoded = np.asarray(Image.open(io.BytesIO(bytes(jpeg.data))).convert("RGB"))
        assert decoded.shape == frame.shape
        assert np.abs(decoded.astype(int) - frame).mean() < 6  # the source frame, through JPEG
    assert not leftovers()


def test_publish_killed_mid_run_records_every_frame_once(tmp_path, h264_video):
    """SIGKILL the publish stage once some frames are out: the restarted one salvages the
    committed frames of the ``.partial`` and records the replayed ones, each seq once."""
    mcap = tmp_path / "run.mcap"
    config = small_config(h264_video, tmp_path, output={"mcap": str(mcap), "video": None},
                          batching={"batch_size": 2, "max_wait_ms": 10_000}, tracking={"high_score": 0.0},
                          supervision={"max_restarts": 1, "restart_backoff_s": 0.1})
    supervisor, fired = Supervisor(config), []

    def kill_publish() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not fired:
            stage = supervisor.stages.get("publish") if hasattr(supervisor, "stages") else None
            lines = (tmp_path / "results.jsonl").read_text().count("\n") if (tmp_path / "results.jsonl").exists() else 0
            if stage is not None and stage.process is not None and stage.ready and lines >= 3:
                os.kill(stage.process.pid, signal.SIGKILL)
                fired.append(lines)
            time.sleep(0.005)

    killer = threading.Thread(target=kill_publish, daemon=True)
    killer.start()
    report = supervisor.run()
    killer.join()
    assert fired and [r["stage"] for r in report["restarts"]] == ["publish"], (fired, report["restarts"])
    records = _records(tmp_path / "results.jsonl")
    topics, _ = _read(mcap)
    assert [r["seq"] for r in records] == list(range(7))
    assert {t: [m[1].sequence for m in ms] for t, ms in topics.items()} == {
        f"/segstream/0/{t}": list(range(7)) for t in ("detections", "image", "instance_masks")}
    for record, (_, _, det) in zip(records, topics["/segstream/0/detections"], strict=True):
        assert [(d.results[0].hypothesis.class_id, d.id) for d in det.detections] == [
            (str(i["class_id"]), "" if i["track_id"] is None else str(i["track_id"])) for i in record["instances"]]
    assert sorted(p.name for p in tmp_path.iterdir() if "mcap" in p.name) == ["run.mcap"]
    assert not leftovers()


@pytest.mark.parametrize("where", ["under a file", "/proc"])
def test_unwritable_mcap_path_fails_before_the_model_loads(tmp_path, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    target = str(blocker / "rec.mcap") if where == "under a file" else "/proc/segstream/rec.mcap"
    result = run_cli(["--output", "none", "--publish", "none", "--no-progress", "--mcap", target], timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "output.mcap" in lines[0] and target in lines[0], result.stderr


def _frame(seq: int, task: str = "instance") -> FrameResult:
    a = np.zeros((24, 32), bool)
    a[2:10, 3:12] = True
    b = np.zeros((24, 32), bool)
    b[6:20, 8:30] = True
    return FrameResult("0", seq, 32, 24, "m@1", task, ["bg", "a", "b"], pts=seq * 512, time_base=Fraction(1, 15360),
                       capture_ns=1_700_000_000_000_000_000 + seq,
                       instances=[Instance(0, 1, 0.9, (3, 2, 12, 10), encode_mask(a), 4),
                                  Instance(1, 2, 0.4, (8, 6, 30, 20), encode_mask(b), None)])


def test_a_restarted_recorder_keeps_committed_frames_once(tmp_path):
    """Publish dies after committing frames 0-2 (its last chunk torn); the restarted one
    gets resume {stream: 3} and frames 3.. again: each seq ends up in the file once."""
    path = tmp_path / "r.mcap"
    image = np.full((24, 32, 3), 90, np.uint8)
    first = McapRecorder(path, "run-a", ["bg", "a", "b"])
    for seq in range(6):
        first.write(_frame(seq), image, overlay=True)
        if seq in (2, 5):
            first.commit()
    partial = partial_path(path)
    data = partial.read_bytes()
    partial.write_bytes(data[:-40])  # torn mid-chunk: frames 3-5 (never committed) are cut
    second = McapRecorder(path, "run-a", ["bg", "a", "b"], resume={"0": 3})
    assert not second.write(_frame(2), image, overlay=True)  # already in the file
    for seq in range(3, 8):
        assert second.write(_frame(seq), image, overlay=True)
    second.close()
    topics, metadata = _read(path)
    assert sorted(os.listdir(tmp_path)) == ["r.mcap"]
    assert {t: [m[1].sequence for m in ms] for t, ms in topics.items()} == {
        f"/segstream/0/{t}": list(range(8)) for t in ("detections", "instance_masks", "overlay")}
    assert list(metadata) == ["segstream"]
    # another run's leftover .partial is never salvaged
    partial.write_bytes(data)
    third = McapRecorder(path, "run-b", ["bg", "a", "b"], resume={"0": 3})
    third.close()
    assert _read(path)[0] == {}


def test_panoptic_frame_messages():
    result = _frame(0, "panoptic")
    result.panoptic = np.zeros((24, 32), np.uint32)
    result.panoptic[2:10, 3:12] = 1
    result.panoptic[12:, :] = 2
    result.segments = [{"id": 1, "category_id": 1, "isthing": True, "score": 0.9, "area": 72,
                        "bbox": [3, 2, 9, 8], "instance": 0},
                       {"id": 2, "category_id": 3, "isthing": False, "area": 384, "bbox": [0, 12, 32, 12]}]
    messages = {t.rsplit("/", 1)[1]: (schema, msg) for t, schema, msg in frame_messages(result, None, False)}
    assert sorted(messages) == ["detections", "instance_masks", "panoptic", "panoptic_segments"]
    schema, panoptic = messages["panoptic"]
    assert schema == IMAGE and panoptic["encoding"] == "mono16"
    np.testing.assert_array_equal(np.frombuffer(panoptic["data"], "<u2").reshape(24, 32), result.panoptic)
    segments = messages["panoptic_segments"][1]["detections"]
    assert [(d["id"], d["results"][0]["hypothesis"]["class_id"]) for d in segments] == [("1", "1"), ("2", "3")]
    assert segments[1]["bbox"]["center"]["position"] == {"x": 16.0, "y": 18.0}
    assert segments[1]["results"][0]["hypothesis"]["score"] == 1.0  # stuff has no score
