"""``python -m pipeline.bench``: the pipeline against a plain loop and inference alone.

Every ratio compares figures measured in one run of this command, on the same input,
model, backend and encoder:

(a) sequential: the loop a user would write: decode -> model (batch 1, every core) ->
    postprocess -> overlay -> encode, warmed up first;
(b) inference alone: the model on pre-decoded, pre-transformed frames at the configured
    batch size (the ceiling for a model-bound run);
(c) pipeline: the five-process pipeline end to end (start-up and model loading excluded);
(d) stage costs: every stage's CPU time per frame, measured alone on the same frames, and
    the CPU-work bound ``cores / sum of stage core-seconds per frame`` (see
    ``pipeline.stage_costs``); ``efficiency`` = (c) / bound.

``--suite full`` measures every case the docs publish (the default config, a 1280x720
H.264 file with and without the overlay video, a model-bound run, the live default, and the
cost table at 640x480, 1280x720 and 1920x1080); ``scripts/benchmarks_doc.py`` turns its
JSON into docs/BENCHMARKS.md and the README's table. Speed is never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import torch

from engines.transform import prepare_image
from pipeline.config import PipelineConfig, apply_overrides, load_config
from pipeline.inference import auto_probe, infer_images, open_backend
from pipeline.reference import params_from_config, segment_frames
from pipeline.resources import plan_resources, usable_cores
from pipeline.sources import open_source

REPO = Path(__file__).resolve().parent.parent
COST_SIZES = ("640x480", "1280x720", "1920x1080")


def resolve_backend(config: PipelineConfig) -> PipelineConfig:
    """``backend: auto`` decided once, as the infer stage would, so that every figure of
    the run uses the same engine."""
    if config.model.backend != "auto":
        return config
    source = open_source(config.source.uris[0])
    info = source.info()
    source.close()
    threads = plan_resources(usable_cores(), **config.resources.plan_options()).budget("infer").threads
    probe = auto_probe((info.height, info.width), config.batching.batch_size, threads)
    backend = open_backend(config.model, probe, threads)
    name, why = backend.name, backend.selection
    backend.close()
    print(f"    backend auto -> {name} ({why})", flush=True)
    return apply_overrides(config, {"model.backend": name})


def bench_sequential(config: PipelineConfig, out_dir: Path) -> float:
    """(a) FPS of the plain single-process loop, overlay video included when configured."""
    from pipeline.ops.overlay import class_palette
    from pipeline.ops.track_overlay import draw_tracked
    from pipeline.postprocess import draw_result
    from pipeline.reference import track_frame
    from pipeline.sinks.video_writer import VideoWriter
    from pipeline.tracking import RunTracking

    backend = open_backend(config.model, threads=usable_cores())  # a plain loop: every core to the model
    source = open_source(config.source.uris[0])
    info = source.info()
    frames = list(islice(source.frames(), (config.source.max_frames or 60) + 1))
    source.close()
    palette = class_palette(len(backend.spec.class_names))
    writer = None
    if config.output.video:
        writer = VideoWriter(str(out_dir / f"sequential{Path(config.output.video).suffix}"), info.width, info.height,
                             fps=info.fps or 30, time_base=info.time_base, codec=config.output.codec,
                             options={k: str(v) for k, v in config.output.encoder_options.items()})
    params = params_from_config(config)
    list(segment_frames(backend, iter(frames[:1]), params))  # warm-up, not timed
    # the loop does what the pipeline does: track (and draw tracks) when the config tracks
    tracking = None
    if config.tracking.enabled and backend.spec.task == "instance":
        tracking = RunTracking(config.tracking.params())
    fps = None if info.fps is None else float(info.fps)
    # decoding is part of the loop: re-open the source and time everything from here
    source = open_source(config.source.uris[0])
    start, count = time.perf_counter(), 0
    for frame, result, details in segment_frames(
        backend, islice(source.frames(), config.source.max_frames or 60), params, batch_size=1
    ):
        if tracking is not None and details is not None:
            track_frame(tracking, frame, result, details, fps)
        if writer is not None:
            image = frame.image.copy()
            if tracking is not None and details is not None:
                draw_tracked(image, [(c.x0, c.y0, c.mask) for c in details.crops], details.boxes,
                             [i.class_id for i in result.instances], [i.track_id for i in result.instances],
                             backend.spec.class_names, config.output.overlay_alpha)
            else:
                draw_result(image, details, result.class_map, backend.spec.class_names,
                            config.output.overlay_alpha, palette)
            writer.write(image, frame.pts)
        count += 1
    if writer is not None:
        writer.close()
    elapsed = time.perf_counter() - start
    source.close()
    backend.close()
    return count / elapsed


def bench_inference(config: PipelineConfig) -> float:
    """(b) FPS of the model alone at the configured batch size, inputs prepared beforehand."""
    threads = plan_resources(usable_cores(), **config.resources.plan_options()).budget("infer").threads
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # what the infer stage gets
    try:
        backend = open_backend(config.model, threads=threads)
        source = open_source(config.source.uris[0])
        frames = islice(source.frames(), config.source.max_frames or 60)
        images = [prepare_image(f.image, backend.spec, device=backend.device) for f in frames]
        source.close()
        size = config.batching.batch_size
        infer_images(backend, images[:size])  # warm-up
        start = time.perf_counter()
        for i in range(0, len(images), size):
            infer_images(backend, images[i : i + size])
        if backend.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        backend.close()
        return len(images) / elapsed
    finally:
        torch.set_num_threads(before)


def bench_pipeline(config: PipelineConfig) -> dict:
    """(c) the full pipeline's report (fps excludes process start-up and model loading)."""
    from pipeline.supervisor import Supervisor

    return Supervisor(config).run()


