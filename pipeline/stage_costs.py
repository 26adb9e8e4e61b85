"""What each stage's work costs in CPU time per frame, measured alone on the same frames.

``python -m pipeline.stage_costs`` (and ``python -m pipeline.bench``, which runs it in a
child process) decodes a clip once, then runs every stage's per-frame work on those
frames, one stage at a time, with the thread budget the resource plan gives that stage,
and reports core-milliseconds per frame (``time.process_time``: CPU time of every thread
of the process, not wall-clock busy time). The work is done by the same functions the
stages call (decode and ring copy; ``prepare_image``; ``infer_images``; NMS, paste-back,
RLE and drawing; the wire encoding and the encoder).

From the sum it gives the CPU-work bound of the machine: ``cores / sum of core-seconds per
frame``, the fastest that any scheduling of these stages on these cores could go. The
pipeline's throughput divided by it is its efficiency.

Run it in a process of its own (the bench does): the passive OpenMP wait must be set
before torch is loaded, or idle threads spinning between kernels are counted as work.
"""

from __future__ import annotations

import os

# Before torch loads (see the module docs); a caller that set them keeps its values.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KMP_BLOCKTIME", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from itertools import islice  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engines.outputs import InstanceOutput  # noqa: E402
from engines.transform import prepare_image  # noqa: E402
from pipeline.config import PipelineConfig, apply_overrides, load_config  # noqa: E402
from pipeline.inference import infer_images, open_backend  # noqa: E402
from pipeline.plan import STAGES  # noqa: E402
from pipeline.postprocess import class_map_from_output, draw_result, instances_from_output  # noqa: E402
from pipeline.reference import params_from_config  # noqa: E402
from pipeline.resources import apply_budget, plan_resources, usable_cores  # noqa: E402
from pipeline.results import FrameResult  # noqa: E402
from pipeline.sources import open_source  # noqa: E402
from pipeline.sources.base import Frame  # noqa: E402
from pipeline.stage_messages import FrameHandle, PostprocessedFrame, PreparedFrame  # noqa: E402
from pipeline.tracking import RunTracking  # noqa: E402


@contextmanager
def _cpu_clock(totals: dict[str, float], stage: str):
    start = time.process_time()
    try:
        yield
    finally:
        totals[stage] = totals.get(stage, 0.0) + time.process_time() - start


