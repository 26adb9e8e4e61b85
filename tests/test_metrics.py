"""Prometheus metrics (``--metrics HOST:PORT``, pipeline/supervision/metrics.py): the stage
stats and events a supervisor receives, translated into metrics (in, parsed exposition out);
a real run scraped over HTTP while it runs, whose last metrics agree with its report and
whose port is free again afterwards; a port in use or a remote address refused at once."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import FAST_FAIL_ARGS, REPO, leftovers, run_cli, run_with_port_taken, small_config
from prometheus_client.parser import text_string_to_metric_families

from pipeline.cli import build_parser, overrides_from_args
from pipeline.errors import ConfigError
from pipeline.sources import open_source
from pipeline.stages.capture_feeds import FileFeed, feed_stats
from pipeline.supervision.metrics import MetricsServer, RunMetrics, metrics_address, restart_reason
from pipeline.supervisor import Supervisor

COUNTERS = ["frames_read", "frames_dropped", "frames_processed", "frames_published", "decode_errors",
            "reconnects", "offline_seconds", "batches", "stage_busy_seconds", "restarts", "status_events"]
GAUGES = ["input_fps", "output_fps", "stage_busy_ratio", "batch_size", "ring_slots", "ring_slots_in_use",
          "stream_online"]
FRAMES = 36


def _parse(text: str) -> tuple[dict[str, str], dict[tuple, float]]:
    """Family name -> type, and (sample name, sorted labels) -> value."""
    types, samples = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return types, samples


def _value(samples: dict[tuple, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the metrics module: stats in, exposition out ------------------------------------------
def test_stage_stats_become_counters_gauges_and_a_histogram():
    clock = Clock()
    metrics = RunMetrics(["0", "1"], clock=clock)
    capture = {"busy_s": 0.0, "ring_slots_in_use": 4,
               "streams": {"0": {"read": 0, "dropped": 0, "decode_errors": 0},
                           "1": {"read": 0, "dropped": 0, "decode_errors": 0, "reconnects": 0, "offline_s": 0.0}}}
    metrics.handle_event({"stage": "capture", "type": "heartbeat", "stats": capture})
    metrics.handle_event({"stage": "infer", "type": "heartbeat", "stats": {"busy_s": 0.0, "frames_processed": 0, "batches": 0}})
    clock.now += 2.0
    capture = {"busy_s": 0.5, "ring_slots_in_use": 6,
               "streams": {"0": {"read": 40, "dropped": 2, "decode_errors": 1},
                           "1": {"read": 20, "dropped": 0, "decode_errors": 0, "reconnects": 1, "offline_s": 2.5}}}
    metrics.handle_event({"stage": "capture", "type": "heartbeat", "stats": capture})
    metrics.handle_event({"stage": "infer", "type": "done", "stats": {"busy_s": 1.5, "frames_processed": 24, "batches": 6}})
    metrics.handle_event({"stage": "publish", "type": "heartbeat", "stats": {"busy_s": 0.1, "streams": {"0": {"frames": 18, "dropped": 2}}}})
    metrics.handle_event({"stage": "publish", "type": "progress", "frames": 18, "latencies_ms": [5.0, 150.0, 2000.0],
                          "status": [{"stream": "1", "event": "offline"}, {"stream": "1", "event": "online"}]})
    metrics.on_restart("postprocess", restart_reason(hung=False, reported=False))
    metrics.set_ring_slots(12)

    types, samples = _parse(metrics.exposition())
    assert {f"segstream_{name}": "counter" for name in COUNTERS}.items() <= types.items()
    assert {f"segstream_{name}": "gauge" for name in GAUGES}.items() <= types.items()
    assert types["segstream_latency_seconds"] == "histogram"
    assert _value(samples, "segstream_frames_read_total", stream="0") == 40
    assert _value(samples, "segstream_frames_read_total", stream="1") == 20
    assert _value(samples, "segstream_frames_dropped_total", stream="0") == 2
    assert _value(samples, "segstream_decode_errors_total", stream="0") == 1
    assert _value(samples, "segstream_reconnects_total", stream="1") == 1
    assert _value(samples, "segstream_offline_seconds_total", stream="1") == 2.5
    assert _value(samples, "segstream_frames_processed_total") == 24
    assert _value(samples, "segstream_batches_total") == 6
    assert _value(samples, "segstream_frames_published_total", stream="0") == 18
    assert _value(samples, "segstream_frames_published_total", stream="1") == 0  # a known stream: zero from the start
    assert _value(samples, "segstream_input_fps", stream="0") == 20.0  # 40 frames in 2 s
    assert _value(samples, "segstream_stage_busy_ratio", stage="capture") == 0.25  # 0.5 s of 2 s
    assert _value(samples, "segstream_stage_busy_seconds_total", stage="infer") == 1.5
    assert _value(samples, "segstream_batch_size") == 4.0
    assert _value(samples, "segstream_ring_slots") == 12
    assert _value(samples, "segstream_ring_slots_in_use") == 6
    assert _value(samples, "segstream_restarts_total", stage="postprocess", reason="died") == 1
    assert _value(samples, "segstream_status_events_total", stream="1", event="offline") == 1
    assert _value(samples, "segstream_stream_online", stream="1") == 1
    assert _value(samples, "segstream_latency_seconds_count") == 3
    assert _value(samples, "segstream_latency_seconds_bucket", le="0.01") == 1
    assert _value(samples, "segstream_latency_seconds_bucket", le="0.25") == 2
    assert _value(samples, "segstream_latency_seconds_bucket", le="2.5") == 3
    assert _value(samples, "segstream_latency_seconds_sum") == pytest.approx(2.155)


def test_counters_never_go_back_when_a_stage_restarts():
    clock = Clock()
    metrics = RunMetrics(["0"], clock=clock)

    def publish(frames: int) -> None:
        clock.now += 1.0
        metrics.update_from_stats("publish", {"busy_s": frames / 10, "streams": {"0": {"frames": frames}}})

    publish(20)
    publish(16)  # a restarted publish resumes from its last commit
    publish(22)  # ... and publishes frames 16-19 again: they went out twice
    _, samples = _parse(metrics.exposition())
    assert _value(samples, "segstream_frames_published_total", stream="0") == 26
    assert _value(samples, "segstream_stage_busy_seconds_total", stage="publish") == pytest.approx(2.6)
    assert _value(samples, "segstream_output_fps", stream="0") == pytest.approx((26 - 20) / 2)  # 2 s window


def test_values_that_are_not_numbers_are_ignored():
    metrics = RunMetrics(["0"])
    metrics.handle_event({"stage": "capture", "type": "heartbeat",
                          "stats": {"busy_s": "x", "streams": {"0": {"read": True, "dropped": None}, "1": "bad"}}})
    metrics.handle_event({"stage": "publish", "type": "progress", "latencies_ms": ["x", -1, None], "status": ["bad"]})
    metrics.handle_event({"stage": "infer", "type": "heartbeat", "stats": None})
    _, samples = _parse(metrics.exposition())
    assert _value(samples, "segstream_frames_read_total", stream="0") == 0
    assert _value(samples, "segstream_latency_seconds_count") == 0


def test_restart_reasons():
    assert restart_reason(hung=True, reported=False) == "hung"
    assert restart_reason(hung=False, reported=True) == "error"
    assert restart_reason(hung=False, reported=False) == "died"


@pytest.mark.parametrize("address, remote, expected", [
    ("127.0.0.1:9108", False, ("127.0.0.1", 9108)),
    ("localhost:0", False, ("localhost", 0)),
    ("[::1]:9108", False, ("::1", 9108)),
    ("0.0.0.0:9108", True, ("0.0.0.0", 9108)),
])  # fmt: skip
def test_metrics_address(address, remote, expected):
    assert metrics_address(address, remote) == expected


@pytest.mark.parametrize("address, remote, fragment", [
    ("127.0.0.1", False, "is not HOST:PORT"),
    (":9108", False, "is not HOST:PORT"),
    ("127.0.0.1:http", False, "is not HOST:PORT"),
    ("127.0.0.1:70000", False, "is not HOST:PORT"),
    ("0.0.0.0:9108", False, "not a loopback address"),
    ("example.com:9108", False, "not a loopback address"),
])  # fmt: skip
def test_bad_metrics_address_names_the_key(address, remote, fragment):
    with pytest.raises(ConfigError) as err:
        metrics_address(address, remote)
    assert str(err.value).startswith(f"observability.metrics: '{address}'") and fragment in str(err.value)


def test_metrics_flag_sets_the_config_key():
    args = build_parser().parse_args(["--metrics", "127.0.0.1:9108"])
    assert overrides_from_args(args) == {"observability.metrics": "127.0.0.1:9108"}
    assert overrides_from_args(build_parser().parse_args(["--metrics", "none"])) == {"observability.metrics": None}


def test_capture_counts_per_stream():
    feed = FileFeed("0", open_source("synthetic://?seed=3&size=64x48&fps=10&frames=5"), 0, None, contextlib.nullcontext)
    try:
        for _ in range(3):
            assert feed.get(0.0) is not None
            feed.advance()
        assert feed_stats([feed])["streams"] == {"0": {"read": 3, "dropped": 0, "decode_errors": 0}}
    finally:
        feed.close()


# -- the HTTP server -----------------------------------------------------------------------
def _port_is_free(port: int) -> bool:
    """A new server could listen on ``port`` now (as servers do, with SO_REUSEADDR: scrape
    connections the server closed leave TIME_WAIT entries that are no obstacle to it)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
    return True


