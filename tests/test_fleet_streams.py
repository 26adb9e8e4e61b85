"""The fleet over live streams on a real Ray cluster (two worker nodes on this machine).

Three realtime synthetic streams on two worker actors; the node of the two-stream worker is
removed: Ray restarts that worker on the other node, its streams publish again there, the
directory points at the new endpoint, and a real ZeroMQ SUB receives their frames from it.
The untouched stream keeps its endpoint. Then its pipeline is killed on its live node: the
worker starts it again on a new endpoint, which the directory shows. Ctrl-C stops
everything, leaving nothing behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
import zmq  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from test_fleet_files import FAST_HEALTH, leaked_segments, shm_names  # noqa: E402

from pipeline.fleet.child import fleet_processes  # noqa: E402
from pipeline.fleet.directory import fetch_streams  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STREAMS = [
    "cam-a=synthetic://?seed=1&size=320x240&fps=8&frames=100000",
    "cam-b=synthetic://?seed=2&size=160x120&fps=8&frames=100000",
    "cam-c=synthetic://?seed=3&size=160x120&fps=8&frames=100000",
]
PIPELINE_ARGS = ["--realtime", "--model", "maskrcnn_demo", "--backend", "onnxruntime",
                 "--min-size", "128", "--max-size", "160", "--batch-size", "2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(endpoint_or_port: str | int) -> bool:
    """Whether nothing listens on the port (TIME_WAIT leftovers of closed connections are
    not a leak: SO_REUSEADDR binds over them, never over a listener)."""
    port = int(str(endpoint_or_port).rsplit(":", 1)[-1])
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_for(what: str, check, timeout_s: float, fleet: subprocess.Popen):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and fleet.poll() is None:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    if fleet.poll() is not None:
        pytest.fail(f"the fleet ended ({fleet.returncode}): {fleet.stderr.read()[-2000:]}")
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def receive_frame(endpoint: str, topic: str, timeout_s: float = 45.0) -> int:
    """Connect a SUB to ``endpoint`` and return the seq header byte count of one frame
    of ``topic`` (proof that a frame arrived from there)."""
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, topic.encode() + b"\0")
    sub.connect(endpoint)
    try:
        if not sub.poll(int(timeout_s * 1000)):
            pytest.fail(f"no frame of topic {topic} from {endpoint} in {timeout_s:.0f} s")
        parts = sub.recv_multipart()
        assert parts[0] == topic.encode() + b"\0"
        return len(parts[1])
    finally:
        sub.close()


def pipeline_pids(fragment: str) -> list[int]:
    """The run_pipeline.py processes whose command line holds ``fragment``."""
    out = subprocess.run(["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True).stdout  # ww: whole lines
    return [int(line.split(None, 1)[0]) for line in out.splitlines()
            if "run_pipeline.py" in line and fragment in line]


def directory(url: str) -> dict:
    try:
        return fetch_streams(url)
    except OSError:
        return {}


@pytest.mark.timeout(300)
def test_streams_move_when_a_node_dies_and_the_directory_follows(tmp_path) -> None:
    shm_before = shm_names()
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "_system_config": FAST_HEALTH})
    nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    port = free_port()
    url = f"http://127.0.0.1:{port}/streams"
    cmd = [sys.executable, "-m", "pipeline.fleet", "streams", *STREAMS, "--max-per-worker", "2",
           "--address", cluster.address, "--directory", f"127.0.0.1:{port}",
           "--publish-host", "127.0.0.1", "--", *PIPELINE_ARGS]
    fleet = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
    endpoints = set()
    try:
        live = wait_for("three live streams", lambda: (
            d if len(d := directory(url)) == 3 and all(e["status"] == "live" for e in d.values())
            else None), 90, fleet)
        for entry in live.values():  # every stream delivers frames where it says
            receive_frame(entry["endpoint"], entry["topic"])
            endpoints.add(entry["endpoint"])
        assert live["cam-b"]["endpoint"] == live["cam-c"]["endpoint"]  # balanced: 320x240 alone
        assert live["cam-a"]["node"] != live["cam-b"]["node"]  # spread over the nodes
        victim = next(n for n in nodes if n.node_id == live["cam-b"]["node"])
        removed_at = time.time()
        cluster.remove_node(victim)

        def moved():
            d = directory(url)
            ok = all(d.get(n, {}).get("status") == "live" and d[n]["node"] != victim.node_id
                     and d[n]["since"] > removed_at for n in ("cam-b", "cam-c"))
            return d if ok else None

        after = wait_for("cam-b and cam-c to move", moved, 90, fleet)
        moved_in = max(after[n]["since"] for n in ("cam-b", "cam-c")) - removed_at
        assert after["cam-b"]["endpoint"] != live["cam-b"]["endpoint"]
        assert after["cam-a"]["endpoint"] == live["cam-a"]["endpoint"]  # untouched
        for name in ("cam-b", "cam-c"):
            receive_frame(after[name]["endpoint"], after[name]["topic"])
            endpoints.add(after[name]["endpoint"])
        print(f"restarted {moved_in:.1f} s after the node loss")

        # cam-a's pipeline killed on a live node (as the OOM killer would): its worker starts it again
        (victim_pid,) = pipeline_pids("seed=1&")
        killed_at = time.time()
        os.kill(victim_pid, signal.SIGKILL)
        relaunched = wait_for("cam-a to be relaunched", lambda: (
            d if (e := (d := directory(url)).get("cam-a", {})).get("status") == "live" and e["since"] > killed_at
            else None), 60, fleet)
        assert relaunched["cam-a"]["endpoint"] != live["cam-a"]["endpoint"]
        assert relaunched["cam-a"]["node"] == live["cam-a"]["node"]  # the same worker, on its node
        receive_frame(relaunched["cam-a"]["endpoint"], relaunched["cam-a"]["topic"])
        endpoints.add(relaunched["cam-a"]["endpoint"])
        fleet.send_signal(signal.SIGINT)
        _, stderr = fleet.communicate(timeout=60)
    finally:
        if fleet.poll() is None:
            fleet.kill()
            fleet.wait()
        cluster.shutdown()
    assert fleet.returncode == 130, stderr
    assert "stream cam-b: restarting" in stderr and "stream cam-a: restarting" in stderr
    deadline = time.monotonic() + 20
    while fleet_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert fleet_processes() == []
    assert leaked_segments(shm_before) == []
    assert port_free(port) and all(port_free(e) for e in endpoints)
