"""Shared fixtures: small real videos, pipeline configs, leftover checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engines.engine_cache import CACHE_ENV
from pipeline.config import PipelineConfig, config_from_dict
from pipeline.transport.shm import NAME_PREFIX, SHM_DIR

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from media import make_video  # noqa: E402


def small_config(uri: str | Path | list[str], tmp_path: Path, **sections) -> PipelineConfig:
    """A fast pipeline config for tests: random-weight demo model at a small input size."""
    data = {
        "source": {"uri": uri if isinstance(uri, list) else str(uri)},
        "model": {"name": "maskrcnn_demo", "weights": "random", "min_size": 128, "max_size": 192,
                  "score_threshold": 0.0, "backend": "pytorch"},
        "batching": {"batch_size": 3, "max_wait_ms": 10_000},  # deterministic batches: always full
        "output": {"video": str(tmp_path / "overlay.mp4"), "publish": f"ipc://{tmp_path}/pub.sock",
                   "save_results": str(tmp_path / "results.jsonl"), "progress": False},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return config_from_dict(data)


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def h264_video(video_dir) -> Path:
    """7 frames of H.264 with B-frames in MP4, 160x120."""
    return make_video(video_dir / "bframes.mp4", 7, 160, 120, "libx264", 25, bframes=2)


def segments_of(pid: int) -> list[str]:
    return [p.name for p in SHM_DIR.glob(f"{NAME_PREFIX}{pid}-*")]


def stage_processes(run_id: str | None = None) -> list[str]:
    """Command lines of live stage processes (of one run, or of any)."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in out if line.startswith("segstream: ") and (run_id is None or run_id in line)]


def run_cli(args: list[str], timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "run_pipeline.py"), *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=kwargs.pop("cwd", REPO), **kwargs,
    )


def stage_pids(supervisor_pid: int) -> dict[str, int]:
    """Stage name -> pid of the stage processes a supervisor started."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(supervisor_pid)], capture_output=True, text=True).stdout
    stages = {}
    for line in out.splitlines():
        child_pid, _, args = line.strip().partition(" ")
        if args.startswith("segstream: "):
            stages[args.split()[1]] = int(child_pid)
    return stages


def leftovers() -> list[str]:
    """Anything a finished run could have leaked: ring segments and run directories of
    supervisors that are gone, and stage processes orphaned to init."""
    from pipeline.supervisor import RUN_DIR_PREFIX
    from pipeline.transport.shm import pid_alive

    found = []
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    owned = [(path, NAME_PREFIX) for path in SHM_DIR.glob(f"{NAME_PREFIX}*")]
    owned += [(path, RUN_DIR_PREFIX) for path in tmp.glob(f"{RUN_DIR_PREFIX}*")]
    for path, prefix in owned:
        pid = path.name.removeprefix(prefix).split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            found.append(str(path))
    # a live stage process orphaned to init (zombies, state Z, are dead: init reaps them)
    out = subprocess.run(["ps", "-eo", "ppid=,stat=,args="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        ppid, stat, args = line.split(None, 2)
        if ppid == "1" and not stat.startswith("Z") and "segstream: " in args:
            found.append(line)
    return found


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory) -> Iterator[Path]:
    """A cache root (``SEGSTREAM_CACHE``) of the test module's own: exports and engines it
    makes are shared by its tests and by no other module's."""
    root = tmp_path_factory.mktemp("segstream-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(root))
        yield root


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Exported ONNX graphs and engines go to a per-session cache, never the user's."""
    os.environ["SEGSTREAM_CACHE"] = str(tmp_path_factory.mktemp("segstream-cache"))
    yield


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for the test (small models train and compare reproducibly)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# the flags of a fast run that fails before any model loads (the bad-input tests)
FAST_FAIL_ARGS = ["--weights", "random", "--output", "none", "--publish", "none", "--no-progress"]


def run_with_port_taken(flag: str) -> tuple[subprocess.CompletedProcess, str, float]:
    """``run_pipeline.py`` with ``flag`` naming a loopback port another socket holds:
    (the result, the address, seconds it took)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        start = time.monotonic()
        result = run_cli([*FAST_FAIL_ARGS, flag, address], timeout=60)
        return result, address, time.monotonic() - start


def scrape_metrics(port: int) -> dict[tuple, float]:
    """One scrape of ``http://127.0.0.1:PORT/metrics``, parsed with the Prometheus text
    parser: (sample name, sorted labels) -> value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}
