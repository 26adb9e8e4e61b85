"""``python -m pipeline.bench``: the pipeline against a plain loop and inference alone.

All figures come from one process run on the same input and model:

(a) sequential: one loop doing decode -> model -> postprocess -> overlay -> encode;
(b) inference alone: the model on pre-decoded, pre-transformed frames (the ceiling);
(c) pipeline: the five-process pipeline end to end (startup excluded);
plus the cost of one local hop for a 1080p frame: a shared-memory handle vs a ZeroMQ copy.

It prints FPS of each and the ratios c/a and c/b. Speed is never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import zmq

from engines.transform import prepare_image
from pipeline.config import PipelineConfig, apply_overrides, load_config
from pipeline.inference import infer_images, open_backend
from pipeline.reference import params_from_config, segment_frames
from pipeline.sources import open_source
from pipeline.transport import sockets
from pipeline.transport.shm import FrameRing, segment_name

HOP_FRAME = (1080, 1920, 3)


def bench_sequential(config: PipelineConfig, out_dir: Path) -> float:
    """(a) FPS of the plain single-process loop, overlay video included."""
    from pipeline.ops.overlay import class_palette, draw_instances, draw_semantic
    from pipeline.sinks.video_writer import VideoWriter

    backend = open_backend(config.model)
    source = open_source(config.source.uris[0])
    info = source.info()
    palette = class_palette(len(backend.spec.class_names))
    writer = VideoWriter(str(out_dir / "sequential.mp4"), info.width, info.height, fps=info.fps, time_base=info.time_base)
    start, count = time.perf_counter(), 0
    for frame, result, details in segment_frames(
        backend, islice(source.frames(), config.source.max_frames), params_from_config(config), batch_size=1
    ):
        image = frame.image.copy()
        if details is not None:
            draw_instances(image, details.crops, details.boxes, details.labels, details.scores,
                           backend.spec.class_names, palette=palette)
        else:
            draw_semantic(image, result.class_map, palette=palette)
        writer.write(image, frame.pts)
        count += 1
    writer.close()
    elapsed = time.perf_counter() - start
    source.close()
    return count / elapsed


def bench_inference(config: PipelineConfig) -> float:
    """(b) FPS of the model alone at the configured batch size, inputs prepared beforehand."""
    backend = open_backend(config.model)
    source = open_source(config.source.uris[0])
    frames = islice(source.frames(), config.source.max_frames)
    images = [prepare_image(f.image, backend.spec, device=backend.device) for f in frames]
    source.close()
    size = config.batching.batch_size
    infer_images(backend, images[:size])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(images), size):
        infer_images(backend, images[i : i + size])
    if backend.device.type == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def bench_pipeline(config: PipelineConfig) -> dict:
    """(c) the full pipeline's report (fps excludes process start-up and model loading)."""
    from pipeline.supervisor import Supervisor

    return Supervisor(config).run()


_HOP_RECEIVER = """
import sys, zmq, numpy as np
from pipeline.transport.shm import FrameRing
from pipeline.transport import sockets
mode, endpoint, credits, ring_name, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = zmq.Context(); sock = sockets.pull(ctx, endpoint, hwm=4, bind=False)
back = sockets.push(ctx, credits, hwm=1000)
ring = FrameRing.attach(ring_name)
total = 0
for _ in range(n):
    header, buffers = sockets.recv(sock)
    if mode == "shm":
        ring.check(header["slot"], header["gen"])
        frame = ring.frame(header["slot"], *header["shape"][:2])
    else:
        frame = np.frombuffer(buffers[0], np.uint8).reshape(header["shape"])
    total += int(frame[0, 0, 0])  # touch the pixels where they are
    sockets.send(back, {"slot": header.get("slot", 0)})  # slot credit, as publish returns it
back.close(linger=-1)
print(total)
"""

HOP_SLOTS = 8


