"""Backend benchmark: the same prepared frames through several backends, in one process.

``python -m pipeline.bench_backends --model maskrcnn_demo --backends pytorch onnxruntime
--batch-sizes 1 4 8 --frames N`` prints, per backend and batch size, throughput (frames per
second) and per-batch latency (mean, p50, p90), then each backend's throughput ratio to the
first one listed (e.g. ``onnxruntime/pytorch``). Frames come from ``--source`` (default: the
synthetic scene), are decoded and prepared once (``engines.transform.prepare_image``) and
reused by every backend, so only ``backend.infer`` is timed. Backends are built first (ONNX
export / engine builds are not timed) and measured batch size by batch size, alternating
backends, after ``--warmup`` untimed batches each.

Besides the registry names, ``openvino-int8`` is OpenVINO with ``precision="int8"``,
calibrated on ``openvino_backend.DEFAULT_CALIBRATION_SOURCE`` (quantised once, then cached).

It lives in ``pipeline`` (not ``engines``) because it opens sources: benchmark tooling sits
above both layers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from engines.backends import create_backend
from engines.backends.base import Backend
from engines.transform import batch_images, prepare_image
from pipeline.errors import PipelineError

__all__ = ["VARIANTS", "BenchResult", "main", "run_bench"]

#: Bench names that are a registry backend with options.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "openvino-int8": ("openvino", {"precision": "int8"}),
}
#: Backends that take a ``threads`` option (torch's own count is set globally).
_THREADED = ("onnxruntime", "openvino")


@dataclass
class BenchResult:
    """One backend at one batch size."""

    backend: str
    batch_size: int
    frames: int
    seconds: float
    fps: float
    latency_ms_mean: float
    latency_ms_p50: float
    latency_ms_p90: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def _measure(
    backend: Backend,
    images: list[torch.Tensor],
    batch_size: int,
    frames: int,
    warmup: int,
    label: str | None = None,
) -> BenchResult:
    device = backend.device
    count = len(images)

    def batch_at(start: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        chosen = [images[(start + i) % count] for i in range(batch_size)]
        tensor, sizes = batch_images(chosen, backend.spec.size_divisible)
        return tensor.to(device), sizes

    for w in range(warmup):
        backend.infer(*batch_at(w * batch_size))
    _sync(device)
    latencies: list[float] = []
    done = 0
    started = time.perf_counter()
    while done < frames:
        tensor, sizes = batch_at(done)
        _sync(device)
        t0 = time.perf_counter()
        backend.infer(tensor, sizes)
        _sync(device)
        latencies.append((time.perf_counter() - t0) * 1000.0)
        done += batch_size
    seconds = time.perf_counter() - started
    return BenchResult(
        backend=label or backend.name,
        batch_size=batch_size,
        frames=done,
        seconds=seconds,
        fps=done / sum(latencies) * 1000.0,
        latency_ms_mean=statistics.fmean(latencies),
        latency_ms_p50=_percentile(latencies, 0.5),
        latency_ms_p90=_percentile(latencies, 0.9),
    )


# Long on purpose: one timed comparison, backend after backend, on the same prepared frames.
def run_bench(
    model: str,
    weights: str,
    backends: list[str],
    batch_sizes: list[int],
    frames: int,
    *,
    source: str | None = None,
    device: str = "cpu",
    warmup: int = 1,
    threads: int | None = None,
    options: dict[str, Any] | None = None,
    say: Any = print,
) -> list[BenchResult]:
    """Build every backend, prepare the frames once, and measure (see module docs)."""
    from pipeline.sources import open_source

    if threads:
        torch.set_num_threads(threads)
    opts = dict(options or {})
    built: list[Backend] = []
    for name in backends:
        registry_name, variant = VARIANTS.get(name, (name, {}))
        extra = dict(variant)
        if threads and registry_name in _THREADED:
            extra["threads"] = threads
        if registry_name == "openvino" and extra.get("precision") == "int8":
            from engines.backends.openvino_backend import DEFAULT_CALIBRATION_SOURCE

            def calibration(uri: str = DEFAULT_CALIBRATION_SOURCE) -> Any:
                with open_source(uri) as src:
                    yield from (frame.image for frame in src.frames())

            extra.update(calibration=calibration(), calibration_source=DEFAULT_CALIBRATION_SOURCE)
        t0 = time.perf_counter()
        backend = create_backend(
            model, weights, backend=registry_name, device=device, **opts, **extra
        )
        say(f"bench: {name} ready in {time.perf_counter() - t0:.1f} s ({backend!r})")
        built.append(backend)
    spec = built[0].spec
    for backend in built[1:]:
        if backend.spec.min_size != spec.min_size or backend.spec.max_size != spec.max_size:
            raise PipelineError("backends disagree on the input size; pass --min-size/--max-size")
    uri = source or f"synthetic://?seed=7&size=640x480&frames={max(8, min(frames, 32))}"
    images: list[torch.Tensor] = []
    with open_source(uri) as src:
        for frame in src.frames():
            images.append(prepare_image(frame.image, spec, "cpu"))
            if len(images) >= max(batch_sizes) * 2:
                break
    if not images:
        raise PipelineError(f"source {uri} produced no frames")
    say(
        f"bench: {len(images)} prepared frames from {uri}, input {tuple(images[0].shape[1:])}, "
        f"device {device}, torch threads {torch.get_num_threads()}"
    )
    results: list[BenchResult] = []
    for batch_size in batch_sizes:
        for name, backend in zip(backends, built, strict=True):
            results.append(_measure(backend, images, batch_size, frames, warmup, label=name))
    for backend in built:
        backend.close()
    return results


def format_results(results: list[BenchResult], backends: list[str]) -> str:
    """The results as a table plus throughput ratios to the first backend."""
    lines = [
        f"{'backend':<14} {'batch':>5} {'frames':>6} {'FPS':>8} {'lat mean ms':>11} "
        f"{'p50 ms':>8} {'p90 ms':>8}"
    ]
    for r in results:
        lines.append(
            f"{r.backend:<14} {r.batch_size:>5} {r.frames:>6} {r.fps:>8.2f} "
            f"{r.latency_ms_mean:>11.1f} {r.latency_ms_p50:>8.1f} {r.latency_ms_p90:>8.1f}"
        )
    base = backends[0]
    by_key = {(r.backend, r.batch_size): r for r in results}
    for other in backends[1:]:
        for r in results:
            if r.backend != other:
                continue
            ref = by_key.get((base, r.batch_size))
            if ref is not None and ref.fps > 0:
                lines.append(
                    f"ratio {other}/{base} @ batch {r.batch_size}: {r.fps / ref.fps:.2f}x FPS"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    p = argparse.ArgumentParser(
        prog="python -m pipeline.bench_backends", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", default="maskrcnn_demo")
    p.add_argument("--weights", default="default")
    p.add_argument("--backends", nargs="+", default=["pytorch", "onnxruntime"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 8])
    p.add_argument("--frames", type=int, default=32, help="timed frames per backend and batch size")
    p.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    p.add_argument("--source", default=None, help="frames (default: synthetic scene, 640x480)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch, ORT, OpenVINO)")
    p.add_argument("--min-size", type=int, default=None)
    p.add_argument("--max-size", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)  # fmt: skip
    if args.frames < 1 or any(b < 1 for b in args.batch_sizes):
        p.error("--frames and --batch-sizes must be positive")
    options = {k: v for k, v in (("min_size", args.min_size), ("max_size", args.max_size)) if v}
    try:
        results = run_bench(
            args.model, args.weights, args.backends, args.batch_sizes, args.frames,
            source=args.source, device=args.device, warmup=args.warmup, threads=args.threads,
            options=options,
        )  # fmt: skip
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_results(results, args.backends))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump([asdict(r) for r in results], fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
