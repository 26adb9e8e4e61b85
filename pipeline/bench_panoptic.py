"""What panoptic mode costs: the pipeline's frame rate running an instance model and a
semantic model on the same batches (fused in postprocess) against the instance model alone,
on the same input, measured in one process, one run after the other.

``python -m pipeline.bench_panoptic [--json OUT] [--frames N] [--rounds R] [--semantic NAME]``.
The two modes alternate ``rounds`` times (drift of the machine falls on both) and the best
run of each is compared. The semantic model runs with its demo weights where they exist,
else seeded random ones (a dense net costs the same whatever its weights; the report says
which). Speed is never asserted in tests; docs/BENCHMARKS.md quotes this output with its
command and machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from typing import Any

__all__ = ["bench_panoptic", "main"]

INSTANCE = "maskrcnn_demo"


def bench_panoptic(semantic: str, frames: int, rounds: int, size: str = "640x480") -> dict[str, Any]:
    """Best fps of the default pipeline with ``INSTANCE`` alone and with ``INSTANCE+semantic``
    on a panoptic synthetic scene (things in front of stuff) of ``frames`` frames."""
    from engines.weights import demo_weights_path
    from pipeline.config import PipelineConfig, apply_overrides
    from pipeline.supervisor import Supervisor

    weights = "demo" if demo_weights_path(semantic).is_file() else "random"
    uri = f"synthetic://?seed=7&kind=panoptic&size={size}&fps=30&frames={frames}"
    fps: dict[str, list[float]] = {"instance": [], "panoptic": []}
    models = {"instance": INSTANCE, "panoptic": f"{INSTANCE}+{semantic}"}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for mode, name in models.items():
                first, _, second = name.partition("+")
                config = apply_overrides(PipelineConfig(), {
                    "source.uri": uri, "model.name": first, "model.semantic": second or None,
                    "model.semantic_weights": weights, "output.video": f"{tmp}/{mode}.mp4",
                    "output.publish": f"ipc://{tmp}/{mode}.sock", "output.progress": False,
                })  # fmt: skip
                report = Supervisor(config).run()
                fps[mode].append(float(report["fps"]))
                print(f"[bench] {mode}: {report['fps']:.2f} fps", file=sys.stderr)
    best = {mode: max(values) for mode, values in fps.items()}
    return {
        "fps_instance": best["instance"], "fps_panoptic": best["panoptic"],
        "panoptic_over_instance": best["panoptic"] / best["instance"], "runs": fps, "source": uri,
        "instance_model": INSTANCE, "semantic_model": semantic, "semantic_weights": weights,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Command line: print (and with ``--json`` write) the figures; 2 on bad arguments."""
    from engines.registry import get_model_entry, list_models
    from pipeline.bench import provenance, write_figures

    parser = argparse.ArgumentParser(prog="python -m pipeline.bench_panoptic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the figures here as JSON")
    parser.add_argument("--frames", type=int, default=120, help="frames per pipeline run (default 120)")
    parser.add_argument("--rounds", type=int, default=2, help="instance/panoptic run pairs (default 2)")
    parser.add_argument("--semantic", default="fcn8s_demo", help="the semantic model (default fcn8s_demo)")
    parser.add_argument("--size", default="640x480", help="scene size WxH (default 640x480)")
    args = parser.parse_args(argv)
    if args.frames < 10 or args.rounds < 1:
        print("error: --frames must be at least 10 and --rounds at least 1", file=sys.stderr)
        return 2
    if args.semantic not in list_models() or get_model_entry(args.semantic).task != "semantic":
        print(f"error: --semantic {args.semantic!r} is not a semantic model", file=sys.stderr)
        return 2
    result: dict[str, Any] = {
        **provenance("pipeline.bench_panoptic", argv),
        "pipeline": bench_panoptic(args.semantic, args.frames, args.rounds, args.size),
    }  # fmt: skip
    p = result["pipeline"]
    print(f"pipeline fps {INSTANCE} alone {p['fps_instance']:.2f}, +{args.semantic} (panoptic) "
          f"{p['fps_panoptic']:.2f}: panoptic/instance {p['panoptic_over_instance']:.3f}", file=sys.stderr)
    write_figures(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