def bench_hop(n: int = 300) -> dict[str, float]:
    """Microseconds per 1080p frame for one ipc hop: shared-memory handle vs ZeroMQ copy.

    Both modes use the pipeline's slot credits (the receiver returns each slot), so the
    shared-memory producer never overwrites a frame still being read.
    """
    results = {}
    ring = FrameRing.create(segment_name("bench"), HOP_SLOTS, int(np.prod(HOP_FRAME)), 0)
    ctx = zmq.Context()
    frame = np.random.default_rng(0).integers(0, 255, HOP_FRAME, dtype=np.uint8)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for mode in ("shm", "zmq"):
                endpoint, credits = f"ipc://{tmp}/{mode}.sock", f"ipc://{tmp}/{mode}-credits.sock"
                sock = sockets.push(ctx, endpoint, hwm=4, bind=True)
                back = sockets.pull(ctx, credits, hwm=1000, bind=True)
                receiver = subprocess.Popen(
                    [sys.executable, "-c", _HOP_RECEIVER, mode, endpoint, credits, ring.name, str(n)],
                    stdout=subprocess.DEVNULL,
                )
                free = list(range(HOP_SLOTS))
                start = time.perf_counter()
                for _ in range(n):
                    while not free or back.poll(0):
                        free.append(sockets.recv(back)[0]["slot"])
                    slot = free.pop(0)
                    if mode == "shm":
                        # the producer writes each frame into the ring once (it would decode there)
                        ring.frame(slot, *HOP_FRAME[:2])[...] = frame
                        gen = ring.bump_generation(slot)
                        sockets.send(sock, {"slot": slot, "gen": gen, "shape": list(HOP_FRAME)})
                    else:
                        sockets.send(sock, {"slot": slot, "shape": list(HOP_FRAME)}, [frame])
                receiver.wait()
                results[mode] = (time.perf_counter() - start) / n * 1e6
                sock.close(0)
                back.close(0)
    finally:
        ctx.destroy(0)
        ring.close()
        ring.unlink()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--source", help="input (default: the config's)")
    parser.add_argument("--model")
    parser.add_argument("--weights")
    parser.add_argument("--backend")
    parser.add_argument("--device")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-frames", type=int, default=60)
    parser.add_argument("--min-size", type=int)
    parser.add_argument("--hop-frames", type=int, default=300)
    parser.add_argument("--skip", action="append", default=[], choices=["sequential", "inference", "pipeline", "hop"])
    parser.add_argument("--compare-backends", nargs="+", metavar="BACKEND",
                        help="also time these backends on the same prepared frames, e.g. pytorch onnxruntime")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 8],
                        help="batch sizes for --compare-backends (default 1 4 8)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)

    default = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
    config = load_config(args.config or (default if default.exists() else None))
    overrides = {
        "source.uri": args.source, "model.name": args.model, "model.weights": args.weights,
        "model.backend": args.backend, "model.device": args.device, "batching.batch_size": args.batch_size,
        "source.max_frames": args.max_frames, "model.min_size": args.min_size,
    }
    config = apply_overrides(config, {k: v for k, v in overrides.items() if v is not None})
    config = apply_overrides(config, {"output.publish": None, "output.progress": False})
    figures: dict = {"model": config.model.name, "device": config.model.device, "backend": config.model.backend,
                     "batch_size": config.batching.batch_size, "frames": config.source.max_frames,
                     "source": config.source.uris[0], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if "sequential" not in args.skip:
            figures["sequential_fps"] = bench_sequential(config, out)
            print(f"(a) sequential loop      {figures['sequential_fps']:8.2f} fps", flush=True)
        if "inference" not in args.skip:
            figures["inference_fps"] = bench_inference(config)
            print(f"(b) inference alone      {figures['inference_fps']:8.2f} fps", flush=True)
        if "pipeline" not in args.skip:
            report = bench_pipeline(apply_overrides(config, {"output.video": str(out / "pipeline.mp4")}))
            figures["pipeline_fps"] = report["fps"]
            figures["pipeline_latency_ms"] = report["latency_ms"]
            print(f"(c) pipeline             {report['fps']:8.2f} fps  (latency p50 "
                  f"{report['latency_ms']['p50']:.0f} ms, p95 {report['latency_ms']['p95']:.0f} ms)", flush=True)
    if "sequential_fps" in figures and "pipeline_fps" in figures:
        figures["pipeline_vs_sequential"] = figures["pipeline_fps"] / figures["sequential_fps"]
        print(f"    c/a pipeline / sequential      = {figures['pipeline_vs_sequential']:.2f}")
    if "inference_fps" in figures and "pipeline_fps" in figures:
        figures["pipeline_vs_inference"] = figures["pipeline_fps"] / figures["inference_fps"]
        print(f"    c/b pipeline / inference alone = {figures['pipeline_vs_inference']:.2f}")
    if "hop" not in args.skip:
        hop = bench_hop(args.hop_frames)
        figures["hop_us"] = hop
        print(f"1080p hop over ipc: shared-memory handle {hop['shm']:.0f} us/frame (incl. writing the frame "
              f"into the ring), ZeroMQ copy {hop['zmq']:.0f} us/frame, ratio {hop['zmq'] / hop['shm']:.1f}x")
    if args.compare_backends:
        from engines.bench_backends import format_results, run_bench

        results = run_bench(
            config.model.name, config.model.weights, args.compare_backends, args.batch_sizes,
            frames=config.source.max_frames or 24, source=config.source.uris[0], device=config.model.device,
            options={"min_size": config.model.min_size, "max_size": config.model.max_size},
            say=lambda line: None,
        )
        print(format_results(results, args.compare_backends))
        figures["backends"] = [asdict(r) for r in results]
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
