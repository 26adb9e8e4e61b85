"""Live sources: backoff and status units, camera errors, and StreamSource against a real RTSP
server (GStreamer's gst-rtsp-server in its own process, killed and restarted for real).

The server comes from scripts/install-test-deps.sh; without it the RTSP tests skip and say so.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from media import frame_signature
from rtsp_server import RtspServer, free_port, rtsp_server_unavailable

from pipeline import messages
from pipeline.config import ReconnectConfig
from pipeline.sources import SourceError, open_source
from pipeline.sources.base import Frame
from pipeline.sources.camera import CameraSource, camera_device
from pipeline.sources.frame_reader import DeliveryQueue
from pipeline.sources.reconnect import Backoff, LinkStatus, ReconnectPolicy, status_message
from pipeline.sources.stream import LatestFrameReader, StreamSource, redact_url

# Fast reconnection settings for tests (the defaults are 0.5 s .. 10 s).
FAST = ReconnectPolicy(open_timeout_s=5.0, read_timeout_s=2.0, backoff_initial_s=0.2, backoff_factor=2.0,
                       backoff_jitter=0.1, backoff_seed=7)

needs_rtsp = pytest.mark.skipif(
    bool(rtsp_server_unavailable()), reason=str(rtsp_server_unavailable() or "")
)


class Recorder:
    """An ``on_status`` callback that keeps events and can run an action on one of them."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.actions: list[tuple[str, int, object]] = []  # (event, nth occurrence, callable)
        self.lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        with self.lock:
            self.events.append(event)
            count = sum(1 for e in self.events if e["event"] == event["event"])
        for name, nth, action in list(self.actions):
            if name == event["event"] and nth == count:
                action()

    def on(self, name: str, nth: int, action) -> None:
        self.actions.append((name, nth, action))

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]

    def since(self, start: int) -> list[dict]:
        return self.events[start:]


@pytest.fixture
def rtsp(tmp_path: Path):
    server = RtspServer(width=320, height=240, fps=10, log=tmp_path / "rtsp.log")
    server.start()
    yield server
    server.kill()


def take(frames, n: int, timeout: float = 20.0) -> list:
    out = []
    deadline = time.monotonic() + timeout
    for frame in frames:
        out.append(frame)
        if len(out) >= n:
            break
        assert time.monotonic() < deadline, f"only {len(out)} of {n} frames within {timeout} s"
    return out


def open_stream(rtsp: RtspServer, reconnect: ReconnectPolicy = FAST) -> tuple[Recorder, StreamSource, Iterator[Frame]]:
    """A :class:`StreamSource` on the test server, the :class:`Recorder` of its status events
    and its frames (not started yet)."""
    rec = Recorder()
    src = StreamSource(rtsp.url, on_status=rec, reconnect=reconnect)
    return rec, src, src.frames()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


# -- backoff and status (no server) ---------------------------------------------------------


def test_backoff_growth_and_cap() -> None:
    b = Backoff(initial_s=0.5, max_s=10, factor=2, jitter=0)
    assert [b.next_delay() for _ in range(8)] == [0.5, 1, 2, 4, 8, 10, 10, 10]
    assert b.attempts == 8
    b.reset()
    assert b.next_delay() == 0.5
    assert Backoff(1, 5, factor=1, jitter=0).base_delay(50) == 1
    assert Backoff(0.5, 10).base_delay(10_000) == 10  # no overflow on long outages


def test_backoff_jitter_bounds_and_seed() -> None:
    b = Backoff(initial_s=1, max_s=6, factor=2, jitter=0.2, seed=1)
    delays = [b.next_delay() for _ in range(400)]
    for attempt, delay in enumerate(delays, start=1):
        low, high = b.bounds(attempt)
        assert low <= delay <= high <= 6
    assert min(delays[:1]) >= 0.8 and max(delays) <= 6
    first = [d for d in delays[:1]]
    assert len({round(d, 6) for d in delays[10:]}) > 50  # jittered, not constant at the cap
    assert Backoff(1, 6, jitter=0.2, seed=1).next_delay() == first[0]  # reproducible
    shared = random.Random(3)
    assert Backoff(1, 6, jitter=0.2, rng=shared).next_delay() != Backoff(1, 6, jitter=0.2, rng=shared).next_delay()