def test_server_serves_the_registry_and_frees_its_port():
    metrics = RunMetrics(["0"])
    server = MetricsServer(metrics.registry, "127.0.0.1", 0)
    server.start()
    try:
        metrics.update_from_stats("capture", {"streams": {"0": {"read": 7}}})
        with urllib.request.urlopen(server.url, timeout=10) as response:
            _, samples = _parse(response.read().decode())
        assert _value(samples, "segstream_frames_read_total", stream="0") == 7
        with socket.socket() as taken, pytest.raises(ConfigError) as err:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            MetricsServer(metrics.registry, "127.0.0.1", taken.getsockname()[1]).start()
        assert "observability.metrics: cannot serve metrics on '127.0.0.1:" in str(err.value)
    finally:
        server.stop()
    assert _port_is_free(server.port)
    server.stop()  # again: nothing to do


# -- a real run ----------------------------------------------------------------------------
class Scraper(threading.Thread):
    """Scrapes a running supervisor's /metrics every 0.2 s until the server is gone; kills
    postprocess once frames are being read (the run goes on: it is restarted)."""

    def __init__(self, supervisor: Supervisor) -> None:
        super().__init__(daemon=True)
        self.supervisor = supervisor
        self.texts: list[str] = []
        self.killed: int | None = None
        self.port: int | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while self.supervisor.metrics_server is None or self.supervisor.metrics_server.port == 0:
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        server = self.supervisor.metrics_server
        self.port = server.port
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(server.url, timeout=10) as response:
                    self.texts.append(response.read().decode())
            except (urllib.error.URLError, ConnectionError):
                return  # the run is over: the server has stopped
            self._fault()
            time.sleep(0.2)

    def _fault(self) -> None:
        _, samples = _parse(self.texts[-1])
        process = self.supervisor.stages["postprocess"].process
        if self.killed is None and (_value(samples, "segstream_frames_read_total", stream="0") or 0) > 0:
            os.kill(process.pid, signal.SIGKILL)
            self.killed = process.pid


