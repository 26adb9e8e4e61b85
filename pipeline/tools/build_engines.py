"""Build TensorRT engines from an ONNX export: the command line of ``engines.build``.

    python -m pipeline.tools.build_engines --onnx DIR --precision fp32|fp16|int8 \\
        [--calibration SOURCE] [--max-batch N] [--min-size S] [--opt-size S] [--max-size S]

``--calibration SOURCE`` is any ``pipeline.sources.open_source`` URI (video file, image
folder, ``synthetic://...``); opening it is why this CLI lives above ``engines``. Everything
else is ``engines.build.build_engines``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

import numpy as np

from engines.build import PRECISIONS, BuildSettings, build_engines, parse_hw
from pipeline.errors import PipelineError

__all__ = ["main", "source_images"]


def source_images(uri: str) -> Iterator[np.ndarray]:
    """The frames of source ``uri`` as H x W x 3 uint8 RGB arrays (opened on first use)."""
    from pipeline.sources import open_source

    with open_source(uri) as src:
        for frame in src.frames():
            yield frame.image


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.tools.build_engines",
        description="Build TensorRT engines from an ONNX export (python -m engines.export).",
    )
    p.add_argument("--onnx", required=True, help="export directory (with manifest.json)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16")
    p.add_argument(
        "--calibration",
        default=None,
        help="int8: frames to calibrate on (video file, image folder, synthetic://...)",
    )
    p.add_argument("--calibration-frames", type=int, default=64)
    p.add_argument("--calibration-batch", type=int, default=4)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--opt-batch", type=int, default=None)
    p.add_argument(
        "--batch-profiles",
        type=int,
        nargs="*",
        default=(),
        help="upper batch bounds of separate profiles, e.g. 1 4 8",
    )
    p.add_argument("--min-size", default=None, help="smallest input, N or HxW (padded)")
    p.add_argument("--opt-size", default=None, help="input size to tune for, N or HxW")
    p.add_argument("--max-size", default=None, help="largest input, N or HxW")
    p.add_argument("--max-rois", type=int, default=None, help="box head RoIs per call")
    p.add_argument("--max-masks", type=int, default=None, help="mask head RoIs per call")
    p.add_argument("--workspace-gb", type=float, default=None)
    p.add_argument("--cache-dir", default=None, help="engine cache directory")
    p.add_argument("--device", default="cuda")
    p.add_argument("--rebuild", action="store_true", help="build even if a cached engine fits")
    return p.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 ok, 2 error)."""
    args = _parse_args(argv)

    def say(msg: str) -> None:
        print(msg, flush=True)

    uri = args.calibration
    try:
        settings = BuildSettings(
            precision=args.precision,
            max_batch=args.max_batch,
            opt_batch=args.opt_batch,
            batch_profiles=tuple(args.batch_profiles or ()),
            min_hw=parse_hw(args.min_size) if args.min_size else None,
            opt_hw=parse_hw(args.opt_size) if args.opt_size else None,
            max_hw=parse_hw(args.max_size) if args.max_size else None,
            max_rois=args.max_rois,
            max_masks=args.max_masks,
            workspace_gb=args.workspace_gb,
            calibration=uri,
            calibration_frames=args.calibration_frames,
            calibration_batch=args.calibration_batch,
            # opened only if an int8 engine is actually built (not when it comes from the cache)
            calibration_images=(lambda: source_images(uri)) if uri else None,
        )
        engines = build_engines(
            args.onnx, settings, cache_dir=args.cache_dir, device=args.device,
            rebuild=args.rebuild, progress=say,
        )  # fmt: skip
    except (PipelineError, ValueError) as exc:  # ModelError, or a SourceError while calibrating
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for graph, engine in engines.items():
        say(f"{graph}: {engine.path} ({len(engine.data) / 1e6:.1f} MB, {engine.precision})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