# Long on purpose: the five stages measured in turn on the same frames, each block under its
# own CPU clock and thread budget, in pipeline order; the frames flow from one block to the next.
def measure_stage_costs(config: PipelineConfig, frames: int = 24, video: bool | None = None) -> dict:
    """Core-ms per frame of every stage on the first ``frames`` frames of ``config``'s source.

    ``video``: include the overlay (drawing and encoding); None: as the config says.
    Returns ``{"frames", "cores", "video", "core_ms": {stage: ms}, "total_core_ms",
    "cpu_bound_fps"}``.
    """
    from pipeline import messages
    from pipeline.ops.overlay import class_palette
    from pipeline.sinks.video_writer import VideoWriter

    video = bool(config.output.video) if video is None else video
    cores = usable_cores()
    plan = plan_resources(cores, **config.resources.plan_options())
    params = params_from_config(config)
    spent: dict[str, float] = {}

    apply_budget(plan.budget("capture"))
    source = open_source(config.source.uris[0])
    info = source.info()
    images, stamps = [], []
    for frame in islice(source.frames(), frames + 1):  # the first frame of each stage warms it up
        images.append(frame.image)
        stamps.append(frame.pts)
    source.close()
    if len(images) < 2:
        raise ValueError(f"source '{config.source.uris[0]}' gave {len(images)} frame(s); need at least 2")
    # decode (or render) once more, timed, into the ring slot capture would write
    slot = np.empty((info.height, info.width, 3), np.uint8)
    source = open_source(config.source.uris[0])
    frames_again = source.frames()
    next(frames_again, None)
    with _cpu_clock(spent, "capture"):
        for frame in islice(frames_again, len(images) - 1):
            np.copyto(slot, frame.image)
    source.close()
    count = len(images) - 1  # the first frame of each stage below is its warm-up

    backend = open_backend(config.model, threads=plan.budget("infer").threads)
    spec = backend.spec
    apply_budget(plan.budget("preprocess"))
    prepared = []
    for i, image in enumerate(images):
        with _cpu_clock(spent if i else {}, "preprocess"):
            tensor = prepare_image(image, spec)
            region = np.empty(tuple(tensor.shape), np.float32)  # the slot's model-input region
            region[...] = tensor.numpy()
        prepared.append(torch.from_numpy(region))

    apply_budget(plan.budget("infer"))
    size = config.batching.batch_size
    infer_images(backend, prepared[:size])  # warm-up
    outputs, sizes = [], []
    with _cpu_clock(spent, "infer"):
        for start in range(1, len(prepared), size):
            out, sz = infer_images(backend, prepared[start:start + size])
            outputs += out
            sizes += sz
    backend.close()

    apply_budget(plan.budget("postprocess"))
    palette = class_palette(len(spec.class_names))
    # with tracking, instances are drawn in publish (by track), as in the stages
    tracking = RunTracking(config.tracking.params()) if config.tracking.enabled and spec.task == "instance" else None
    overlays, results = [], []
    for image, output, in_size in zip(images[1:], outputs, sizes, strict=True):
        with _cpu_clock(spent, "postprocess"):
            canvas = np.array(image) if video else None
            if isinstance(output, InstanceOutput):
                details = instances_from_output(output.boxes, output.scores, output.labels, output.mask_probs,
                                                in_size, image.shape[:2], params)
                if canvas is not None and tracking is None:
                    draw_result(canvas, details, None, spec.class_names, config.output.overlay_alpha, palette)
                packed = PostprocessedFrame.pack_crops(details.crops) if tracking is not None else None
                results.append((details, None, packed))  # with tracking, the masks travel on packed
            else:
                class_map = class_map_from_output(output.class_map, image.shape[:2])
                if canvas is not None:
                    draw_result(canvas, None, class_map, spec.class_names, config.output.overlay_alpha, palette)
                results.append((None, class_map, None))
        overlays.append(canvas)

    budget = plan.budget("publish")
    apply_budget(budget)
    with tempfile.TemporaryDirectory() as tmp:
        writer = None
        if video:
            writer = VideoWriter(Path(tmp) / f"costs{Path(config.output.video or 'x.mp4').suffix}", info.width,
                                 info.height, fps=info.fps or 30, time_base=info.time_base, codec=config.output.codec,
                                 threads=budget.codec_threads,
                                 options={k: str(v) for k, v in config.output.encoder_options.items()})
        with _cpu_clock(spent, "publish"):
            for seq, ((details, class_map, packed), overlay) in enumerate(zip(results, overlays, strict=True)):
                result = FrameResult(stream="0", seq=seq, width=info.width, height=info.height,
                                     model_id=spec.model_id, task=spec.task, class_names=list(spec.class_names),
                                     untrained=spec.untrained, pts=stamps[seq + 1], time_base=info.time_base,
                                     capture_ns=0, instances=details.instances if details else [],
                                     class_map=class_map)
                if tracking is not None and details is not None:
                    _track_and_draw(tracking, result, details, packed, overlay, spec.class_names, config, info)
                header, buffers = result.to_wire()
                messages.encode_envelope("0", header, buffers)
                if writer is not None:
                    writer.write(np.array(overlay), stamps[seq + 1])
            if writer is not None:
                writer.close()
    core_ms = {stage: round(spent.get(stage, 0.0) / count * 1000, 2) for stage in STAGES}
    total = sum(core_ms.values())
    return {
        "frames": count,
        "cores": cores,
        "video": video,
        "size": f"{info.width}x{info.height}",
        "core_ms": core_ms,
        "total_core_ms": round(total, 2),
        "non_model_core_ms": round(total - core_ms["infer"], 2),
        "cpu_bound_fps": round(cores / (total / 1000), 2) if total else None,
        "resources": plan.to_dict(),
    }


def _track_and_draw(tracking, result: FrameResult, details, packed, overlay, class_names, config, info) -> None:
    """Publish's tracking work for one frame: unpack the masks, track, draw the tracks."""
    from pipeline.ops.track_overlay import draw_tracked
    from pipeline.reference import track_frame

    rects, bits = packed
    handle = FrameHandle("0", result.seq, 0, 1, result.height, result.width)
    message_crops = PostprocessedFrame(PreparedFrame(handle), instances=[{}] * len(rects), crop_rects=rects,
                                       crop_bits=bits).crops()
    frame = Frame(np.zeros((0, 0, 3), np.uint8), result.seq, result.pts, result.time_base)
    track_frame(tracking, frame, result, details, None if info.fps is None else float(info.fps))
    if overlay is not None:
        draw_tracked(overlay, message_crops, details.boxes, [i.class_id for i in result.instances],
                     [i.track_id for i in result.instances], class_names, config.output.overlay_alpha)


def format_costs(costs: dict) -> str:
    """The cost table as text (one line per stage)."""
    lines = [f"per-stage CPU cost, {costs['size']}, video {'on' if costs['video'] else 'off'} "
             f"({costs['frames']} frames, {costs['cores']} cores):"]
    for stage in STAGES:
        lines.append(f"  {stage:<12} {costs['core_ms'][stage]:8.1f} core-ms/frame")
    lines.append(f"  {'total':<12} {costs['total_core_ms']:8.1f}  (non-model {costs['non_model_core_ms']:.1f})")
    lines.append(f"  CPU-work bound: {costs['cpu_bound_fps']:.2f} fps  (= {costs['cores']} cores / total)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.stage_costs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. model.name=fcn_demo (JSON values allowed)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--video", choices=["on", "off", "config"], default="config")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    default = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
    config = load_config(args.config or (default if default.exists() else None))
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    config = apply_overrides(config, overrides)
    video = {"on": True, "off": False, "config": None}[args.video]
    costs = measure_stage_costs(config, args.frames, video)
    print(format_costs(costs), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(costs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