def test_a_run_is_scraped_while_it_runs_and_its_metrics_agree_with_the_report(tmp_path):
    config = small_config(f"synthetic://?seed=7&size=160x120&fps=25&frames={FRAMES}", tmp_path,
                          supervision={"restart_backoff_s": 0.1}, observability={"metrics": "127.0.0.1:0"})
    supervisor = Supervisor(config)
    scraper = Scraper(supervisor)
    scraper.start()
    report = supervisor.run()
    scraper.join(timeout=30)
    assert scraper.killed is not None, "no scrape showed frames read"

    # during the run: frames counted, names, label names and types as documented
    during = [_parse(text) for text in scraper.texts]
    running = [(types, samples) for types, samples in during
               if (_value(samples, "segstream_frames_published_total", stream="0") or 0) > 0]
    assert running, "no scrape during the run showed published frames"
    types, samples = running[0]
    assert {f"segstream_{name}": "counter" for name in COUNTERS}.items() <= types.items()
    assert {f"segstream_{name}": "gauge" for name in GAUGES}.items() <= types.items()
    assert types["segstream_latency_seconds"] == "histogram"
    assert _value(samples, "segstream_latency_seconds_count") > 0
    stages = {dict(labels)["stage"] for name, labels in samples if name == "segstream_stage_busy_ratio"}
    assert stages <= {"capture", "preprocess", "infer", "postprocess", "publish"} and "infer" in stages

    # after it: the metrics as the run ended agree with its report
    _, final = _parse(supervisor.metrics_snapshot())
    assert report["frames_read"] == _value(final, "segstream_frames_read_total", stream="0") == FRAMES
    assert report["frames_published"] == _value(final, "segstream_frames_published_total", stream="0") == FRAMES
    assert report["frames_dropped"] == _value(final, "segstream_frames_dropped_total", stream="0") == 0
    assert report["decode_errors"] == _value(final, "segstream_decode_errors_total", stream="0")
    # infer ran on the replayed frames as well; the report may hold its ``done`` from before
    # the replay (the supervisor waits only for the restarted stage's next one)
    assert _value(final, "segstream_frames_processed_total") >= report["frames_processed"] >= FRAMES
    assert _value(final, "segstream_batches_total") >= report["batches"] >= FRAMES // 3
    assert [r["stage"] for r in report["restarts"]] == ["postprocess"]
    assert _value(final, "segstream_restarts_total", stage="postprocess", reason="died") == 1
    assert _value(final, "segstream_latency_seconds_count") == FRAMES  # publish was not restarted
    assert _value(final, "segstream_status_events_total", stream="0", event="eos") == 1
    for stage in ("capture", "publish"):  # busy before their ``done`` only: the report's
        busy = _value(final, "segstream_stage_busy_seconds_total", stage=stage)
        assert busy == pytest.approx(report["stages"][stage]["busy_s"], abs=0.002)
    assert _port_is_free(scraper.port)
    assert not leftovers()


