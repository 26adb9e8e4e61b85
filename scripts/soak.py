#!/usr/bin/env python3
"""Soak test: run the pipeline on a live feed for a long time and watch for leaks.

Not a CI test. Runs ``run_pipeline.py`` on a live-paced source (by default a local RTSP
server from tests/rtsp_server.py, killed and restarted periodically), optionally SIGKILLs a
stage now and then, and every few seconds samples

* RSS (``VmRSS``), open fds and threads of the supervisor and every ``segstream: ...`` stage
  process below it,
* /dev/shm: bytes and files of this run's ``segstream-<supervisor pid>-*`` segments,
* results and status events received on the PUB socket,

into a CSV (one row per process per sample, plus a ``TOTAL`` row). At the end it stops the
pipeline with SIGINT and prints, per process name, the averages of the first and last 10 %
of the samples taken after a warm-up (model loading) and the growth in percent.

Examples::

    # 30 minutes on the built-in RTSP server, server killed every 60 s for 5 s
    ~/.cache/segstream/venv/bin/python scripts/soak.py --minutes 30

    # any source; extra run_pipeline.py arguments after "--"
    python scripts/soak.py --minutes 10 --source-uri video.mp4 --kill-every 0 -- --realtime --model fcn_demo

    # also SIGKILL a stage every 90 s, taking the five stages in turn (the supervisor
    # restarts each one; results carry on)
    python scripts/soak.py --minutes 30 --kill-stage capture,preprocess,infer,postprocess,publish \
        --kill-stage-every 90

Exit status: 0 when the pipeline ran the whole time (and, with --max-growth-pct, no total grew
more than that), 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "segstream-"


# -- /proc sampling ------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return None


def proc_status(pid: int) -> dict[str, str]:
    text = _read(f"/proc/{pid}/status") or ""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def cmdline(pid: int) -> str:
    raw = _read(f"/proc/{pid}/cmdline") or ""
    return raw.replace("\0", " ").strip()


def descendants(root: int) -> list[int]:
    """PIDs below ``root`` (children, grandchildren, ...)."""
    parents: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        ppid = proc_status(int(entry)).get("PPid")
        if ppid and ppid.isdigit():
            parents[int(ppid)].append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in parents.get(pid, []):
            out.append(child)
            todo.append(child)
    return out


def process_name(pid: int, supervisor: int) -> str | None:
    """``supervisor``, the stage name of a ``segstream: NAME [run]`` process, or None."""
    if pid == supervisor:
        return "supervisor"
    line = cmdline(pid)
    if not line.startswith("segstream: "):
        return None
    return line[len("segstream: "):].split()[0]


def sample_process(pid: int) -> dict[str, int] | None:
    status = proc_status(pid)
    if not status.get("VmRSS"):
        return None
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = -1
    return {
        "rss_kb": int(status["VmRSS"].split()[0]),
        "fds": fds,
        "threads": int(status.get("Threads", "0") or 0),
    }


def shm_usage(supervisor: int) -> tuple[int, int]:
    """Allocated bytes and number of this run's segments (``segstream-<supervisor pid>-*``)."""
    size = files = 0
    for path in SHM_DIR.glob(f"{SHM_PREFIX}{supervisor}-*"):
        try:
            size += path.stat().st_blocks * 512  # allocated, not apparent, size
            files += 1
        except OSError:
            pass
    return size, files


# -- subscriber ------------------------------------------------------------------------------


class ResultCounter:
    def __init__(self, endpoint: str | None) -> None:
        self.frames = 0
        self.status: Counter[str] = Counter()
        self.dropped = 0
        self.sock = None
        if endpoint:
            import zmq

            self.ctx = zmq.Context()
            self.sock = self.ctx.socket(zmq.SUB)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.setsockopt(zmq.SUBSCRIBE, b"")
            self.sock.connect(endpoint)

    def drain(self) -> None:
        if self.sock is None:
            return
        import zmq

        from pipeline import messages

        while True:
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                _, header, _ = messages.decode_envelope(parts)
            except ValueError:
                continue
            if header.get("schema") == messages.SCHEMA_STATUS:
                self.status[header.get("event", "?")] += 1
            else:
                self.frames += 1
                self.dropped += int(header.get("dropped_since_last") or 0)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.ctx.term()


