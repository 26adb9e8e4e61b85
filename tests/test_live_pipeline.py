"""Live feeds through the whole pipeline, against a real RTSP server (GStreamer)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import av
import pytest
from conftest import REPO, leftovers, scrape_metrics, stage_pids
from rtsp_server import RtspServer, rtsp_server_unavailable

from pipeline.client import ResultSubscriber

pytestmark = pytest.mark.skipif(rtsp_server_unavailable() is not None, reason=str(rtsp_server_unavailable()))


def _start(tmp_path, url: str, *extra: str) -> tuple[subprocess.Popen, str]:
    endpoint = f"ipc://{tmp_path}/pub.sock"
    args = [
        sys.executable, str(REPO / "run_pipeline.py"), "--source", url, "--model", "maskrcnn_demo",
        "--weights", "random", "--min-size", "128", "--max-size", "192", "--no-progress", "--batch-size", "2",
        "--output", str(tmp_path / "out.mp4"), "--publish", endpoint, "--report", str(tmp_path / "report.json"),
        *extra,
    ]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO), endpoint


@contextmanager
def _running(tmp_path, url: str, *extra: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """The pipeline CLI on ``url``; killed on the way out if the test did not end it."""
    proc, endpoint = _start(tmp_path, url, *extra)
    try:
        yield proc, endpoint
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _first_results(sub: ResultSubscriber, proc: subprocess.Popen, n: int) -> list:
    """The first ``n`` results (model loading included); the pipeline's stderr if it died."""
    got = _frames(sub, n, timeout=120)
    assert len(got) == n, proc.stderr.read() if proc.poll() is not None else "no results"
    return got


def _frames(sub: ResultSubscriber, n: int, timeout: float) -> list:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        frame = sub.recv(timeout_s=0.5)
        if frame is not None:
            got.append(frame)
    return got


def _wait_status(sub: ResultSubscriber, event: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sub.recv(timeout_s=0.5)
        if any(s["event"] == event for s in sub.statuses):
            return True
    return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _feed(port: int) -> dict[str, float]:
    """The live-feed metrics of stream 0, scraped now."""
    samples = scrape_metrics(port)
    stream = (("stream", "0"),)
    return {name: samples.get((f"segstream_{name}", stream), 0.0)
            for name in ("reconnects_total", "offline_seconds_total", "stream_online", "frames_read_total")}


def test_rtsp_stream_is_segmented_and_survives_a_server_outage(tmp_path):
    """... and the Prometheus metrics follow it: the feed goes offline (the gauge drops, the
    offline seconds grow while it stays away), comes back (reconnects count), and they end
    as the report does."""
    port = _free_port()
    with RtspServer(fps=10) as server, _running(tmp_path, server.url, "--metrics", f"127.0.0.1:{port}") as (
            proc, endpoint):
        with ResultSubscriber(endpoint) as sub:
            first = _first_results(sub, proc, 5)
            assert all(f.header["width"] == 320 and f.header["height"] == 240 for f in first)
            seqs = [f.seq for f in first]
            assert seqs == sorted(seqs) and len(set(seqs)) == 5  # never reordered
            time.sleep(1.5)  # a heartbeat (each second) brings capture's counters to the supervisor
            before = _feed(port)
            assert before["stream_online"] == 1 and before["reconnects_total"] == 0
            assert before["offline_seconds_total"] == 0 and before["frames_read_total"] >= 5
            server.kill()
            assert _wait_status(sub, "offline", timeout=30), sub.statuses
            assert proc.poll() is None, "pipeline must keep running while the feed is down"
            time.sleep(1.5)
            down = _feed(port)
            time.sleep(3.0)
            still_down = _feed(port)
            assert down["stream_online"] == still_down["stream_online"] == 0
            assert still_down["offline_seconds_total"] - down["offline_seconds_total"] >= 1.5  # it grows
            server.restart()
            assert _wait_status(sub, "online", timeout=30), sub.statuses
            resumed_from = time.monotonic()
            after = _frames(sub, 3, timeout=30)
            assert len(after) == 3, "results did not resume after the server came back"
            assert time.monotonic() - resumed_from < 15
            assert after[0].seq > seqs[-1]
            time.sleep(1.5)
            back = _feed(port)
            assert back["stream_online"] == 1 and back["reconnects_total"] >= 1
            assert back["offline_seconds_total"] >= still_down["offline_seconds_total"]
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["reconnects"] >= 1
    assert report["reconnects"] == back["reconnects_total"]  # no outage after the last scrape
    assert report["offline_s"] == pytest.approx(back["offline_seconds_total"], abs=1.0)
    assert report["status_events"].get("offline", 0) >= 1 and report["status_events"].get("online", 0) >= 1
    # every frame the source delivered was either published or counted as dropped
    assert report["frames_read"] == report["frames_published"] + report["frames_dropped"]
    assert not leftovers()


def test_capture_restarted_during_an_outage_waits_for_the_feed(tmp_path):
    """A capture stage that dies while the feed is down is restarted and, like the one
    before it, waits for the feed (found by the soak: it used to fail at its first open)."""
    with RtspServer(fps=10) as server, _running(tmp_path, server.url) as (proc, endpoint):
        with ResultSubscriber(endpoint) as sub:
            first = _first_results(sub, proc, 3)
            server.kill()
            assert _wait_status(sub, "offline", timeout=30), sub.statuses
            os.kill(stage_pids(proc.pid)["capture"], signal.SIGKILL)
            time.sleep(3)  # restarted (0.5 s backoff) and trying a feed that is still down
            assert proc.poll() is None, proc.stderr.read()
            server.restart()
            after = _frames(sub, 3, timeout=60)
            assert len(after) == 3, "results did not resume after the restart and the outage"
            assert after[0].seq > first[-1].seq
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["stage"] for r in report["restarts"]] == ["capture"]
    assert not leftovers()