# -- bad input -----------------------------------------------------------------------------
BASE = FAST_FAIL_ARGS


def test_a_port_in_use_fails_at_once_with_one_line():
    result, address, elapsed = run_with_port_taken("--metrics")
    assert result.returncode == 2, result.stderr
    # one line, and nothing else: no stage started, no model loaded
    assert result.stderr.splitlines() == [
        f"error: observability.metrics: cannot serve metrics on '{address}': Address already in use"]
    assert elapsed < 20, f"took {elapsed:.0f} s to fail"
    assert not leftovers()


def test_a_remote_address_needs_allow_remote():
    start = time.monotonic()
    result = run_cli([*BASE, "--metrics", "0.0.0.0:9108"], timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "error: observability.metrics: '0.0.0.0:9108' is not a loopback address: set output.allow_remote "
        "(--allow-remote) to serve metrics on it"]
    assert time.monotonic() - start < 20


def test_metrics_without_prometheus_client_is_one_line_and_exit_2():
    """The ``metrics`` extra missing (the package made unimportable in that process)."""
    code = ("import sys; sys.modules['prometheus_client'] = None; from pipeline.cli import main; "
            f"sys.exit(main({[*FAST_FAIL_ARGS, '--metrics', '127.0.0.1:0']!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "error: observability.metrics: '127.0.0.1:0' needs the prometheus_client package "
        "(pip install 'segstream[metrics]')"]