# -- main ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summarize(rows: list[dict], warmup_s: float = 0.0,
              key_fields=("rss_kb", "fds", "threads")) -> tuple[list[str], dict]:
    by_name: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["t_s"] >= warmup_s:
            by_name[row["name"]].append(row)
    lines = [f"{'process':<14} {'metric':<8} {'first10%':>12} {'last10%':>12} {'growth':>9}"]
    growth: dict[tuple[str, str], float] = {}
    for name in sorted(by_name, key=lambda n: (n != "TOTAL", n)):
        samples = sorted(by_name[name], key=lambda r: r["t_s"])
        times = sorted({r["t_s"] for r in samples})
        if len(times) < 2:
            continue
        tenth = max(1, len(times) // 10)
        first_t, last_t = set(times[:tenth]), set(times[-tenth:])
        fields = key_fields + (("shm_bytes", "shm_files") if name == "TOTAL" else ())
        for field in fields:
            first = [r[field] for r in samples if r["t_s"] in first_t and r[field] >= 0]
            last = [r[field] for r in samples if r["t_s"] in last_t and r[field] >= 0]
            if not first or not last:
                continue
            a, b = sum(first) / len(first), sum(last) / len(last)
            pct = (b - a) / a * 100 if a else (0.0 if b == 0 else float("inf"))
            growth[(name, field)] = pct
            lines.append(f"{name:<14} {field:<8} {a:>12.1f} {b:>12.1f} {pct:>8.1f}%")
    return lines, growth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    parser.add_argument("--source-uri", help="source to run on instead of the built-in RTSP server")
    parser.add_argument("--width", type=int, default=320, help="RTSP server frame width")
    parser.add_argument("--height", type=int, default=240, help="RTSP server frame height")
    parser.add_argument("--fps", type=int, default=10, help="RTSP server frame rate")
    parser.add_argument("--kill-every", type=float, default=60.0,
                        help="SIGKILL the RTSP server every N seconds (0: never; default 60)")
    parser.add_argument("--down-s", type=float, default=5.0, help="how long the server stays down (default 5)")
    parser.add_argument("--kill-stage", default="",
                        help="stage(s) to SIGKILL periodically, comma-separated, taken in turn (e.g. infer,publish)")
    parser.add_argument("--kill-stage-every", type=float, default=0.0, help="seconds between stage kills")
    parser.add_argument("--sample-every", type=float, default=5.0, help="sampling period in seconds (default 5)")
    parser.add_argument("--warmup-s", type=float, default=None,
                        help="leave the first N seconds out of the summary (model loading; "
                             "default: 20%% of the run, at most 120 s)")
    parser.add_argument("--csv", default="soak.csv", help="samples file (default soak.csv)")
    parser.add_argument("--log", default="soak-pipeline.log", help="pipeline stdout/stderr (default soak-pipeline.log)")
    parser.add_argument("--max-growth-pct", type=float, default=None,
                        help="fail when the TOTAL rss/fds/shm grew more than this (first vs last 10%%)")
    parser.add_argument("--python", default=sys.executable, help="python to run run_pipeline.py with")
    parser.add_argument("extra", nargs=argparse.REMAINDER,
                        help="after '--': extra run_pipeline.py arguments")
    args = parser.parse_args(argv)
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra

    server = None
    if args.source_uri:
        source = args.source_uri
    else:
        from rtsp_server import RtspServer, rtsp_server_unavailable

        reason = rtsp_server_unavailable()
        if reason:
            print(f"soak: {reason}", file=sys.stderr)
            return 1
        server = RtspServer(width=args.width, height=args.height, fps=args.fps,
                            log=Path(args.log).with_suffix(".rtsp.log")).start()
        source = server.url

    publish = f"tcp://127.0.0.1:{free_port()}"
    cmd = [args.python, str(REPO / "run_pipeline.py"), "--source", source, "--publish", publish,
           "--output", "none", "--no-progress"]
    if not any(a.startswith("--model") for a in extra):
        cmd += ["--model", "maskrcnn_demo", "--weights", "random", "--min-size", "128", "--max-size", "192"]
    cmd += extra
    print("soak: running", " ".join(cmd), flush=True)
    log = open(args.log, "wb")  # noqa: SIM115
    pipeline = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    counter = ResultCounter(publish)

    rows: list[dict] = []
    events: list[str] = []
    start = time.monotonic()
    end = start + args.minutes * 60
    next_sample = start
    next_kill = start + args.kill_every if server and args.kill_every > 0 else float("inf")
    restart_at = float("inf")
    victims = [name for name in args.kill_stage.split(",") if name]
    next_stage_kill = start + args.kill_stage_every if victims and args.kill_stage_every > 0 else float("inf")
    kills = 0
    fields = ["t_s", "pid", "name", "rss_kb", "fds", "threads", "shm_bytes", "shm_files",
              "results", "status_events", "server_up"]
    died_early = False
    try:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            while time.monotonic() < end:
                now = time.monotonic()
                counter.drain()
                if pipeline.poll() is not None:
                    died_early = True
                    events.append(f"{now - start:8.1f}s pipeline exited with status {pipeline.returncode}")
                    break
                if now >= next_kill:
                    server.kill()
                    events.append(f"{now - start:8.1f}s RTSP server killed")
                    restart_at, next_kill = now + args.down_s, now + args.kill_every
                if now >= restart_at:
                    server.start()
                    events.append(f"{now - start:8.1f}s RTSP server restarted")
                    restart_at = float("inf")
                if now >= next_stage_kill:
                    next_stage_kill = now + args.kill_stage_every
                    victim = victims[kills % len(victims)]
                    kills += 1
                    for pid in descendants(pipeline.pid):
                        if process_name(pid, pipeline.pid) == victim:
                            os.kill(pid, signal.SIGKILL)
                            events.append(f"{now - start:8.1f}s SIGKILL stage {victim} (pid {pid})")
                if now >= next_sample:
                    next_sample = now + args.sample_every
                    t_s = round(now - start, 2)
                    shm_bytes, shm_files = shm_usage(pipeline.pid)
                    total = {"rss_kb": 0, "fds": 0, "threads": 0}
                    common = {"shm_bytes": shm_bytes, "shm_files": shm_files, "results": counter.frames,
                              "status_events": sum(counter.status.values()),
                              "server_up": int(server.running) if server else -1}
                    for pid in [pipeline.pid, *descendants(pipeline.pid)]:
                        name = process_name(pid, pipeline.pid)
                        stats = sample_process(pid) if name else None
                        if stats is None:
                            continue
                        for key in total:
                            total[key] += max(0, stats[key])
                        row = {"t_s": t_s, "pid": pid, "name": name, **stats, **common}
                        rows.append(row)
                        writer.writerow(row)
                    row = {"t_s": t_s, "pid": 0, "name": "TOTAL", **total, **common}
                    rows.append(row)
                    writer.writerow(row)
                    fh.flush()
                    print(f"soak: {t_s:8.1f}s rss {total['rss_kb'] / 1024:8.1f} MiB  fds {total['fds']:5d}  "
                          f"shm {shm_bytes / 2**20:7.1f} MiB  results {counter.frames}  "
                          f"status {dict(counter.status)}", flush=True)
                time.sleep(0.1)
    except KeyboardInterrupt:
        events.append("interrupted")
    finally:
        if pipeline.poll() is None:
            pipeline.send_signal(signal.SIGINT)
            try:
                pipeline.wait(60)
            except subprocess.TimeoutExpired:
                events.append("pipeline did not stop within 60 s of SIGINT: killed")
                os.killpg(pipeline.pid, signal.SIGKILL)
                pipeline.wait()
        counter.drain()
        counter.close()
        if server is not None:
            server.kill()
        log.close()

    leftover_shm = shm_usage(pipeline.pid)
    print("\nsoak: events")
    for line in events:
        print("  " + line)
    print(f"\nsoak: pipeline exit status {pipeline.returncode}; results received {counter.frames} "
          f"(dropped_since_last total {counter.dropped}); status events {dict(counter.status)}")
    restarts = [line for line in Path(args.log).read_text(errors="replace").splitlines() if "restarting it in" in line]
    print(f"soak: stage restarts by the supervisor: {len(restarts)}")
    for line in restarts:
        print("  " + line.strip())
    print(f"soak: /dev/shm segments of this run left after exit: {leftover_shm[1]} ({leftover_shm[0]} bytes)")
    warmup = args.warmup_s if args.warmup_s is not None else min(120.0, args.minutes * 60 * 0.2)
    lines, growth = summarize(rows, warmup)
    print(f"\nsoak: first vs last 10% of the samples after {warmup:.0f} s of warm-up")
    for line in lines:
        print("  " + line)
    print(f"\nsoak: samples in {args.csv}, pipeline log in {args.log}")
    failed = died_early
    if args.max_growth_pct is not None:
        for field in ("rss_kb", "fds", "shm_bytes"):
            pct = growth.get(("TOTAL", field))
            if pct is not None and pct > args.max_growth_pct:
                print(f"soak: TOTAL {field} grew {pct:.1f}% (> {args.max_growth_pct}%)")
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