def stage_costs(config: PipelineConfig, frames: int, video: bool) -> dict:
    """(d) the per-stage cost table, measured in a child process (passive OpenMP wait and
    thread budgets applied from the start, as in the stages)."""
    with tempfile.TemporaryDirectory() as tmp:
        config_path, out = Path(tmp) / "config.json", Path(tmp) / "costs.json"
        config_path.write_text(json.dumps(config.model_dump()))
        cmd = [sys.executable, "-m", "pipeline.stage_costs", "--config", str(config_path), "--frames", str(frames),
               "--video", "on" if video else "off", "--json", str(out)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
        return json.loads(out.read_text())


def measure(config: PipelineConfig, label: str, skip: set[str], cost_frames: int = 16) -> dict:
    """Every figure of one case; prints them as they come."""
    print(f"== {label}: {config.source.uris[0]}, {config.model.name}, batch {config.batching.batch_size}, "
          f"video {'on' if config.output.video else 'off'}", flush=True)
    config = resolve_backend(config)
    case: dict = {"label": label, "source": config.source.uris[0], "model": config.model.name,
                  "weights": config.model.weights, "backend": config.model.backend, "device": config.model.device,
                  "batch_size": config.batching.batch_size, "frames": config.source.max_frames,
                  "tracking": config.tracking.enabled,
                  "video": bool(config.output.video), "live": config.source.realtime}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if config.output.video:
            config = apply_overrides(config, {"output.video": str(out / f"pipeline{Path(config.output.video).suffix}")})
        if "sequential" not in skip:
            case["sequential_fps"] = round(bench_sequential(config, out), 3)
            print(f"(a) sequential loop      {case['sequential_fps']:8.2f} fps", flush=True)
        if "inference" not in skip:
            case["inference_fps"] = round(bench_inference(config), 3)
            print(f"(b) inference alone      {case['inference_fps']:8.2f} fps", flush=True)
        if "pipeline" not in skip:
            report = bench_pipeline(config)
            case.update(pipeline_fps=report["fps"], pipeline_latency_ms=report["latency_ms"],
                        pipeline_frames=report["frames_processed"], frames_read=report["frames_read"],
                        pipeline_stage_core_ms={k: v.get("core_ms_per_frame") for k, v in report["stages"].items()},
                        resources=report.get("resources"))
            print(f"(c) pipeline             {report['fps']:8.2f} fps  ({report['frames_processed']} of "
                  f"{report['frames_read']} frames read; age at publish p50 "
                  f"{report['latency_ms']['p50'] or 0:.0f} ms, p95 {report['latency_ms']['p95'] or 0:.0f} ms)", flush=True)
    if "costs" not in skip and not config.source.realtime:
        costs = stage_costs(config, cost_frames, bool(config.output.video))
        case["costs"] = costs
        from pipeline.stage_costs import format_costs

        print(format_costs(costs), flush=True)
        if "pipeline_fps" in case and costs["cpu_bound_fps"]:
            case["efficiency"] = round(case["pipeline_fps"] / costs["cpu_bound_fps"], 3)
            print(f"    pipeline / CPU-work bound      = {case['efficiency']:.2f}")
    if "sequential_fps" in case and "pipeline_fps" in case:
        case["pipeline_vs_sequential"] = round(case["pipeline_fps"] / case["sequential_fps"], 3)
        print(f"    c/a pipeline / sequential      = {case['pipeline_vs_sequential']:.2f}")
    if "inference_fps" in case and "pipeline_fps" in case:
        case["pipeline_vs_inference"] = round(case["pipeline_fps"] / case["inference_fps"], 3)
        print(f"    c/b pipeline / inference alone = {case['pipeline_vs_inference']:.2f}")
    return case


def machine() -> dict:
    from engines.backends.autoselect import machine_name

    return {"cpu": machine_name(), "cores": usable_cores(), "python": platform.python_version(),
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=REPO, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() + ("+dirty" if dirty else "")) or None


def provenance(module: str, argv: list[str] | None) -> dict:
    """Where a benchmark's figures come from: its command, this machine, the commit, the date (UTC)."""
    return {"command": f"python -m {module} " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "machine": machine(), "commit": commit(), "date": datetime.now(UTC).isoformat(timespec="seconds")}


def write_figures(figures: dict, path: str | None) -> None:
    """Print the figures as JSON, and write them to ``path`` when one is given."""
    text = json.dumps(figures, indent=1)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    print(text)


def make_clip(path: Path, size: str, frames: int, seed: int = 11) -> Path:
    """An H.264 file of a synthetic scene (not the default seed) for the file-input cases,
    encoded as a camera would (libx264 veryfast, crf 23): the sensor noise of the scene at
    the ground-truth tool's crf 12 makes a 70 Mbit/s file, whose decoding costs several
    times what a real 720p feed does."""
    from pipeline.sinks.video_writer import VideoWriter
    from pipeline.synthetic import SyntheticScene

    width, height = (int(v) for v in size.split("x"))
    scene = SyntheticScene(seed, width, height, 30.0)
    with VideoWriter(path, width, height, fps=30, options={"preset": "veryfast", "crf": "23"}) as writer:
        for index in range(frames):
            writer.write(scene.image(index), index)
    return path


def full_suite(base: PipelineConfig, frames: int, skip: set[str], workdir: Path) -> list[dict]:
    """Every case the docs publish."""
    cases = [measure(apply_overrides(base, {"source.max_frames": None}), "default", skip)]
    clip = make_clip(workdir / "clip720.mp4", "1280x720", frames)
    file_cfg = apply_overrides(base, {"source.uri": str(clip), "source.max_frames": frames})
    cases.append(measure(file_cfg, "h264-720p-video", skip))
    cases.append(measure(apply_overrides(file_cfg, {"output.video": None}), "h264-720p-no-video", skip))
    bound = apply_overrides(base, {"model.name": "maskrcnn_resnet50_fpn", "model.weights": "random",
                                   "model.min_size": 320, "output.video": None, "source.max_frames": 16})
    cases.append(measure(bound, "model-bound", skip | {"sequential"}))
    # live: the default scene played at 30 fps for 10 s (long enough for a steady state)
    live = apply_overrides(base, {"source.uri": "synthetic://?seed=7&size=640x480&fps=30&frames=300",
                                  "source.realtime": True, "source.max_frames": None})
    cases.append(measure(live, "live", skip | {"sequential", "inference", "costs"}))
    for size in COST_SIZES:
        for video in (True, False):
            sized = apply_overrides(base, {"source.uri": f"synthetic://?seed=11&size={size}&frames={frames}",
                                           "output.video": "x.mp4" if video else None})
            costs = stage_costs(resolve_backend(sized), 12, video)
            cases.append({"label": f"costs-{size}-{'video' if video else 'no-video'}", "costs": costs})
            from pipeline.stage_costs import format_costs

            print(format_costs(costs), flush=True)
    return cases


# Long on purpose: the CLI: arguments, then the suite's cases in the order the docs show them.
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--suite", choices=["one", "full"], default="one",
                        help="one: the config's input (default); full: every case the docs publish")
    parser.add_argument("--source", help="input (default: the config's)")
    parser.add_argument("--model")
    parser.add_argument("--weights")
    parser.add_argument("--backend")
    parser.add_argument("--device")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-frames", type=int, default=60)
    parser.add_argument("--min-size", type=int)
    parser.add_argument("--max-size", type=int)
    parser.add_argument("--output", help="overlay video for the pipeline and the loop; none: no video")
    parser.add_argument("--realtime", action="store_true", help="play the input as a live feed")
    parser.add_argument("--hop-frames", type=int, default=300)
    parser.add_argument("--skip", action="append", default=[],
                        choices=["sequential", "inference", "pipeline", "costs", "hop"])
    parser.add_argument("--compare-backends", nargs="+", metavar="BACKEND",
                        help="also time these backends on the same prepared frames, e.g. pytorch onnxruntime openvino")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 8],
                        help="batch sizes for --compare-backends (default 1 4 8)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)

    default = REPO / "configs" / "default.yaml"
    config = load_config(args.config or (default if default.exists() else None))
    overrides = {
        "source.uri": args.source, "model.name": args.model, "model.weights": args.weights,
        "model.backend": args.backend, "model.device": args.device, "batching.batch_size": args.batch_size,
        "source.max_frames": args.max_frames, "model.min_size": args.min_size, "model.max_size": args.max_size,
    }
    config = apply_overrides(config, {k: v for k, v in overrides.items() if v is not None})
    if args.output is not None:
        config = apply_overrides(config, {"output.video": None if args.output == "none" else args.output})
    if args.realtime:
        config = apply_overrides(config, {"source.realtime": True})
    config = apply_overrides(config, {"output.publish": None, "output.progress": False, "output.save_results": None,
                                      "output.report": None})
    figures: dict = {**provenance("pipeline.bench", argv),
                     "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ}}
    skip = set(args.skip)
    with tempfile.TemporaryDirectory() as tmp:
        if args.suite == "full":
            figures["cases"] = full_suite(config, args.max_frames, skip, Path(tmp))
        else:
            figures["cases"] = [measure(config, "one", skip)]
    if "hop" not in skip:
        from pipeline.bench_hop import bench_hop

        hop = bench_hop(args.hop_frames)
        figures["hop_us"] = hop
        print(f"1080p hop over ipc: shared-memory handle {hop['shm']:.0f} us/frame (incl. writing the frame "
              f"into the ring), ZeroMQ copy {hop['zmq']:.0f} us/frame, ratio {hop['zmq'] / hop['shm']:.1f}x")
    if args.compare_backends:
        from dataclasses import asdict

        from pipeline.bench_backends import format_results, run_bench

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
