"""``--foxglove HOST:PORT``: the ``--mcap`` messages served live over the Foxglove WebSocket
protocol. A real WebSocket client (``pipeline/tools/foxglove_client.py``: websocket-client,
speaking the protocol by hand, not the SDK) subscribes and decodes what it gets with mcap_ros2's decoder; checked against the messages
the MCAP recorder builds and against the run's ``--save-results``. No mocks."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_FAIL_ARGS, REPO, leftovers, run_cli, run_with_port_taken

from pipeline.results import FrameResult, Instance
from pipeline.sinks.mcap_recorder import frame_messages, schema_text

pytest.importorskip("foxglove", reason="the robotics extra (foxglove-sdk) is not installed")
pytest.importorskip("websocket", reason="websocket-client (the dev extra) is not installed")

from mcap_ros2._dynamic import serialize_dynamic  # noqa: E402

from pipeline.sinks.foxglove_live import FoxgloveLive  # noqa: E402
from pipeline.tools.foxglove_client import FoxgloveClient  # noqa: E402


def _client(port: int, timeout: float = 5.0) -> FoxgloveClient:
    return FoxgloveClient(f"ws://127.0.0.1:{port}", timeout=timeout)


def _result(seq: int, size: tuple[int, int] = (48, 64)) -> FrameResult:
    h, w = size
    mask = np.zeros((h, w), bool)
    mask[4 + seq % 8: 20, 6:30] = True
    from pipeline.ops.rle import encode_mask

    class_map = np.zeros((h, w), np.uint8)
    class_map[10:30, 10:40] = 2
    return FrameResult(stream="0", seq=seq, width=w, height=h, model_id="m", task="instance",
                       class_names=["background", "circle", "square"], untrained=False, pts=seq * 3000,
                       time_base=Fraction(1, 90000), capture_ns=1_700_000_000_000_000_000 + seq,
                       dropped_since_last=0,
                       instances=[Instance(0, 1, 0.9, (6.0, 4.0, 30.0, 20.0), encode_mask(mask), 7)],
                       class_map=None, panoptic=None, segments=[])


def test_a_client_gets_exactly_the_recorded_messages_of_what_it_subscribed():
    live = FoxgloveLive("127.0.0.1:0", False, ["background", "circle", "square"])
    client = None
    try:
        image = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
        asked: list[int] = []

        def pixels() -> np.ndarray:
            asked.append(1)
            return image

        assert live.frame(_result(0), pixels, overlay=True) == 0  # nobody connected
        assert asked == [] and live.messages_sent == 0  # ... so nothing was built, not even the JPEG
        client = _client(live.port)
        client.poll_until(lambda: len(client.subscriptions) == 3)  # overlay, detections, instance_masks
        assert {c["topic"] for c in client.channels.values()} == {
            "/segstream/0/overlay", "/segstream/0/detections", "/segstream/0/instance_masks"}
        assert all(json.loads(c["metadata"]["class_names"]) == ["background", "circle", "square"]
                   for c in client.channels.values() if "metadata" in c)
        deadline = time.monotonic() + 10
        while live.frame(_result(1), pixels, overlay=True) < 3:  # subscriptions arrive asynchronously
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # the bytes the MCAP recorder writes for the same frame (it serializes the same way)
        expected = {topic: serialize_dynamic(schema, schema_text(schema))[schema](message)
                    for topic, schema, message in frame_messages(_result(1), image, overlay=True)}
        client.poll_until(lambda: len({t for t, _, _ in client.received}) == 3)
        for (topic, log_time, decoded), payload in zip(client.received[-3:], client.payloads[-3:], strict=True):
            assert log_time == _result(1).capture_ns
            assert payload == expected[topic], topic
            assert decoded.header.frame_id == "0"
        assert asked  # the image was asked for once someone subscribed to it
    finally:
        if client is not None:
            client.close()
        live.close()


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_a_stalled_client_neither_blocks_the_sender_nor_grows_memory():
    """A client that subscribes and then never reads: the sender goes on at full speed and
    the server's backlog stays bounded (the oldest messages are dropped)."""
    live = FoxgloveLive("127.0.0.1:0", False, ["background", "circle", "square"])
    client = None
    try:
        client = _client(live.port)
        client.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        rng = np.random.default_rng(0)
        frame = rng.integers(0, 255, (480, 640, 3), np.uint8)  # JPEGs of ~200 KB: fills any buffer fast
        live.frame(_result(0, (480, 640)), frame, overlay=True)  # advertises the channels
        client.poll_until(lambda: len(client.subscriptions) == 3)
        # from here on the client never reads
        for seq in range(50):
            live.frame(_result(seq, (480, 640)), frame, overlay=True)
        before = _rss_kib()
        start = time.monotonic()
        for seq in range(50, 400):
            live.frame(_result(seq, (480, 640)), frame, overlay=True)
        elapsed = time.monotonic() - start
        grown_mib = (_rss_kib() - before) / 1024
        # 350 frames x ~200 KB = ~70 MB if the server kept them; its backlog holds 64 messages
        assert grown_mib < 40, f"resident memory grew {grown_mib:.0f} MiB"
        assert elapsed < 60  # never blocked on the stalled client (this is JPEG-encoding time)
        start = time.monotonic()
        live.close()  # with the stalled client still connected
        assert time.monotonic() - start < 10, "close() hung on the stalled client"
    finally:
        if client is not None:
            client.close()
        live.close()


