"""Every exit path leaves nothing behind: normal end, Ctrl-C/SIGTERM (drains), a stage
killed with SIGKILL and restarts off, the supervisor itself killed, and bad input (fails
within seconds). Restarts with replay: tests/test_restarts.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import pytest
from conftest import REPO, leftovers, make_video, run_cli, segments_of, stage_pids

from pipeline.client import ResultSubscriber
from pipeline.supervisor import RUN_DIR_PREFIX, remove_stale_run_dirs
from pipeline.transport.shm import remove_stale_segments


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def _wait_gone(pids, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("long") / "long.mp4", 150, 160, 120, "libx264", 25)


def _start(tmp_path: Path, video: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    endpoint = f"ipc://{tmp_path}/pub.sock"
    args = [
        sys.executable, str(REPO / "run_pipeline.py"), "--source", str(video), "--model", "maskrcnn_demo",
        "--weights", "random", "--min-size", "128", "--max-size", "192", "--no-progress",
        "--output", str(tmp_path / "out.mp4"), "--publish", endpoint, "--report", str(tmp_path / "report.json"),
        *extra,
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    return proc, endpoint


def _wait_first_result(endpoint: str, proc: subprocess.Popen) -> None:
    with ResultSubscriber(endpoint) as sub:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if sub.recv(timeout_s=1.0) is not None:
                return
            assert proc.poll() is None, proc.communicate()[1]
    pytest.fail("no result within 180 s")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_drains_in_flight_frames_and_cleans_up(tmp_path, long_video, signum):
    proc, endpoint = _start(tmp_path, long_video)
    _wait_first_result(endpoint, proc)
    stages = stage_pids(proc.pid)
    assert set(stages) == {"capture", "preprocess", "infer", "postprocess", "publish"}  # readable names
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "draining" in stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["interrupted"] is True
    # everything read was processed and written: nothing in flight was lost
    assert 0 < report["frames_read"] < 150
    assert report["frames_written"] == report["frames_processed"] == report["frames_read"]
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == report["frames_written"]
    assert not _wait_gone(stages.values())
    assert not segments_of(proc.pid)


# one victim: which stage dies changes nothing in how the run fails (the restart tests kill
# each of the five; the restart policy's decisions are unit-tested in test_policies.py)
@pytest.mark.parametrize("victim", ["publish"])
def test_killed_stage_fails_the_run_naming_it_when_restarts_are_off(tmp_path, long_video, victim):
    proc, endpoint = _start(tmp_path, long_video, "--max-restarts", "0")
    _wait_first_result(endpoint, proc)
    stages = stage_pids(proc.pid)
    os.kill(stages[victim], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    last = stderr.strip().splitlines()[-1]
    assert last == f"error: stage '{victim}' failed: crashed (killed by signal SIGKILL)"
    assert not _wait_gone(stages.values())
    assert not segments_of(proc.pid)
    assert not leftovers()


def test_killed_supervisor_takes_its_stages_along(tmp_path, long_video):
    proc, endpoint = _start(tmp_path, long_video)
    _wait_first_result(endpoint, proc)
    stages = stage_pids(proc.pid)
    proc.kill()
    proc.wait()
    assert not _wait_gone(stages.values()), "stage processes outlived a SIGKILLed supervisor"
    # the segment and run directory of a dead supervisor are reclaimed by the next run's
    # start-up sweep
    assert segments_of(proc.pid)
    run_dirs = list(Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}{proc.pid}-*"))
    assert run_dirs
    remove_stale_segments()
    remove_stale_run_dirs()
    assert not segments_of(proc.pid)
    assert not any(path.exists() for path in run_dirs)
    assert not leftovers()


def _corrupt_file(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(os.urandom(4096))
    return path


BAD_INPUTS = [
    ("missing file", lambda t: ["--source", str(t / "nope.mp4")], "source not found"),
    ("corrupt file", lambda t: ["--source", str(_corrupt_file(t))], "cannot open video"),
    ("unknown scheme", lambda t: ["--source", "gopher://x"], "unknown source scheme 'gopher://'"),
    ("unknown model", lambda t: ["--model", "resnet9000"], "unknown model 'resnet9000'"),
    ("no demo weights", lambda t: ["--model", "lraspp_mobilenet_v3_large", "--weights", "demo"],
     "no demo weights for lraspp_mobilenet_v3_large"),
    ("bad weights file", lambda t: ["--weights", str(t / "w.pt")], "w.pt"),
    ("bad batch size", lambda t: ["--batch-size", "0"], "batching.batch_size"),
    ("remote bind", lambda t: ["--publish", "tcp://0.0.0.0:5999"], "not a loopback address"),
]


@pytest.mark.parametrize("case, args, fragment", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_fails_fast_with_one_line(tmp_path, case, args, fragment):
    start = time.monotonic()
    base = ["--output", str(tmp_path / "o.mp4"), "--publish", f"ipc://{tmp_path}/p.sock", "--no-progress"]
    result = run_cli([*base, *args(tmp_path)], timeout=120)  # the case's flags come last and win
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s to fail"
    assert not leftovers()


def test_bad_config_key_names_file_and_key(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  name: maskrcnn_demo\n  wieghts: demo\n")
    result = run_cli(["--config", str(config)], timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {config}: unknown key 'model.wieghts'"


def test_failing_run_leaves_another_runs_overlay_alone(tmp_path, long_video):
    """Two runs on one --output (the default config makes that easy): a run that fails at
    once must not join or delete the segments of the one still writing (it did, and the
    other run then lost its video)."""
    proc, endpoint = _start(tmp_path, long_video, "--max-restarts", "0")
    _wait_first_result(endpoint, proc)
    segments = lambda: sorted(p.name for p in tmp_path.glob(".out.mp4.*"))  # noqa: E731
    deadline = time.monotonic() + 60
    while not segments() and time.monotonic() < deadline:
        time.sleep(0.1)
    before = segments()
    assert before, "the first run wrote no overlay segment"
    failed = run_cli(["--source", str(tmp_path / "mistyped.mp4"), "--output", str(tmp_path / "out.mp4"),
                      "--publish", "none", "--no-progress"], timeout=60)
    assert failed.returncode == 2 and "source not found" in failed.stderr
    if proc.poll() is None:  # still writing: its segments are all there, no out.mp4 yet
        assert set(before) <= set(segments())
        assert not (tmp_path / "out.mp4").exists(), "the failed run wrote out.mp4"
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["frames_written"] == 150
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 150
    assert not segments()
