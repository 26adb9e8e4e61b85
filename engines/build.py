"""TensorRT engine builds from an ONNX export (see ``engines.export``), with an engine cache.

``build_engines(onnx_dir, BuildSettings(...))`` builds one engine per graph of the export
with the TensorRT Python API (the command line, which also opens calibration sources, is
``python -m pipeline.tools.build_engines``):

* network from ``tensorrt.OnnxParser`` (``EXPLICIT_BATCH`` on TensorRT 8.x, where it is
  still a flag; TensorRT 10 networks are always explicit-batch);
* optimization profiles: images ``[batch, 3, H, W]`` from ``min`` (batch 1, the smallest
  size) over ``opt`` (a 16:9 frame at the model's resize, the largest batch) to ``max``;
  optionally several batch ranges (``--batch-profiles 1 4 8`` -> [1], [2..4], [5..8]),
  one execution context each at run time; RoI heads get one profile over the RoI count
  (``--max-rois`` / ``--max-masks``, larger inputs are run in chunks);
* ``BuilderFlag.FP16`` for fp16; for int8 ``BuilderFlag.INT8`` (+ FP16 fallback) with an
  ``IInt8EntropyCalibrator2`` fed real frames (``BuildSettings.calibration_images``, named
  by ``BuildSettings.calibration``) through ``engines.transform.prepare_image``. The RoI
  heads are built fp16 in int8 mode: their inputs are RoI-pooled features that only the
  eager glue produces, so the frames cannot calibrate them directly;
* a timing cache ``timing-<TensorRT version>-<GPU>.cache`` persisted next to the engines;
* the serialized engines in an ``EngineCache`` (``engines.engine_cache``), keyed by the
  ONNX file's SHA-256, TensorRT version, GPU name, compute capability, precision and
  profile shapes; a stale or foreign engine is rebuilt, never loaded.

Without TensorRT, or without a CUDA GPU, it stops with a one-line ``ModelError``.

This module runs the build over the graphs of an export and the cache; the pure planning
(settings, profiles) is ``engines.build_plan``, INT8 calibration ``engines.int8_calibration``
and the TensorRT calls ``engines.tensorrt_builder``. Their public names are re-exported here.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engines.build_plan import (
    PRECISIONS,
    BuildSettings,
    graph_precision,
    graph_profiles,
    parse_hw,
    spec_from_manifest,
)
from engines.engine_cache import (
    EngineCache,
    EngineKey,
    ProfileShapes,
    safe_name,
    tensorrt_cache_dir,
)
from engines.export_manifest import load_manifest
from engines.int8_calibration import CalibratorFactory, calibration_batches, calibration_plan
from engines.tensorrt_builder import (
    MIN_TENSORRT,
    TENSORRT_MISSING,
    build_serialized,
    gpu_identity,
    require_cuda,
    require_tensorrt,
)

__all__ = [
    "MIN_TENSORRT",
    "PRECISIONS",
    "TENSORRT_MISSING",
    "BuildSettings",
    "BuiltEngine",
    "build_engines",
    "calibration_batches",
    "graph_profiles",
    "gpu_identity",
    "parse_hw",
    "require_cuda",
    "require_tensorrt",
]

ProgressFn = Callable[[str], None]


@dataclass
class BuiltEngine:
    """A serialized engine and where it lives."""

    graph: str
    path: Path
    data: bytes
    built: bool
    precision: str
    profiles: list[ProfileShapes]


# Long on purpose: one engine per graph, each looked up in the cache or built and stored, with
# the precision and profile decisions logged where they are made.
def build_engines(
    onnx_dir: str | os.PathLike[str],
    settings: BuildSettings,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cuda",
    rebuild: bool = False,
    spec: Any = None,
    progress: ProgressFn | None = None,
    manifest: dict[str, Any] | None = None,
) -> dict[str, BuiltEngine]:
    """Engines for every graph of the export in ``onnx_dir``: cached, or built now.

    ``cache_dir`` defaults to ``<cache root>/tensorrt/<model>-<weights tag>``. ``spec``
    (a ``ModelSpec``) sets the resize of calibration frames (default: the manifest's).
    ``manifest`` may override the export's ``input`` sizes the default profiles derive
    from (the graphs and their hashes always come from the directory).
    Raises ``ModelError`` without TensorRT or a GPU, or when a build fails.
    """
    # over 60 lines: one pass per graph whose plan, key and build share the per-graph locals;
    # require_cuda and gpu_identity are looked up in this module: tests replace them here
    trt = require_tensorrt()
    dev = require_cuda(device)
    say: ProgressFn = progress or (lambda _m: None)
    directory = Path(onnx_dir).expanduser()
    on_disk = load_manifest(directory, verify_files=True)
    if manifest is not None:
        on_disk = {**on_disk, "input": {**on_disk["input"], **manifest.get("input", {})}}
    manifest = on_disk
    gpu_name, capability = gpu_identity(dev)
    tag = (manifest.get("weights") or {}).get("tag", "onnx")
    cache = EngineCache(cache_dir or tensorrt_cache_dir(manifest["model"], tag))
    timing_cache = cache.directory / safe_name(f"timing-{trt.__version__}-{gpu_name}.cache")
    if spec is None:
        spec = spec_from_manifest(manifest)

    out: dict[str, BuiltEngine] = {}
    with _device_scope(dev):
        for graph, info in manifest["graphs"].items():
            precision = graph_precision(graph, settings.precision)
            profiles = graph_profiles(manifest, graph, settings)
            extra, factory = _key_extra(trt, settings, precision, spec, info, cache.directory, dev)
            key = EngineKey(
                onnx_sha256=str(info["sha256"]),
                tensorrt_version=str(trt.__version__),
                gpu_name=gpu_name,
                compute_capability=capability,
                precision=precision,
                profiles=tuple(profiles),
                extra=extra,
            )
            build = _builder(
                trt, directory / info["file"], profiles, precision, settings, timing_cache,
                factory, say,
                f"build: {graph} engine ({precision}, TensorRT {trt.__version__}, {gpu_name}) ...",
            )  # fmt: skip
            started = time.perf_counter()
            data, path, built = cache.get_or_build(graph, key, build, rebuild=rebuild)
            elapsed = time.perf_counter() - started
            say(f"build: {graph} engine " + (
                f"done in {elapsed:.1f} s -> {path}" if built else f"from cache {path}"
            ))  # fmt: skip
            out[graph] = BuiltEngine(graph, path, data, built, precision, profiles)
    return out


def _key_extra(
    trt: Any, settings: BuildSettings, precision: str, spec: Any, info: dict[str, Any],
    cache_directory: Path, device: torch.device,
) -> tuple[dict[str, Any], CalibratorFactory | None]:  # fmt: skip
    """The engine cache key's ``extra`` of one graph, and its calibrator factory (int8 only).

    Workspace and calibration frames change the engine, so they are part of its key.
    """
    extra = dict(settings.extra)
    if settings.workspace_gb:
        extra["workspace_gb"] = settings.workspace_gb
    if precision != "int8":
        return extra, None
    extra["calibration"], factory = calibration_plan(
        trt, settings, spec, info, cache_directory, device
    )
    return extra, factory


def _builder(
    trt: Any, onnx_path: Path, profiles: list[ProfileShapes], precision: str,
    settings: BuildSettings, timing_cache: Path, factory: CalibratorFactory | None,
    say: ProgressFn, announcement: str,
) -> Callable[[], bytes]:  # fmt: skip
    """What the engine cache calls on a miss: say ``announcement``, then build one engine."""

    def build() -> bytes:
        say(announcement)
        return build_serialized(
            trt, onnx_path, profiles, precision, settings, timing_cache, factory
        )

    return build


def _device_scope(device: torch.device) -> Any:
    """Make ``device`` current for the build (TensorRT builds on the current CUDA device)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.device(device)