def test_backoff_max_attempts_and_validation() -> None:
    b = Backoff(0.1, 1, max_attempts=3, jitter=0)
    assert list(b) == [0.1, 0.2, 0.4]
    assert b.next_delay() is None and b.exhausted
    b.reset()
    assert b.next_delay() == 0.1
    assert Backoff(max_attempts=0).next_delay() is None
    for kwargs in (dict(initial_s=0), dict(initial_s=2, max_s=1), dict(factor=0.5), dict(jitter=1),
                   dict(max_attempts=-1)):
        with pytest.raises(ValueError):
            Backoff(**kwargs)


def test_link_status_counters_and_messages() -> None:
    seen = []

    def broken(event):
        seen.append(event)
        raise RuntimeError("consumer bug")  # must not propagate

    status = LinkStatus("cam-1", on_status=broken)
    status.online("320x240 h264")
    status.offline("end of stream")
    status.reconnecting(1, 0.5, "Connection refused")
    time.sleep(0.05)
    assert status.offline_s >= 0.05 and status.reconnects == 0
    status.online("back")
    assert status.reconnects == 1
    frozen = status.offline_s
    time.sleep(0.02)
    assert status.offline_s == frozen  # not counting while online
    status.eos("stopped")
    assert [e["event"] for e in seen] == ["online", "offline", "reconnecting", "online", "eos"]
    assert seen[2]["attempt"] == 1 and seen[2]["delay_s"] == 0.5
    assert "Connection refused" in seen[2]["detail"]
    assert status.counters()["state"] == "eos"

    header = status_message(seen[1])
    assert header == {
        "schema": messages.SCHEMA_STATUS, "version": messages.version_header(), "stream": "cam-1",
        "event": "offline", "time_ns": seen[1]["time_ns"], "detail": "end of stream",
    }
    topic, decoded, _ = messages.decode_envelope(messages.encode_envelope(header["stream"], header))
    assert topic == "cam-1" and decoded == header
    with pytest.raises(ValueError):
        status_message({"event": "exploded"})


def test_delivery_queue_policies() -> None:
    """The live delivery policies on their own: what is kept, and the drop count each kept
    frame carries (frames dropped, never reordered)."""

    def run(policy: str, capacity: int, pushes: int) -> tuple[list[tuple[int, int]], DeliveryQueue]:
        queue = DeliveryQueue(policy, capacity)
        for index in range(1, pushes + 1):
            queue.push(Frame(image=np.zeros((1, 1, 3), np.uint8), index=index))
        taken = []
        while (item := queue.pop()) is not None:
            taken.append((item[0].index, item[1]))
        return taken, queue

    taken, queue = run("latest", 5, 3)  # latest keeps one frame whatever the capacity
    assert taken == [(3, 2)] and queue.capacity == 1 and queue.dropped_total == 2
    taken, queue = run("drop_oldest", 2, 5)
    assert taken == [(4, 3), (5, 0)] and queue.dropped_total == 3
    queue = DeliveryQueue("block", 2)
    for index in range(2):
        assert not queue.must_wait
        queue.push(Frame(image=np.zeros((1, 1, 3), np.uint8), index=index))
    assert queue.must_wait and len(queue) == 2 and queue.dropped_total == 0
    with pytest.raises(ValueError, match="unknown live policy"):
        DeliveryQueue("newest")


# -- camera (no camera here: the error paths) -----------------------------------------------


def free_video_device() -> str:
    n = 3
    while os.path.exists(f"/dev/video{n}"):
        n += 1
    return f"/dev/video{n}"