FRAMES, FPS = 60, 10
SOURCE = f"synthetic://?seed=3&size=320x240&fps={FPS}&frames={FRAMES}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_live_run_serves_what_it_saves(tmp_path: Path):
    """A realtime run with ``--foxglove``: a client connected during the run receives, per
    frame, detections that equal the run's saved results, and overlay JPEGs of the frame's
    size; the port is free and nothing is left behind once the run ends."""
    port = _free_port()
    results = tmp_path / "results.jsonl"
    args = [sys.executable, str(REPO / "run_pipeline.py"), "--source", SOURCE, "--realtime", "--live-policy", "block",
            "--model", "maskrcnn_demo", "--backend", "pytorch", "--min-size", "128", "--max-size", "192",
            "--output", str(tmp_path / "o.mp4"), "--publish", "none", "--save-results", str(results),
            "--no-progress", "--foxglove", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    client = None
    try:
        deadline = time.monotonic() + 120
        while client is None:
            try:
                client = _client(port, timeout=2)
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
                time.sleep(0.2)
        while not client.closed:  # until the run ends and the server closes the connection
            if not client.poll() and proc.poll() is not None:
                break
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Foxglove live server on ws://127.0.0.1:" in err
    finally:
        if client is not None:
            client.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    records = {r["seq"]: r for r in map(json.loads, results.read_text().splitlines())}
    assert len(records) == FRAMES
    by_stamp = {int(Fraction(r["pts"]) * Fraction(*r["time_base"]) * 10**9): r for r in records.values()}
    detections = [(log, d) for topic, log, d in client.received if topic == "/segstream/0/detections"]
    overlays = [d for topic, _, d in client.received if topic == "/segstream/0/overlay"]
    assert len(detections) >= FRAMES // 2, f"only {len(detections)} of {FRAMES} frames came live"
    for log_time, decoded in detections:
        record = by_stamp[decoded.header.stamp.sec * 10**9 + decoded.header.stamp.nanosec]
        assert log_time == record["capture_ns"]
        assert len(decoded.detections) == len(record["instances"])
        for det, inst in zip(decoded.detections, record["instances"], strict=True):
            assert det.results[0].hypothesis.class_id == str(inst["class_id"])
            assert det.results[0].hypothesis.score == pytest.approx(inst["score"], abs=1e-6)
            x0, y0, x1, y1 = inst["box"]
            assert det.bbox.size_x == pytest.approx(x1 - x0, abs=1e-4)
            assert det.bbox.center.position.x == pytest.approx((x0 + x1) / 2, abs=1e-4)
    assert sum(len(d.detections) for _, d in detections) > 0  # the demo model finds shapes
    assert overlays and all(bytes(o.data[:2]) == b"\xff\xd8" for o in overlays)  # JPEGs
    with socket.socket() as probe:  # the port is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    assert not leftovers()


def test_a_port_in_use_fails_at_once_with_one_line():
    result, address, elapsed = run_with_port_taken("--foxglove")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: observability.foxglove: cannot serve Foxglove on '{address}': Address already in use"]
    assert elapsed < 20, f"took {elapsed:.0f} s to fail"


def test_a_non_loopback_address_needs_allow_remote():
    result = run_cli([*FAST_FAIL_ARGS, "--foxglove", "0.0.0.0:8765"], timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "error: observability.foxglove: '0.0.0.0:8765' is not a loopback address: set output.allow_remote "
        "(--allow-remote) to serve the Foxglove server on it"]


def test_the_command_line_client_counts_what_it_receives(capsys):
    from pipeline.tools.foxglove_client import main

    live = FoxgloveLive("127.0.0.1:0", False, ["background", "circle", "square"])
    stop = threading.Event()

    def send() -> None:
        seq = 0
        while not stop.wait(0.05):
            live.frame(_result(seq), np.zeros((48, 64, 3), np.uint8), overlay=False)
            seq += 1

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        assert main([f"ws://127.0.0.1:{live.port}", "--seconds", "2"]) == 0
    finally:
        stop.set()
        sender.join()
        live.close()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "/segstream/0/detections", "/segstream/0/image", "/segstream/0/instance_masks"]
    assert all(int(line.split(": ")[1].split()[0]) > 5 for line in lines)


def test_the_command_line_client_names_a_bad_url(capsys):
    from pipeline.tools.foxglove_client import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it
    assert main([f"ws://127.0.0.1:{port}", "--seconds", "1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot connect to 'ws://127.0.0.1:{port}'")
