"""What watching a run costs: the default pipeline with ``--metrics``, ``--preview`` and
``--foxglove`` all on and watched, against the same run with all three off; and what a
viewer that stops reading does to a realtime run over a minute.

``python -m pipeline.bench_observability [--json OUT] [--frames N] [--rounds R] [--stall-seconds S]``

1. **Overhead.** The two modes alternate ``rounds`` times on the default scene (drift of the
   machine falls on both) and the best run of each is compared. "Watched" means: a
   browser-like MJPEG viewer reading the preview, a Foxglove client subscribed to every
   topic and reading, and a Prometheus scrape each second.
2. **A stalled viewer.** A realtime run (the source paced at its frame rate, below what this
   machine sustains) with all three on, once with nobody connected and once with an MJPEG
   viewer and a Foxglove client that connect, subscribe and then never read: output fps,
   drops, and the publish stage's resident memory sampled every 2 s (compared from 25 s
   after the start, once the stage has warmed up, to the end).

Speed is never asserted in tests; README "Watching a run" quotes this output with its
command and machine (``scripts/benchmarks_doc.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

from pipeline.transport.sockets import free_tcp_port

__all__ = ["bench_overhead", "bench_stalled", "main"]

SIZE = "640x480"
WARM_S = 25.0  # the stalled-viewer runs: memory is compared from this long after the start (model load included)


class Watchers:
    """Clients of a run's three servers, each on its own daemon thread until :meth:`stop`.

    ``stalled``: the MJPEG viewer and the Foxglove client connect and subscribe, then never
    read again (no scraper); else they read everything, and Prometheus is scraped each second.
    """

    def __init__(self, ports: dict[str, int], stalled: bool) -> None:
        self.ports, self.stalled = ports, stalled
        self.done = threading.Event()
        self.counts = {"mjpeg_bytes": 0, "foxglove_messages": 0, "scrapes": 0}
        self._sockets: list[Any] = []
        self._threads = [threading.Thread(target=self._timed, args=(target,), daemon=True)
                         for target in (self._mjpeg, self._foxglove, *(() if stalled else (self._scrape,)))]
        self.cpu_s = 0.0  # CPU time of the clients' own threads (they share this machine's cores)
        self._cpu_lock = threading.Lock()

    def _timed(self, target: Any) -> None:
        try:
            target()
        finally:
            with self._cpu_lock:
                self.cpu_s += time.thread_time()

    def start(self) -> Watchers:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> dict[str, int]:
        self.done.set()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=10)
        return {**self.counts, "clients_cpu_s": round(self.cpu_s, 2)}

    def _retry(self, connect: Any) -> Any:
        """``connect()`` until it works (the servers start with the run) or the run is over."""
        while not self.done.is_set():
            try:
                return connect()
            except OSError:
                time.sleep(0.1)
        return None

    def _mjpeg(self) -> None:
        def connect() -> socket.socket:
            sock = socket.socket()
            if self.stalled:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a frame
            sock.connect(("127.0.0.1", self.ports["preview"]))
            return sock

        sock = self._retry(connect)
        if sock is None:
            return
        self._sockets.append(sock)
        try:
            sock.sendall(b"GET /stream/0/mjpeg HTTP/1.0\r\n\r\n")
            while not self.done.is_set() and not self.stalled:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    return
                self.counts["mjpeg_bytes"] += len(chunk)
        except OSError:
            return

    def _foxglove(self) -> None:
        from pipeline.tools.foxglove_client import FoxgloveClient

        client = self._retry(lambda: FoxgloveClient(f"ws://127.0.0.1:{self.ports['foxglove']}", timeout=0.5,
                                                    keep=False))
        if client is None:
            return
        self._sockets.append(client.ws)
        try:
            if self.stalled:  # subscribe to the topics of the first frame, then never read again
                while not self.done.is_set() and len(client.subscriptions) < 3 and not client.closed:
                    client.poll()
                return
            while not self.done.is_set() and not client.closed:
                client.poll()
                self.counts["foxglove_messages"] = sum(client.counts.values())
        except Exception:  # noqa: BLE001 - the run ended under the client
            return

    def _scrape(self) -> None:
        url = f"http://127.0.0.1:{self.ports['metrics']}/metrics"
        while not self.done.wait(1.0):
            try:
                urllib.request.urlopen(url, timeout=2).read()
                self.counts["scrapes"] += 1
            except OSError:
                pass


def _publish_rss_kib(parent: int) -> int | None:
    """Resident memory of the publish stage started by ``parent`` (KiB), else None."""
    out = subprocess.run(["ps", "-o", "pid=,rss=,args=", "--ppid", str(parent)], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, rss, args = line.strip().split(None, 2)
        if args.startswith("segstream: publish"):
            return int(rss)
    return None


def _run(uri: str, tmp: str, label: str, observe: bool, watch: str | None, realtime: bool = False) -> dict[str, Any]:
    """One default-pipeline run; ``watch``: None, "reading" or "stalled" clients."""
    import os

    from pipeline.config import PipelineConfig, apply_overrides
    from pipeline.supervisor import Supervisor

    ports = {name: free_tcp_port() for name in ("metrics", "preview", "foxglove")}
    overrides: dict[str, Any] = {"source.uri": uri, "source.realtime": realtime, "output.video": f"{tmp}/{label}.mp4",
                                 "output.publish": f"ipc://{tmp}/{label}.sock", "output.progress": False}
    if realtime:
        overrides["source.live_policy"] = "latest"  # as a live feed: a slow stage shows as drops
    if observe:
        overrides.update({f"observability.{name}": f"127.0.0.1:{port}" for name, port in ports.items()})
    config = apply_overrides(PipelineConfig(), overrides)
    watchers = Watchers(ports, stalled=watch == "stalled").start() if watch else None
    rss: list[tuple[float, int]] = []
    sampling = threading.Event()

    def sample() -> None:
        start = time.monotonic()
        while not sampling.wait(2.0):
            found = _publish_rss_kib(os.getpid())
            if found is not None:
                rss.append((round(time.monotonic() - start, 1), found))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        report = Supervisor(config).run()
    finally:
        sampling.set()
        sampler.join()
        counts = watchers.stop() if watchers else {}
    result = {"fps": float(report["fps"]), "frames": report.get("frames_written"),
              "dropped": report.get("frames_dropped", 0), "publish_rss_kib": rss, "clients": counts}
    print(f"[bench] {label}: {result['fps']:.2f} fps, dropped {result['dropped']}, clients {counts}", file=sys.stderr)
    return result


def bench_overhead(frames: int, rounds: int) -> dict[str, Any]:
    """Best fps of the default run with all three off, and on and watched."""
    uri = f"synthetic://?seed=7&size={SIZE}&fps=30&frames={frames}"
    fps: dict[str, list[float]] = {"off": [], "watched": []}
    clients: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            fps["off"].append(_run(uri, tmp, "off", observe=False, watch=None)["fps"])
            watched = _run(uri, tmp, "watched", observe=True, watch="reading")
            fps["watched"].append(watched["fps"])
            clients = watched["clients"]
    best = {mode: max(values) for mode, values in fps.items()}
    return {"source": uri, "fps_off": best["off"], "fps_watched": best["watched"],
            "watched_over_off": best["watched"] / best["off"], "runs": fps, "last_clients": clients}


def rss_summary(samples: list[tuple[float, int]], warm_s: float = WARM_S) -> dict[str, float]:
    """First, last and peak resident memory (MiB) of the samples ``(seconds, KiB)`` taken
    from ``warm_s`` on (start-up, model load and the first frames' buffers come before)
    until the last one before the stage ended (the very last sample may be its shutdown)."""
    kept = [kib for t, kib in samples if t >= warm_s][:-1] or [0]
    return {"rss_first_mib": round(kept[0] / 1024, 1), "rss_last_mib": round(kept[-1] / 1024, 1),
            "rss_max_mib": round(max(kept) / 1024, 1)}


def bench_stalled(seconds: float, fps: int) -> dict[str, Any]:
    """A realtime run with all three on: nobody connected, then stalled clients."""
    uri = f"synthetic://?seed=7&size={SIZE}&fps={fps}&frames={int(seconds * fps)}"
    out: dict[str, Any] = {"source": uri, "realtime": True}
    with tempfile.TemporaryDirectory() as tmp:
        for label, watch in (("unwatched", None), ("stalled", "stalled")):
            out[label] = _run(uri, tmp, label, observe=True, watch=watch, realtime=True)
    for label in ("unwatched", "stalled"):
        out[label].update(rss_summary(out[label]["publish_rss_kib"]))
    out["stalled_over_unwatched_fps"] = out["stalled"]["fps"] / out["unwatched"]["fps"]
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: print (and with ``--json`` write) the figures; 2 on bad arguments."""
    from pipeline.bench import provenance, write_figures

    parser = argparse.ArgumentParser(prog="python -m pipeline.bench_observability", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the figures here as JSON")
    parser.add_argument("--frames", type=int, default=150, help="frames per overhead run (default 150)")
    parser.add_argument("--rounds", type=int, default=3, help="off/watched run pairs (default 3)")
    parser.add_argument("--stall-seconds", type=float, default=60.0, help="length of the stalled-viewer runs (default 60)")
    parser.add_argument("--stall-fps", type=int, default=5, help="their source frame rate (default 5)")
    args = parser.parse_args(argv)
    if args.frames < 10 or args.rounds < 1 or args.stall_seconds < 5 or args.stall_fps < 1:
        print("error: --frames must be at least 10, --rounds 1, --stall-seconds 5, --stall-fps 1", file=sys.stderr)
        return 2
    for module, extra in (("foxglove", "robotics"), ("websocket", "dev")):
        if importlib.util.find_spec(module) is None:
            print(f"error: {module} is not installed (pip install -e '.[{extra}]')", file=sys.stderr)
            return 2
    result: dict[str, Any] = {
        **provenance("pipeline.bench_observability", argv),
        "overhead": bench_overhead(args.frames, args.rounds),
        "stalled": bench_stalled(args.stall_seconds, args.stall_fps),
    }  # fmt: skip
    o, s = result["overhead"], result["stalled"]
    print(f"overhead: off {o['fps_off']:.2f} fps, watched {o['fps_watched']:.2f} fps = {o['watched_over_off']:.3f}; "
          f"stalled viewer: {s['stalled']['fps']:.2f} vs {s['unwatched']['fps']:.2f} fps, publish RSS "
          f"{s['stalled']['rss_first_mib']} -> {s['stalled']['rss_last_mib']} MiB "
          f"(unwatched {s['unwatched']['rss_first_mib']} -> {s['unwatched']['rss_last_mib']})", file=sys.stderr)
    write_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