def test_camera_not_found_is_quick() -> None:
    device = free_video_device()
    for uri in (device, f"camera:{device[len('/dev/video'):]}", f"camera://{device[len('/dev/video'):]}",
                f"camera:{device}"):
        t0 = time.monotonic()
        with pytest.raises(SourceError, match=f"^camera not found: {device}$"):
            open_source(uri)
        assert time.monotonic() - t0 < 1.0


def test_camera_uri_forms_and_options(tmp_path: Path) -> None:
    assert camera_device("camera:0") == "/dev/video0"
    assert camera_device("camera://12") == "/dev/video12"
    assert camera_device("/dev/v4l/by-id/usb-cam") == "/dev/v4l/by-id/usb-cam"
    with pytest.raises(SourceError, match="cannot read camera URI"):
        camera_device("camera:front")
    with pytest.raises(SourceError, match="video_size must be WIDTHxHEIGHT"):
        CameraSource("camera:0", video_size="big")
    with pytest.raises(SourceError, match=r"unknown option\(s\) fps for camera"):
        open_source("/dev/video0", fps=30)
    plain = tmp_path / "not-a-device"
    plain.write_bytes(b"x")
    with pytest.raises(SourceError, match="not a video device"):
        CameraSource(f"camera:{plain}")


def test_camera_wait_for_online_gives_up() -> None:
    device = free_video_device()
    rec = Recorder()
    src = CameraSource(device, wait_for_online=True, on_status=rec,
                       reconnect=ReconnectPolicy(max_attempts=2, backoff_initial_s=0.05, backoff_jitter=0))
    with pytest.raises(SourceError, match=f"gave up after 2 reconnect attempts .*camera not found: {device}"):
        src.info()
    assert rec.names() == ["offline", "reconnecting", "reconnecting", "eos"]


# -- network streams: errors without a server ---------------------------------------------


def test_stream_nothing_listening_fails_fast() -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/test"
    with pytest.raises(SourceError) as err:
        open_source(url, open_timeout_s=2.0)
    assert str(err.value).startswith(f"cannot open stream '{url}': ")
    assert "refused" in str(err.value).lower()
    # the refusal is reported as it is: the open timeout was not waited out first (the
    # source says "no answer within" only once that much time has passed)
    assert "no answer within" not in str(err.value)


@pytest.mark.timeout(60)  # a hang fails the test here
def test_stream_silent_listener_times_out() -> None:
    """A server that accepts the TCP connection but never answers RTSP: no hang; the open
    timeout is waited out and named (not a quick refusal)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes handshakes; nobody ever reads or writes
        url = f"rtsp://admin:hunter2@127.0.0.1:{listener.getsockname()[1]}/stream"
        with pytest.raises(SourceError) as err:
            open_source(url, open_timeout_s=1.5, read_timeout_s=1.5)
    message = str(err.value)
    assert "rtsp://admin:***@127.0.0.1" in message and "hunter2" not in message
    assert "no answer within 1.5 s" in message


def test_stream_options_are_checked() -> None:
    with pytest.raises(SourceError, match="transport applies to rtsp"):
        open_source("http://127.0.0.1:1/x", transport="tcp")
    with pytest.raises(SourceError, match="unknown RTSP transport"):
        open_source("rtsp://127.0.0.1:1/x", transport="carrier-pigeon")
    with pytest.raises(SourceError, match=r"unknown option\(s\) bogus for rtsp:// source"):
        open_source("rtsp://127.0.0.1:1/x", bogus=1)
    with pytest.raises(SourceError, match="max_s must be >= initial_s"):
        open_source("rtsp://127.0.0.1:1/x", backoff_initial_s=5, backoff_max_s=1)
    assert redact_url("rtsp://u:p@[::1]:554/a?b=c") == "rtsp://u:***@[::1]:554/a?b=c"
    assert redact_url("rtsp://host/a") == "rtsp://host/a"


def test_stream_wait_for_online_can_be_stopped() -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/test"
    rec = Recorder()
    src = open_source(url, wait_for_online=True, backoff_initial_s=30, backoff_max_s=30, on_status=rec)  # returns at once
    assert rec.names() == ["offline"]
    timer = threading.Timer(0.3, src.stop)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="stopped before it came online"):
        src.info()
    assert time.monotonic() - t0 < 1.5
    timer.join()
    assert rec.names() == ["offline", "reconnecting"]


def test_reconnect_policy_from_keywords_and_config() -> None:
    """One ReconnectPolicy reaches the source: loose keywords given to open_source are folded
    over a ``reconnect`` given with them, and the config's section builds the same object."""
    url = f"rtsp://127.0.0.1:{free_port()}/test"
    base = ReconnectPolicy(backoff_initial_s=30, backoff_max_s=30)
    src = open_source(url, wait_for_online=True, reconnect=base, read_timeout_s=1.5)  # returns at once
    try:
        assert src.reconnect == replace(base, read_timeout_s=1.5)
        assert (src.read_timeout_s, src.backoff.initial_s, src.backoff.max_attempts) == (1.5, 30, None)
    finally:
        src.close()
    config = ReconnectConfig(read_timeout_s=2.0, max_attempts=3, backoff_jitter=0.0)
    assert config.policy() == ReconnectPolicy(read_timeout_s=2.0, max_attempts=3, backoff_jitter=0.0)
    with pytest.raises(SourceError, match=r"unknown option\(s\) read_timeout_s for video file source"):
        open_source(__file__, read_timeout_s=1.0)  # files do not reconnect


