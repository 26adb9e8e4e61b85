"""What tracking costs: the tracker per frame at 5, 20 and 50 instances, and the pipeline's
frame rate with tracking on against off, measured in one process, one after the other.

``python -m pipeline.bench_tracking [--json OUT] [--frames N] [--rounds R]``. Speed is never
asserted in tests; docs/BENCHMARKS.md quotes this output with its command and machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from typing import Any

import numpy as np

from pipeline.tracking import Crop, Detections, RunTracking, TrackerParams

__all__ = ["bench_tracker", "bench_pipeline_tracking", "main"]

SIZE = (720, 1280)  # (height, width)


def _moving_instances(count: int, frames: int, seed: int = 0) -> list[Detections]:
    """``count`` discs of 40-120 px bouncing around a 1280x720 frame at 30 fps (their masks
    are real discs, so mask IoU costs what it costs on real masks of that size)."""
    rng = np.random.default_rng(seed)
    height, width = SIZE
    radius = rng.uniform(20, 60, count)
    pos = np.stack([rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)], 1)
    vel = rng.uniform(-8, 8, (count, 2))
    discs = {}
    out = []
    for _ in range(frames):
        boxes, crops = [], []
        for i in range(count):
            r = int(radius[i])
            if r not in discs:
                yy, xx = np.mgrid[-r:r, -r:r]
                discs[r] = (yy * yy + xx * xx) < r * r
            x0, y0 = int(pos[i, 0]) - r, int(pos[i, 1]) - r
            boxes.append([x0, y0, x0 + 2 * r, y0 + 2 * r])
            crops.append(Crop.of(x0, y0, discs[r]))
        out.append(Detections(np.array(boxes, float), np.full(count, 0.9), np.ones(count, np.int64), crops))
        pos += vel
        bounce = (pos < radius[:, None]) | (pos > np.array([width, height]) - radius[:, None])
        vel[bounce] *= -1
    return out


def bench_tracker(counts: tuple[int, ...] = (5, 20, 50), frames: int = 300) -> dict[str, float]:
    """Milliseconds per frame of :meth:`RunTracking.track` for each instance count."""
    results = {}
    for count in counts:
        detections = _moving_instances(count, frames)
        tracking = RunTracking(TrackerParams())
        start = time.perf_counter()
        for k, dets in enumerate(detections):
            tracking.track("0", k, k, Fraction(1, 30), 0, 30.0, SIZE, dets)
        results[str(count)] = (time.perf_counter() - start) / frames * 1e3
    return results


def bench_pipeline_tracking(frames: int, rounds: int, source: str | None = None) -> dict[str, Any]:
    """The default pipeline's fps with tracking on and off, alternating ``rounds`` times
    (alternation spreads any drift of the machine over both); the best run of each."""
    import tempfile

    from pipeline.config import PipelineConfig, apply_overrides
    from pipeline.supervisor import Supervisor

    base = PipelineConfig()
    uri = source or f"synthetic://?seed=7&size=640x480&fps=30&frames={frames}"
    fps: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for mode in ("on", "off"):
                config = apply_overrides(base, {
                    "source.uri": uri, "tracking.enabled": mode == "on", "output.video": f"{tmp}/{mode}.mp4",
                    "output.publish": f"ipc://{tmp}/{mode}.sock", "output.progress": False,
                })
                report = Supervisor(config).run()
                fps[mode].append(float(report["fps"]))
    best = {mode: max(values) for mode, values in fps.items()}
    return {"fps_on": best["on"], "fps_off": best["off"], "on_over_off": best["on"] / best["off"], "runs": fps,
            "source": uri}


def main(argv: list[str] | None = None) -> int:
    from pipeline.bench import provenance, write_figures

    parser = argparse.ArgumentParser(prog="python -m pipeline.bench_tracking", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the figures here as JSON")
    parser.add_argument("--frames", type=int, default=150, help="frames per pipeline run (default 150)")
    parser.add_argument("--rounds", type=int, default=2, help="on/off pipeline run pairs (default 2; 0: skip)")
    args = parser.parse_args(argv)
    if args.frames < 10 or args.rounds < 0:
        print("error: --frames must be at least 10 and --rounds at least 0", file=sys.stderr)
        return 2
    result: dict[str, Any] = {
        **provenance("pipeline.bench_tracking", argv),
        "tracker_ms_per_frame_1280x720": bench_tracker(),
    }
    print(f"tracker ms/frame at 1280x720 (instances: ms): {result['tracker_ms_per_frame_1280x720']}", file=sys.stderr)
    if args.rounds:
        result["pipeline"] = bench_pipeline_tracking(args.frames, args.rounds)
        p = result["pipeline"]
        print(f"pipeline fps tracking on {p['fps_on']:.2f}, off {p['fps_off']:.2f}: on/off {p['on_over_off']:.3f}",
              file=sys.stderr)
    write_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
