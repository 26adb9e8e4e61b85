"""Benchmark of the fleet's overhead on one node (docs/FLEET.md, "Measured overheads").

    python -m pipeline.bench_fleet [--files 4] [--frames 16] [--size 320x240] [--cpus 2]
                                   [--json PATH] [-- PIPELINE ARGS]

1. **sequential**: ``run_pipeline.py`` on each file one after another, with exactly the
   arguments the fleet gives it (same outputs), as a user would by hand;
2. **fleet**: ``pipeline.fleet`` on the same files on a local one-node cluster (``--cpus``
   CPUs, one per file, so files overlap); its wall time counts from submission to the last
   commit, so the cluster's start-up (once per fleet, not per file) is reported apart;
3. **scheduling cost**: a no-op Ray task per file, one after another (latency) and all at
   once (throughput); **bytes moved per file**: read (the input) and written (its outputs),
   and what travels through Ray (the task's arguments and outcome).

Prints the figures and the ratio fleet / sequential throughput (goal >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.fleet.child import PIPELINE_SCRIPT
from pipeline.fleet.file_run import FilesOptions, run_files
from pipeline.fleet.file_task import pipeline_file_args

DEFAULT_ARGS = ["--model", "maskrcnn_demo", "--backend", "onnxruntime", "--min-size", "240"]


def make_files(folder: Path, count: int, frames: int, size: str) -> list[Path]:
    """``count`` synthetic clips (distinct seeds) as H.264 MP4."""
    files = []
    for i in range(count):
        out = folder / f"scene{i}"
        subprocess.run([sys.executable, "-m", "pipeline.synthetic", "--seed", str(900 + i),
                        "--frames", str(frames), "--size", size, "--out", str(out)],
                       check=True, capture_output=True, cwd=PIPELINE_SCRIPT.parent)
        files.append((out / "video.mp4").rename(folder / f"clip{i}.mp4"))
        shutil.rmtree(out)
    return files


def run_sequential(files: list[Path], out: Path, args: list[str]) -> float:
    """Wall seconds of the pipeline on each file in turn (the by-hand baseline)."""
    start = time.monotonic()
    for f in files:
        target = out / f.stem
        target.mkdir(parents=True)
        subprocess.run([sys.executable, str(PIPELINE_SCRIPT),
                        *pipeline_file_args(str(f), target, "mp4", args)],
                       check=True, capture_output=True, cwd=PIPELINE_SCRIPT.parent)
    return time.monotonic() - start


def _noop(i: int) -> int:
    return i


def scheduling_cost(tasks: int) -> dict[str, float]:
    """Per-task cost of Ray on this cluster: sequential round trip and bulk throughput."""
    import ray

    task = ray.remote(_noop).options(num_cpus=1)
    ray.get(task.remote(0))  # a worker is warm
    start = time.perf_counter()
    for i in range(tasks):
        ray.get(task.remote(i))
    latency = (time.perf_counter() - start) / tasks
    start = time.perf_counter()
    ray.get([task.remote(i) for i in range(tasks)])
    bulk = (time.perf_counter() - start) / tasks
    return {"task_roundtrip_ms": round(latency * 1e3, 2), "task_bulk_ms": round(bulk * 1e3, 2)}


def bytes_per_file(files: list[Path], out: Path, report: dict[str, Any]) -> dict[str, float]:
    """Mean bytes a file reads, writes and sends through Ray."""
    read = sum(f.stat().st_size for f in files) / len(files)
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()
                  and p.parent != out) / len(files)
    one = report["results"][files[0].stem]
    ray_bytes = len(pickle.dumps(({"key": files[0].stem, "source": str(files[0])},
                                  str(out), "run", DEFAULT_ARGS, "mp4"))) + len(
        pickle.dumps({**one, "started": 0.0, "ended": 0.0, "host": "10.0.0.1"}))
    return {"read_bytes": round(read), "written_bytes": round(written),
            "ray_bytes": ray_bytes}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = DEFAULT_ARGS
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", default="320x240")
    p.add_argument("--cpus", type=int, default=2, help="the one node's CPUs (one per file)")
    p.add_argument("--tasks", type=int, default=200, help="no-op tasks for the cost figures")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    import ray

    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        files = make_files(work, args.files, args.frames, args.size)
        # warm-up: backend selection and caches are per machine, paid before either side
        run_sequential(files[:1], work / "warm", extra)
        seq_s = run_sequential(files, work / "seq", extra)
        t0 = time.monotonic()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
        startup_s = time.monotonic() - t0
        try:
            report = run_files(FilesOptions(inputs=[str(f) for f in files], out_root=work / "fleet",
                                            pipeline_args=extra, progress=False))
            cost = scheduling_cost(args.tasks)
        finally:
            ray.shutdown()
        frames = report["frames"]
        result = {
            "files": args.files, "frames_per_file": args.frames, "size": args.size,
            "cpus": args.cpus, "pipeline_args": extra,
            "sequential_s": round(seq_s, 2), "sequential_fps": round(frames / seq_s, 2),
            "fleet_s": report["wall_s"], "fleet_fps": report["fps"],
            "cluster_startup_s": round(startup_s, 2),
            "ratio": round(seq_s / report["wall_s"], 3),
            "ratio_with_startup": round(seq_s / (report["wall_s"] + startup_s), 3),
            **cost, **bytes_per_file(files, work / "fleet", report),
            "machine": f"{platform.processor() or platform.machine()}, "
                       f"{len(__import__('os').sched_getaffinity(0))} cores",
        }
    print(f"sequential: {args.files} files x {args.frames} frames in {result['sequential_s']} s "
          f"({result['sequential_fps']} fps)")
    print(f"fleet (1 node, {args.cpus} CPUs): {result['fleet_s']} s ({result['fleet_fps']} fps), "
          f"+ {result['cluster_startup_s']} s cluster start-up once")
    print(f"throughput ratio fleet/sequential: {result['ratio']} (goal >= 0.9); with the "
          f"cluster start-up: {result['ratio_with_startup']}")
    print(f"scheduling: {result['task_roundtrip_ms']} ms per task one at a time, "
          f"{result['task_bulk_ms']} ms per task in bulk")
    print(f"bytes per file: read {result['read_bytes']}, written {result['written_bytes']}, "
          f"through Ray {result['ray_bytes']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
