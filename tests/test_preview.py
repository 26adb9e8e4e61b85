"""Live preview (``--preview HOST:PORT``): the latest-frame hub, its HTTP server, a real run
watched in headless Chromium, and bad input. No mocks."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_FAIL_ARGS, REPO, leftovers, run_cli, run_with_port_taken
from PIL import Image

from pipeline.preview.hub import PreviewHub, StreamFeed
from pipeline.preview.server import PreviewServer

FRAMES, FPS = 200, 10
SOURCE = f"synthetic://?seed=5&size=320x240&fps={FPS}&frames={FRAMES}"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _image(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    return np.full((h, w, 3), i % 256, np.uint8)


# -- the hub -------------------------------------------------------------------------------
def test_without_viewers_the_writer_is_offered_nothing_and_the_rate_is_capped():
    feed = StreamFeed("0", "test", min_interval_s=0.05)
    assert not feed.wants_frame()  # nobody watching: publish copies and encodes nothing
    with feed.viewer():
        assert feed.wants_frame()
        feed.offer(_image(1))
        assert not feed.wants_frame()  # at most one frame per min_interval_s
        time.sleep(0.06)
        assert feed.wants_frame()
    assert not feed.wants_frame()


def test_a_paused_or_slow_reader_never_blocks_the_writer():
    feed = StreamFeed("0", "test", min_interval_s=0)
    big = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), np.uint8)  # tens of ms to encode
    stop = threading.Event()

    def slow_reader():  # encodes the latest frame over and over (the encoding is the slow part)
        with feed.viewer():
            while not stop.is_set():
                feed.latest_jpeg()

    def paused_reader():  # takes one frame, then never asks again
        with feed.viewer():
            feed.next_jpeg(0, 5)
            stop.wait()

    readers = [threading.Thread(target=slow_reader), threading.Thread(target=paused_reader)]
    feed.offer(big.copy())
    for t in readers:
        t.start()
    time.sleep(0.2)
    slowest = 0.0
    for i in range(300):
        image = big.copy() if i % 30 == 0 else _image(i)
        start = time.perf_counter()
        feed.offer(image)
        slowest = max(slowest, time.perf_counter() - start)
    stop.set()
    for t in readers:
        t.join(5)
    assert slowest < 0.01, f"an offer waited {slowest * 1000:.1f} ms"
    assert feed.version == 301 and feed.viewers == 0


def test_memory_is_bounded_to_the_latest_frame():
    feed = StreamFeed("0", "test", min_interval_s=0)
    refs = []
    with feed.viewer():
        for i in range(200):
            image = _image(i)
            refs.append(weakref.ref(image))
            feed.offer(image)
            del image
            if i % 50 == 0:
                feed.latest_jpeg()
    alive = [i for i, ref in enumerate(refs) if ref() is not None]
    assert alive == [199]  # nobody read them: every frame but the latest is gone
    version, jpeg = feed.latest_jpeg()
    assert version == 200 and Image.open(io.BytesIO(jpeg)).size == (64, 48)
    assert refs[199]() is None  # encoded: only its JPEG is kept


def test_several_readers_each_get_the_latest_frames_encoded_once():
    feed = StreamFeed("0", "test", min_interval_s=0)
    got: dict[int, list[tuple[int, bytes]]] = {i: [] for i in range(3)}
    entered = threading.Barrier(4)

    def reader(i: int) -> None:
        with feed.viewer():
            entered.wait()
            version = 0
            while version < 20:
                found = feed.next_jpeg(version, 5)
                assert found is not None
                version = found[0]
                got[i].append(found)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    entered.wait()
    for i in range(1, 21):
        feed.offer(_image(i * 10))
        time.sleep(0.01)
    for t in threads:
        t.join(5)
    for frames in got.values():
        versions = [v for v, _ in frames]
        assert versions == sorted(set(versions)) and versions[-1] == 20  # newer each time, up to the last
    last = [frames[-1][1] for frames in got.values()]
    assert last[0] is last[1] is last[2]  # one JPEG for all viewers
    assert np.asarray(Image.open(io.BytesIO(last[0]))).mean() == pytest.approx(200, abs=2)


def test_the_server_ends_its_viewers_and_frees_the_port():
    hub = PreviewHub([("0", "test")], min_interval_s=0)
    server = PreviewServer(hub, "127.0.0.1", 0)
    server.start()
    feed = hub.feeds["0"]
    feed.offer(_image(7))
    feed.record(frames=3, dropped=1, instances=2, latency_ms=12.0)
    stats = json.loads(urllib.request.urlopen(server.url + "stream/0/stats.json", timeout=5).read())
    assert stats | {"fps": 0} == {"stream": "0", "source": "test", "fps": 0, "latency_p50_ms": 12.0, "viewers": 0,
                                  "frames": 3, "dropped": 1, "instances": 2, "status": "online"}
    stream = urllib.request.urlopen(server.url + "stream/0/mjpeg", timeout=5)
    assert stream.headers["Content-Type"].startswith("multipart/x-mixed-replace")
    assert stream.readline().strip() == b"--segstreamframe"
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(server.url + "stream/9", timeout=5)
    start = time.monotonic()
    server.stop()
    stream.read()  # the server ended the stream
    assert time.monotonic() - start < 3
    assert _port_is_free(server.port)


# -- a run, watched in Chromium ------------------------------------------------------------
def _chrome():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (os.path.exists(CHROMEDRIVER) and (shutil.which("chromium") or shutil.which("chromium-browser"))):
        pytest.skip("no chromium/chromedriver: scripts/install-test-deps.sh installs them")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=640,480",
                "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # the viewport itself 640x480
                           {"width": 640, "height": 480, "deviceScaleFactor": 1, "mobile": False})
    return driver


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator[dict]:
    """A realtime run with the preview on, and a viewer that connects and never reads."""
    tmp = tmp_path_factory.mktemp("preview")
    port = _free_port()
    args = [sys.executable, str(REPO / "run_pipeline.py"), "--source", SOURCE, "--realtime",
            "--live-policy", "block", "--model", "maskrcnn_demo", "--weights", "random", "--backend", "pytorch",
            "--min-size", "128", "--max-size", "192", "--score-threshold", "0.3", "--output", str(tmp / "o.mp4"),
            "--publish", "none", "--report", str(tmp / "report.json"), "--no-progress", "--preview",
            f"127.0.0.1:{port}"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}/"
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a frame or two
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + "stream/0/stats.json", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
                time.sleep(0.2)
        stalled.connect(("127.0.0.1", port))
        stalled.sendall(b"GET /stream/0/mjpeg HTTP/1.0\r\n\r\n")  # and never reads
        yield {"proc": proc, "url": url, "port": port, "tmp": tmp, "started": time.monotonic()}
    finally:
        stalled.close()
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=60)


def _stats(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url + "stream/0/stats.json", timeout=5).read())


def _image_pixels(element) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB"), np.int16)


def _wait(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return found


def test_chromium_shows_the_live_overlay_and_stats(run):
    from selenium.webdriver.common.by import By

    first = _chrome()
    second = None
    try:
        first.get(run["url"])
        first.find_element(By.LINK_TEXT, "stream 0").click()  # the index links each stream
        image = first.find_element(By.ID, "view")
        _wait(lambda: first.execute_script("return arguments[0].naturalWidth", image) == 320)
        frames_before = int(_wait(lambda: first.find_element(By.ID, "frames").text.isdigit()
                                  and first.find_element(By.ID, "frames").text))
        before = _image_pixels(image)
        time.sleep(1.0)
        after = _image_pixels(image)
        assert before.shape == after.shape and np.abs(before - after).mean() > 0.5  # the picture moves
        _wait(lambda: int(first.find_element(By.ID, "frames").text) > frames_before, 5)  # stats update
        assert first.find_element(By.ID, "status").text == "online"
        assert float(first.find_element(By.ID, "fps").text) > 0
        second = _chrome()  # a second viewer at the same time
        second.get(run["url"] + "stream/0")
        image2 = second.find_element(By.ID, "view")
        _wait(lambda: second.execute_script("return arguments[0].naturalWidth", image2) == 320)
        assert _stats(run["url"])["viewers"] >= 3  # both browsers and the stalled socket
        if os.environ.get("SEGSTREAM_UPDATE_DOCS") == "1":
            first.save_screenshot(str(REPO / "docs" / "preview.png"))
        jpeg = urllib.request.urlopen(run["url"] + "stream/0/frame.jpg", timeout=5).read()
        assert Image.open(io.BytesIO(jpeg)).size == (320, 240)
    finally:
        for driver in (first, second):
            if driver is not None:
                driver.quit()


def test_a_stalled_viewer_does_not_slow_the_run(run):
    """The socket that connected and never reads stays connected all along: the run still
    publishes every frame (the source blocks rather than drops) at about the source's rate."""
    proc = run["proc"]
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    report = json.loads((run["tmp"] / "report.json").read_text())
    assert report["frames_written"] == FRAMES and report["frames_dropped"] == 0
    # the source alone takes FRAMES / FPS = 20 s; a blocked publish loop would never finish
    assert time.monotonic() - run["started"] < 2.5 * FRAMES / FPS + 15, err
    assert "live preview on http://127.0.0.1:" in err
    assert _port_is_free(run["port"])
    assert not leftovers()


# -- bad input -----------------------------------------------------------------------------
BASE = FAST_FAIL_ARGS


def test_a_port_in_use_fails_at_once_with_one_line():
    result, address, elapsed = run_with_port_taken("--preview")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: observability.preview: cannot serve the preview on '{address}': Address already in use"]
    assert elapsed < 20, f"took {elapsed:.0f} s to fail"


@pytest.mark.parametrize(("address", "message"), [
    ("0.0.0.0:8090", "'0.0.0.0:8090' is not a loopback address: set output.allow_remote (--allow-remote) "
                     "to serve the preview on it"),
    ("localhost", "'localhost' is not HOST:PORT (e.g. 127.0.0.1:8090)"),
])
def test_a_bad_address_fails_with_one_line(address: str, message: str):
    result = run_cli([*BASE, "--preview", address], timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"error: observability.preview: {message}"]


def test_docs_screenshot_is_small():
    shot = Path(REPO / "docs" / "preview.png")
    assert shot.is_file() and shot.stat().st_size < 300_000
    assert Image.open(shot).size == (640, 480)
