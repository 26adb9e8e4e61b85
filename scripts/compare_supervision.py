"""segstream against a plain loop written with Roboflow's ``supervision``, same clip and model.

    python scripts/compare_supervision.py [--frames 120] [--size 1280x720] [--json OUT]

The loop is what a user of ``supervision`` writes: decode with PyAV, run the same
``maskrcnn_demo`` weights through the same backend and score threshold (batch 1, every
core), draw masks, boxes and labels with ``supervision``'s annotators, encode with the same
libx264 settings. Then the segstream pipeline runs on the same clip with the default config.
Both run in this process's session, one after the other; the ratio is printed. This is a
script outside the package's dependencies (``supervision`` comes with the ``peers`` extra);
Roboflow inference's ``InferencePipeline`` is not compared: its package pulls in a hosted
model registry that cannot be reached here.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np


def supervision_loop(config, clip: Path, out: Path, frames: int) -> float:
    """Frames per second of the single-process loop with ``supervision`` annotators."""
    import supervision as sv

    from pipeline.inference import open_backend
    from pipeline.reference import params_from_config, segment_frames
    from pipeline.resources import usable_cores
    from pipeline.sinks.video_writer import VideoWriter
    from pipeline.sources import open_source

    backend = open_backend(config.model, threads=usable_cores())
    source = open_source(str(clip))
    info = source.info()
    params = params_from_config(config)
    list(segment_frames(backend, islice(source.frames(), 1), params))  # warm-up
    source.close()
    masks, boxes, labels = sv.MaskAnnotator(), sv.BoxAnnotator(), sv.LabelAnnotator()
    source = open_source(str(clip))
    writer = VideoWriter(out, info.width, info.height, fps=info.fps or 30, time_base=info.time_base,
                         options={k: str(v) for k, v in config.output.encoder_options.items()})
    start, count = time.perf_counter(), 0
    for frame, _, details in segment_frames(backend, islice(source.frames(), frames), params, batch_size=1):
        height, width = frame.image.shape[:2]
        full = np.zeros((len(details.crops), height, width), bool)
        for k, crop in enumerate(details.crops):
            region = full[k, crop.y0 : crop.y1, crop.x0 : crop.x1]
            region[...] = crop.mask[: region.shape[0], : region.shape[1]]
        detections = sv.Detections(xyxy=details.boxes.reshape(-1, 4), mask=full, confidence=details.scores,
                                   class_id=details.labels.astype(int))
        names = [f"{backend.spec.class_names[c]} {s:.2f}" for c, s in zip(details.labels, details.scores, strict=True)]
        image = masks.annotate(frame.image.copy(), detections)
        image = boxes.annotate(image, detections)
        image = labels.annotate(image, detections, labels=names)
        writer.write(np.ascontiguousarray(image), frame.pts)
        count += 1
    writer.close()
    elapsed = time.perf_counter() - start
    source.close()
    backend.close()
    return count / elapsed


def main(argv: list[str] | None = None) -> int:
    from pipeline.bench import make_clip
    from pipeline.config import PipelineConfig, apply_overrides
    from pipeline.supervisor import Supervisor

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", args.size, args.frames)
        config = apply_overrides(PipelineConfig(), {
            "source.uri": str(clip), "output.video": f"{tmp}/pipeline.mp4", "output.publish": f"ipc://{tmp}/p.sock",
            "output.progress": False,
        })
        loop_fps = supervision_loop(config, clip, Path(tmp) / "loop.mp4", args.frames)
        print(f"supervision loop: {loop_fps:.2f} fps", file=sys.stderr)
        pipeline_fps = float(Supervisor(config).run()["fps"])
        print(f"segstream pipeline: {pipeline_fps:.2f} fps", file=sys.stderr)
    result = {"command": "python scripts/compare_supervision.py " + " ".join(argv or sys.argv[1:]),
              "clip": f"{args.size} H.264, {args.frames} frames", "supervision_loop_fps": loop_fps,
              "pipeline_fps": pipeline_fps, "pipeline_over_supervision": pipeline_fps / loop_fps}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