def test_http_finite_stream_ends_with_eos(h264_video: Path) -> None:
    """A recorded file over HTTP has a duration: its end is the end, not an outage."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(h264_video.parent))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serving = threading.Thread(target=httpd.serve_forever, daemon=True)
    serving.start()
    try:
        rec = Recorder()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{h264_video.name}"
        with open_source(url, on_status=rec, **asdict(FAST)) as src:  # loose keywords, folded
            assert src.info().live and (src.info().width, src.info().height) == (160, 120)
            frames = list(src.frames())
    finally:
        httpd.shutdown()
        httpd.server_close()
        serving.join(5)
    assert [frame_signature(f.image) for f in frames] == list(range(7))  # all, in order
    assert rec.names() == ["online", "eos"] and rec.events[-1]["detail"] == "end of stream"


# -- network streams against the real RTSP server -----------------------------------------


@needs_rtsp
def test_stream_frames(rtsp: RtspServer) -> None:
    rec = Recorder()
    with open_source(rtsp.url, on_status=rec, stream_id="cam", reconnect=FAST) as src:
        assert isinstance(src, StreamSource)
        info = src.info()
        assert (info.width, info.height, info.live) == (320, 240, True)
        assert info.fps == 10 and info.frame_count is None
        assert info.extra["transport"] == "tcp" and info.extra["codec"] == "h264"
        frames = take(src.frames(), 12)
    shapes = {f.image.shape for f in frames}
    assert shapes == {(240, 320, 3)} and frames[0].image.dtype == np.uint8
    assert [f.index for f in frames] == list(range(12))
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in pairwise(pts))
    assert all(f.time_base == info.time_base for f in frames)
    step_s = float((pts[-1] - pts[0]) * info.time_base) / 11
    assert 0.05 < step_s < 0.2  # 10 fps
    assert abs(frames[-1].capture_ns - time.time_ns()) < 5e9
    assert frames[0].image.std() > 5  # a real picture, not a blank frame
    assert rec.names() == ["online", "eos"] and rec.events[0]["stream"] == "cam"
    assert "320x240 h264" in rec.events[0]["detail"]


@needs_rtsp
def test_stream_reconnects_after_server_kill(rtsp: RtspServer) -> None:
    rec, src, frames = open_stream(rtsp)
    before = take(frames, 5)
    mark = len(rec.events)
    rec.on("reconnecting", 3, rtsp.start)  # the server comes back during the third wait
    killed_ns = time.time_ns()
    rtsp.kill()
    after = take(frames, 5, timeout=30)
    src.close()

    events = rec.since(mark)
    names = [e["event"] for e in events]
    assert names[0] == "offline"
    assert names[1:4] == ["reconnecting"] * 3
    assert names[-2:] == ["online", "eos"]
    assert (events[0]["time_ns"] - killed_ns) / 1e9 < FAST.read_timeout_s
    delays = [e["delay_s"] for e in events if e["event"] == "reconnecting"]
    assert [e["attempt"] for e in events if e["event"] == "reconnecting"] == list(range(1, len(delays) + 1))
    assert all(b > a for a, b in pairwise(delays)), delays  # growing
    assert 0.18 <= delays[0] <= 0.22
    online = next(e for e in events if e["event"] == "online")
    restarted_ns = next(e for e in events if e["event"] == "reconnecting" and e["attempt"] == 3)["time_ns"]
    assert (online["time_ns"] - restarted_ns) / 1e9 < 8.0  # back within a few seconds of the restart
    # frames resume with increasing index and timestamps; the outage shows as a pts gap
    assert [f.index for f in before + after] == list(range(10))
    pts = [f.pts for f in before + after]
    assert all(b > a for a, b in pairwise(pts))
    assert {f.image.shape for f in after} == {(240, 320, 3)}
    assert src.status.reconnects == 1 and src.status.offline_s > 1.0


@needs_rtsp
def test_stream_stall_goes_offline_after_read_timeout(rtsp: RtspServer) -> None:
    """A server that stops sending without closing (SIGSTOP): the read timeout notices."""
    rec, src, frames = open_stream(rtsp, replace(FAST, read_timeout_s=1.5))
    take(frames, 3)
    rec.on("reconnecting", 1, lambda: os.kill(rtsp.proc.pid, signal.SIGCONT))
    os.kill(rtsp.proc.pid, signal.SIGSTOP)
    stalled = time.time_ns()
    try:
        take(frames, 3, timeout=30)
    finally:
        os.kill(rtsp.proc.pid, signal.SIGCONT)
        src.close()
    offline = next(e for e in rec.events if e["event"] == "offline")
    # the read timeout (not an early error) took it offline, after the stall began
    assert offline["time_ns"] > stalled
    assert offline["detail"] == "no data for 1.5 s", offline
    assert "no data for 1.5 s" in offline["detail"]
    assert rec.names()[-2:] == ["online", "eos"]


@needs_rtsp
def test_stream_no_leaks_across_restarts(rtsp: RtspServer) -> None:
    rec, src, frames = open_stream(rtsp)
    take(frames, 3)
    samples = [(open_fds(), threading.active_count(), native_threads())]  # online, one connection
    for _ in range(3):
        attempts_so_far = rec.names().count("reconnecting")
        rec.actions = [("reconnecting", attempts_so_far + 1, rtsp.start)]  # back on the first attempt
        rtsp.kill()
        take(frames, 3, timeout=30)
        samples.append((open_fds(), threading.active_count(), native_threads()))
    src.close()
    print("fds, python threads, native threads per cycle:", samples)
    assert src.status.reconnects == 3
    base = samples[0]
    for fds, threads, tasks in samples[1:]:
        assert fds <= base[0], samples
        assert threads <= base[1], samples
        assert tasks <= base[2], samples


@needs_rtsp
def test_stop_during_backoff_returns_promptly(rtsp: RtspServer) -> None:
    rec = Recorder()
    src = StreamSource(rtsp.url, on_status=rec, reconnect=replace(FAST, backoff_initial_s=30, backoff_max_s=60))
    got: list = []
    waiting = threading.Event()
    rec.on("reconnecting", 1, waiting.set)
    done = threading.Event()
    errors: list = []

    def consume() -> None:
        try:
            for frame in src.frames():
                got.append(frame)
                if len(got) == 3:
                    rtsp.kill()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            done.set()

    reader = threading.Thread(target=consume)
    reader.start()
    assert waiting.wait(20), "never started reconnecting"
    t0 = time.monotonic()
    src.stop()
    assert done.wait(5)
    returned_s = time.monotonic() - t0
    reader.join(5)
    assert returned_s < 0.5, returned_s
    assert not errors and len(got) >= 3  # a frame in flight at the kill may still arrive
    assert rec.names()[-2:] == ["reconnecting", "eos"] and rec.events[-1]["detail"] == "stopped"
    src.close()  # idempotent, no second eos
    assert rec.names().count("eos") == 1
    assert list(src.frames()) == []  # a stopped source stays stopped


@needs_rtsp
def test_stream_gives_up_after_max_attempts(rtsp: RtspServer) -> None:
    rec, src, frames = open_stream(rtsp, replace(FAST, max_attempts=2, backoff_initial_s=0.05))
    take(frames, 2)
    rtsp.kill()
    with pytest.raises(SourceError, match=r"offline: gave up after 2 reconnect attempts \(last error: .*refused"):
        take(frames, 5)
    assert rec.names()[-4:] == ["offline", "reconnecting", "reconnecting", "eos"]
    src.close()


@needs_rtsp
def test_stream_size_change_keeps_first_size(rtsp: RtspServer) -> None:
    rec, src, frames = open_stream(rtsp)
    take(frames, 2)

    def smaller() -> None:
        rtsp.width, rtsp.height = 160, 120
        rtsp.start()

    rec.on("reconnecting", 1, smaller)
    rtsp.kill()
    after = take(frames, 3, timeout=30)
    src.close()
    assert {f.image.shape for f in after} == {(240, 320, 3)}
    online = [e for e in rec.events if e["event"] == "online"]
    assert "160x120" in online[-1]["detail"] and "scaled to 320x240" in online[-1]["detail"]


@needs_rtsp
def test_latest_frame_reader_drops_old_frames_and_survives_outage(rtsp: RtspServer) -> None:
    threads_before = threading.active_count()
    src = StreamSource(rtsp.url, stream_id="cam", reconnect=FAST)
    reader = LatestFrameReader(src)
    taken = []
    for _ in range(4):  # a consumer three times slower than the 10 fps feed
        time.sleep(0.3)
        item = reader.get(timeout=10)
        assert item is not None
        taken.append(item)
    indices = [f.index for f, _ in taken]
    assert all(b > a for a, b in pairwise(indices))  # dropped, never reordered
    for (prev, _), (frame, dropped) in pairwise(taken):
        assert frame.index - prev.index == dropped + 1
    assert sum(d for _, d in taken[1:]) >= 3
    assert [e["event"] for e in reader.pop_events()] == ["online"]  # from before the reader

    rtsp.kill()  # the consumer keeps looping (heartbeats) while the source reconnects
    polls, events = 0, []
    while not any(e["event"] == "reconnecting" for e in events):
        assert reader.get(timeout=0.1) is None or polls < 20
        events += reader.pop_events()
        polls += 1
        assert polls < 100
    rtsp.start()
    item = reader.get(timeout=15)
    assert item is not None and item[0].index > indices[-1]
    events += reader.pop_events()
    assert [e["event"] for e in events][0] == "offline" and "online" in [e["event"] for e in events]

    t0 = time.monotonic()
    assert reader.close()
    assert time.monotonic() - t0 < FAST.read_timeout_s + 1
    assert reader.finished and reader.get(timeout=0) is None
    assert reader.pop_events()[-1]["event"] == "eos"
    assert threading.active_count() == threads_before


@needs_rtsp
def test_latest_frame_reader_reports_source_error(rtsp: RtspServer) -> None:
    src = StreamSource(rtsp.url, reconnect=replace(FAST, max_attempts=1, backoff_initial_s=0.05))
    with LatestFrameReader(src) as reader:
        assert reader.get(timeout=10) is not None
        rtsp.kill()
        with pytest.raises(SourceError, match="gave up after 1 reconnect attempt "):
            while True:
                reader.get(timeout=10)
        assert reader.finished
