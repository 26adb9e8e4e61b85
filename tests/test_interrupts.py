"""Ctrl-C at any moment exits with 130 and a short message: while the program is still
importing (torch), while it starts up, and a second Ctrl-C that aborts the drain."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, leftovers, make_video

from pipeline.client import ResultSubscriber


def _popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "run_pipeline.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


EARLY = [(0.1, signal.SIGINT), (0.3, signal.SIGINT), (0.6, signal.SIGINT), (1.0, signal.SIGINT),
         (2.0, signal.SIGINT), (0.3, signal.SIGTERM), (2.0, signal.SIGTERM)]


@pytest.mark.parametrize("delay_s, signum", EARLY, ids=[f"{s.name}-{d}s" for d, s in EARLY])
def test_signal_while_starting_prints_one_line_and_exits_130(tmp_path, delay_s, signum):
    """Early on, the signal lands in the imports (it printed a 15-line KeyboardInterrupt
    traceback, or an ImportError of a half-imported module); later, in the supervisor's
    start-up, where there is nothing to drain yet."""
    proc = _popen("--output", str(tmp_path / "o.mp4"), "--publish", f"ipc://{tmp_path}/p.sock", "--no-progress")
    time.sleep(delay_s)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["error: aborted by signal"], stderr
    assert not (tmp_path / "o.mp4").exists()
    assert not leftovers()


def test_second_ctrl_c_aborts_the_drain_with_130(tmp_path):
    video = make_video(tmp_path / "long.mp4", 150, 160, 120, "libx264", 25)
    endpoint = f"ipc://{tmp_path}/pub.sock"
    proc = _popen("--source", str(video), "--model", "maskrcnn_demo", "--weights", "random", "--min-size", "128",
                  "--max-size", "192", "--no-progress", "--output", str(tmp_path / "out.mp4"), "--publish", endpoint)
    with ResultSubscriber(endpoint) as sub:
        deadline = time.monotonic() + 180
        while sub.recv(timeout_s=1.0) is None:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    lines = []
    for line in proc.stderr:  # the drain has begun: now the second Ctrl-C
        lines.append(line)
        if "draining" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    stderr = "".join(lines) + rest
    assert proc.returncode == 130, stderr
    assert "error: aborted by signal" in stderr and "Traceback" not in stderr, stderr
    assert not leftovers()
    assert not list(Path(tmp_path).glob(".out.mp4.*")), "segment files left behind"