def test_feed_that_stays_away_ends_the_run_after_the_configured_attempts(tmp_path):
    """``source.reconnect.max_attempts`` limits the retries: a feed that does not come back
    ends the run with one clear line and a non-zero exit, and nothing is left behind."""
    config = tmp_path / "reconnect.yaml"
    config.write_text("source:\n  reconnect:\n    read_timeout_s: 2.0\n    max_attempts: 2\n"
                      "    backoff_initial_s: 0.2\n    backoff_max_s: 0.5\n")
    with RtspServer(fps=10) as server, _running(tmp_path, server.url, "--config", str(config)) as (proc, endpoint):
        with ResultSubscriber(endpoint) as sub:
            _first_results(sub, proc, 3)
            server.kill()
            gone = time.monotonic()
            _, stderr = proc.communicate(timeout=60)
            ended_after = time.monotonic() - gone
            _wait_status(sub, "eos", timeout=2)
    assert proc.returncode == 2, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: stage 'capture' failed: stream '{server.url}' offline: gave up after 2 reconnect attempts"), last
    assert ended_after < 30  # two short attempts, not forever
    assert [s["event"] for s in sub.statuses].count("reconnecting") == 2
    assert not leftovers()


@pytest.mark.parametrize("policy", ["latest", "drop_oldest"])
def test_live_source_faster_than_model_keeps_latency_bounded(tmp_path, policy):
    """A 60 fps feed into a model that cannot keep up: frames are dropped (and counted
    exactly), never reordered, and with the default ``latest`` policy the age of a frame at
    publish stays within two inference times plus one frame interval (plus the per-frame
    stage overheads)."""
    from conftest import make_video, small_config

    from pipeline.supervisor import Supervisor

    video = make_video(tmp_path / "fast.mp4", 90, 320, 240, "libx264", 60)
    config = small_config(video, tmp_path, source={"realtime": True, "live_policy": policy},
                          model={"min_size": 320, "max_size": 480},
                          batching={"batch_size": 2, "max_wait_ms": 5})
    report = Supervisor(config).run()
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert report["frames_dropped"] > 0, "the model kept up: the test needs a slower model"
    assert report["frames_read"] == 90
    assert report["frames_published"] + report["frames_dropped"] == 90
    assert [r["seq"] for r in records] == list(range(len(records)))
    pts = [r["pts"] for r in records]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)  # dropped, never reordered
    # each result says how many frames were dropped before it; only drops after the
    # last published frame are not carried by any result
    # each result says exactly how many source frames were dropped right before it
    with av.open(str(video)) as container:
        index_of = {frame.pts: i for i, frame in enumerate(container.decode(video=0))}
    previous = -1
    for record in records:
        index = index_of[record["pts"]]
        assert record["dropped_since_last"] == index - previous - 1, record["seq"]
        previous = index
    assert report["frames_dropped"] == sum(r["dropped_since_last"] for r in records) + (89 - previous)
    per_frame_overhead = sum(report["stages"][s]["busy_s"] for s in ("preprocess", "postprocess", "publish"))
    per_frame_overhead /= max(1, report["frames_published"])
    if policy != "latest":
        return  # the latency guarantee is the default policy's; drop_oldest serves queued (older) frames
    # the last frame of a batch also waits for the post-stages of the frames ahead of it
    bound_ms = 1000 * (2 * report["batch_s_max"] + 1 / 60 + (2 + 1) * per_frame_overhead + 0.25)
    assert report["latency_ms"]["p95"] <= bound_ms, (report["latency_ms"], bound_ms, report)
