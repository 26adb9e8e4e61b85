"""Supervision: a stage killed with SIGKILL (or hung with SIGSTOP) mid-run is restarted, the
frames in flight are replayed, and the run still produces every frame exactly once, in
order, bit-identical to a run without faults: results (track ids included: the tracker's
state is committed with the frames) and decoded overlay video."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import leftovers, make_video, small_config

from pipeline.supervisor import Supervisor

FRAMES = 48


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("restart") / "in.mp4", FRAMES, 160, 120, "libx264", 25, bframes=2)


def _config(video: Path, out: Path, **supervision):
    # FFV1 is lossless: the decoded overlay is exactly what postprocess drew (a lossy encoder
    # such as libx264 need not encode the same frames to the same bits twice, faults or not)
    config = small_config(
        video, out, batching={"batch_size": 2, "max_wait_ms": 10_000},
        supervision={"max_restarts": 2, "restart_backoff_s": 0.1, "video_segment_frames": 8, **supervision},
        tracking={"high_score": 0.0},  # random weights score low: let every detection start a track
    )
    config.output.video = str(out / "overlay.mkv")
    config.output.codec = "ffv1"
    return config


def _outputs(out: Path) -> tuple[list[dict], list[np.ndarray], list[int]]:
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    runs = {record.pop("run") for record in records}
    assert len(runs) == 1  # a restart is still the same run
    for record in records:
        record.pop("capture_ns")  # wall-clock time of decoding: the one other field that differs
    with av.open(str(out / "overlay.mkv")) as container:
        frames = list(container.decode(video=0))
    return records, [f.to_ndarray(format="rgb24") for f in frames], [f.pts for f in frames]


@pytest.fixture(scope="module")
def baseline(video, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline")
    report = Supervisor(_config(video, out)).run()
    assert report["restarts"] == []
    outputs = _outputs(out)
    # tracked: the restarted runs must reproduce these ids frame for frame (``records ==``)
    track_ids = {i["track_id"] for r in outputs[0] for i in r["instances"]} - {None}
    assert len(track_ids) >= 2, track_ids
    return outputs


def _published(out: Path) -> int:
    try:
        return len((out / "results.jsonl").read_text().splitlines())
    except OSError:
        return 0


def _fault(supervisor: Supervisor, out: Path, victim: str, signum: int, fired: list) -> None:
    """Once a few frames are out, signal the victim stage's process."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        process = supervisor.stages[victim].process
        if process is not None and supervisor.stages["publish"].ready and _published(out) >= 6:
            os.kill(process.pid, signum)
            fired.append((process.pid, _published(out)))
            return
        time.sleep(0.02)


def _identity(record: dict) -> tuple:
    return record["stream"], record["seq"], record["pts"], record["width"], record["height"], record["model"]


@pytest.mark.parametrize("victim", ["capture", "preprocess", "infer", "postprocess", "publish"])
def test_killed_stage_is_restarted_and_every_frame_comes_out_once(tmp_path, video, baseline, victim):
    supervisor = Supervisor(_config(video, tmp_path))
    fired: list = []
    killer = threading.Thread(target=_fault, args=(supervisor, tmp_path, victim, signal.SIGKILL, fired), daemon=True)
    killer.start()
    report = supervisor.run()
    killer.join()
    assert fired, "the run ended before the fault could be injected"
    assert fired[0][1] < FRAMES, "killed after the last frame: nothing to replay"
    assert [r["stage"] for r in report["restarts"]] == [victim]
    assert "SIGKILL" in report["restarts"][0]["reason"]
    records, frames, pts = _outputs(tmp_path)
    base_records, base_frames, base_pts = baseline
    assert [r["seq"] for r in records] == list(range(FRAMES))  # every frame once, in order
    assert [_identity(r) for r in records] == [_identity(r) for r in base_records]
    assert pts == base_pts
    assert len(frames) == FRAMES
    assert records == base_records  # bit-identical results
    differing = [i for i, (got, want) in enumerate(zip(frames, base_frames, strict=True)) if not np.array_equal(got, want)]
    assert differing == []  # bit-identical overlay video (decoded)
    assert report["frames_written"] == FRAMES
    assert not list(tmp_path.glob(".overlay.mkv.*"))
    assert not leftovers()


def test_hung_stage_is_killed_and_restarted(tmp_path, video, baseline):
    supervisor = Supervisor(_config(video, tmp_path))
    supervisor.config.transport.stage_timeout_s = 10.0
    fired: list = []
    killer = threading.Thread(target=_fault, args=(supervisor, tmp_path, "postprocess", signal.SIGSTOP, fired), daemon=True)
    killer.start()
    report = supervisor.run()
    killer.join()
    assert fired
    assert [r["stage"] for r in report["restarts"]] == ["postprocess"]
    assert "stopped responding" in report["restarts"][0]["reason"]
    records, frames, pts = _outputs(tmp_path)
    assert records == baseline[0]
    assert pts == baseline[2] and len(frames) == FRAMES
    assert all(np.array_equal(got, want) for got, want in zip(frames, baseline[1], strict=True))
    assert not leftovers()


def test_restart_limit_ends_the_run_with_one_clear_error(tmp_path, video):
    from pipeline.errors import StageError

    supervisor = Supervisor(_config(video, tmp_path, max_restarts=1))
    stop = threading.Event()

    def keep_killing():
        killed = set()
        while not stop.is_set() and len(killed) < 2:
            process = supervisor.stages["infer"].process
            if process is not None and process.pid not in killed and supervisor.stages["infer"].ready:
                os.kill(process.pid, signal.SIGKILL)
                killed.add(process.pid)
            time.sleep(0.05)

    killer = threading.Thread(target=keep_killing, daemon=True)
    killer.start()
    with pytest.raises(StageError, match=r"stage 'infer' failed: crashed \(killed by signal SIGKILL\) \(gave up after 1 restart"):
        supervisor.run()
    stop.set()
    killer.join()
    assert not list(tmp_path.glob(".overlay.mkv.*"))  # finished segments kept as overlay.mkv, rest removed
    assert not leftovers()
