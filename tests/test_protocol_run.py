"""What a consumer sees of one whole run (docs/PROTOCOL.md): every frame on the stream's
exact topic, then an ``eos`` status, also for a single finite stream; JSON lines carry
the run id like the wire header; the ipc:// socket file is gone once the run ends."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from conftest import leftovers, make_video, small_config

from pipeline import messages
from pipeline.client import ResultSubscriber
from pipeline.supervisor import Supervisor


def test_single_stream_run_ends_with_eos_and_cleans_up_its_socket_file(tmp_path):
    video = make_video(tmp_path / "v.mp4", 6, 160, 120, "libx264", 25)
    config = small_config(video, tmp_path, output={"video": None})
    socket_file = Path(config.output.publish.removeprefix("ipc://"))
    frames, eos_after = [], []
    ended_at: list[float] = []  # when the run returned: the consumer gives up 5 s later
    # connects before the publisher binds: ZeroMQ retries until it is there
    sub = ResultSubscriber(config.output.publish, topics=["0"])

    def consume() -> None:
        while not ended_at or time.monotonic() < ended_at[0] + 5:
            frame = sub.recv(timeout_s=0.2)
            if frame is not None:
                frames.append(frame)
            if any(s["event"] == "eos" for s in sub.statuses):
                eos_after.append(len(frames))  # statuses arrive in order with the frames
                return

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        report = Supervisor(config).run()
    finally:
        ended_at.append(time.monotonic())
        consumer.join()
        sub.close()
    assert report["frames_published"] == 6
    assert [f.seq for f in frames] == list(range(6))
    assert {f.topic for f in frames} == {"0"}
    assert eos_after == [6], "no eos status after the last frame"
    eos = [s for s in sub.statuses if s["event"] == "eos"]
    assert len(eos) == 1 and eos[0]["stream"] == "0" and eos[0]["version"] == messages.version_header()
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(6))
    assert {r["run"] for r in records} == {frames[0].run} == {report["run_id"]}
    assert not socket_file.exists(), "the ipc:// publish socket file outlived the run"
    assert not leftovers()


def test_closing_publish_leaves_a_socket_file_that_is_not_ours(tmp_path):
    """Only the file our bind created is removed: one that replaced it since stays."""
    from pipeline.stages.ipc_file import remove_ipc_file  # publish's socket-file bookkeeping

    path = tmp_path / "pub.sock"
    path.write_text("someone else's")
    remove_ipc_file((str(path), path.stat().st_ino + 1))
    assert path.exists()
    remove_ipc_file((str(path), path.stat().st_ino))
    assert not path.exists()
    remove_ipc_file(None)  # nothing bound over ipc: nothing to do
