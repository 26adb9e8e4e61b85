"""Bad media and bad consumers: the pipeline processes what it can, reports the damage,
and never lets a stalled subscriber slow it down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import leftovers, make_video, small_config

from pipeline.supervisor import Supervisor


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _corrupt_packets(data: bytearray, video, victims: tuple[int, ...]) -> None:
    """Overwrite the middle of these packets' payloads (the container framing around them
    stays intact), so the demuxer delivers them and the decoder rejects each one."""
    import av

    with av.open(str(video)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    for index in victims:
        pos, size = packets[index]
        data[pos + 16 : pos + size - 8] = bytes(size - 24)


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped", "corrupt-packets"])
def test_damaged_video_processes_readable_frames_and_reports_damage(tmp_path, damage):
    video = make_video(tmp_path / "clip.mkv", 24, 160, 120, "libx264", 25)
    data = bytearray(video.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "bit-flipped":
        rng = __import__("random").Random(3)
        for _ in range(40):  # flip bits in the second half (past the headers)
            pos = rng.randrange(len(data) // 2, len(data))
            data[pos] ^= 1 << rng.randrange(8)
    else:
        _corrupt_packets(data, video, (5, 10, 15))
    damaged = tmp_path / f"{damage}.mkv"
    damaged.write_bytes(bytes(data))
    config = small_config(damaged, tmp_path, model={"score_threshold": 0.5})
    report = Supervisor(config).run()
    records = _records(tmp_path / "results.jsonl")
    assert 0 < report["frames_read"] < 24  # every damage here costs frames
    assert report["frames_published"] == report["frames_read"] == len(records)
    assert [r["seq"] for r in records] == list(range(len(records)))
    if damage == "corrupt-packets":
        # the damage the test controls is counted exactly: each bad packet once
        assert report["decode_errors"] == 3
        assert report["frames_read"] == 21
    else:
        # random damage: whether the demuxer just ends early or the decoder rejects a
        # packet first depends on the bytes hit and on decoder threading; the loss shows
        # in frames_read above either way
        assert report["decode_errors"] >= 0
    assert not leftovers()


def test_stalled_subscriber_does_not_slow_the_pipeline(tmp_path):
    """PUB drops for a subscriber that stopped reading: the run finishes every frame and
    the publish stage does not buffer without bound."""
    video = make_video(tmp_path / "v.mp4", 40, 160, 120, "libx264", 25)
    config = small_config(video, tmp_path, output={"video": None})
    # a real subscriber process with a tiny receive buffer, frozen with SIGSTOP
    code = (
        "import zmq,sys,time; c=zmq.Context(); s=c.socket(zmq.SUB); s.setsockopt(zmq.RCVHWM,1);"
        "s.setsockopt(zmq.SUBSCRIBE,b''); s.connect(sys.argv[1]); print('ready',flush=True); time.sleep(600)"
    )
    sub = subprocess.Popen([sys.executable, "-c", code, config.output.publish], stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout.readline().strip() == "ready"
        os.kill(sub.pid, signal.SIGSTOP)
        stalled = Supervisor(config).run()
    finally:
        os.kill(sub.pid, signal.SIGKILL)
        sub.wait()
    baseline = Supervisor(config).run()  # same run with nobody listening
    assert stalled["frames_published"] == baseline["frames_published"] == 40
    assert len(_records(tmp_path / "results.jsonl")) == 40
    # publishing to the frozen consumer costs about what publishing to nobody costs
    assert stalled["stages"]["publish"]["busy_s"] <= 3 * baseline["stages"]["publish"]["busy_s"] + 0.5
