"""Tracking through the real pipeline: a live feed that drops frames keeps its identities
about as well as the lossless run of the same clip (the tracker works in seconds of pts,
not in frames), scored against the scene's ground truth."""

from __future__ import annotations

import json
from fractions import Fraction

import av
from conftest import leftovers, small_config

from pipeline.evaluation.tracks import evaluate_tracking
from pipeline.supervisor import Supervisor
from pipeline.synthetic import SyntheticScene
from pipeline.synthetic.coco import coco_dataset

FPS = 120  # faster than the model: played live, frames must be dropped
FRAMES = 160
SIZE = (320, 240)


def _scene_video(path) -> dict:
    """A tracking-kind scene (crossings, occlusions, exits) as H.264, and its ground truth."""
    scene = SyntheticScene(4002, *SIZE, FPS, kind="tracking")  # a tuning seed, not a held-out one
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "12", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.codec_context.time_base = Fraction(1, FPS)
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(scene.image(i), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return coco_dataset([scene.truth(i) for i in range(FRAMES)])


def _tracked(tmp_path, video, **source) -> tuple[list[dict], dict]:
    config = small_config(video, tmp_path, source=source, output={"video": None},
                          model={"weights": "demo", "score_threshold": 0.5, "min_size": 240, "max_size": 320},
                          batching={"batch_size": 2, "max_wait_ms": 5})
    report = Supervisor(config).run()
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    with av.open(str(video)) as container:
        index_of = {frame.pts: i for i, frame in enumerate(container.decode(video=0))}
    for record in records:  # live results count what was published; the GT counts source frames
        record["seq"] = index_of[record["pts"]]
    return records, report


def test_dropped_live_frames_keep_identities(tmp_path):
    video = tmp_path / "scene.mp4"
    gt = _scene_video(video)
    (tmp_path / "file").mkdir()
    (tmp_path / "live").mkdir()
    lossless, _ = _tracked(tmp_path / "file", video)
    live, report = _tracked(tmp_path / "live", video, realtime=True, live_policy="latest")
    assert len(lossless) == FRAMES
    assert report["frames_dropped"] > FRAMES // 4, "the model kept up: nothing was dropped"
    whole = evaluate_tracking(gt, lossless)
    dropped = evaluate_tracking(gt, live, only_predicted=True)
    assert whole["IDF1"] > 0.6, whole  # tracking works at all on this clip
    assert dropped["IDF1"] >= whole["IDF1"] - 0.05, (dropped["IDF1"], whole["IDF1"], report["frames_dropped"])
    assert not leftovers()
