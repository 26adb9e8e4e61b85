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
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.engine_cache import (
    EngineCache,
    EngineKey,
    ProfileShapes,
    atomic_write_bytes,
    safe_name,
    tensorrt_cache_dir,
)
from engines.errors import ModelError
from engines.export import load_manifest

__all__ = [
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

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
TENSORRT_MISSING = (
    "TensorRT is not installed (pip install tensorrt on a machine with NVIDIA drivers); "
    "use --backend onnxruntime or pytorch, or --backend auto to take the best available"
)
MIN_TENSORRT = (8, 6)

ProgressFn = Callable[[str], None]


def require_tensorrt() -> Any:
    """Import and return the ``tensorrt`` module; ``ModelError`` if missing or too old."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ModelError(TENSORRT_MISSING) from exc
    except Exception as exc:  # noqa: BLE001 - a broken install (missing libnvinfer, ...)
        raise ModelError(f"TensorRT is installed but cannot be loaded: {exc}") from exc
    version = tuple(int(p) for p in str(trt.__version__).split(".")[:2] if p.isdigit())
    if version < MIN_TENSORRT:
        raise ModelError(
            f"TensorRT {trt.__version__} is too old: segstream needs "
            f"{'.'.join(map(str, MIN_TENSORRT))} or newer (pip install -U tensorrt)"
        )
    return trt


def require_cuda(device: str | torch.device = "cuda") -> torch.device:
    """The CUDA device TensorRT runs on; ``ModelError`` naming the problem if there is none."""
    dev = torch.device(device)
    if dev.type != "cuda":
        raise ModelError(
            f"TensorRT runs on NVIDIA GPUs only, not on device '{device}': use --device cuda "
            "(or --backend onnxruntime / pytorch for the CPU)"
        )
    if not torch.cuda.is_available():
        raise ModelError(
            "TensorRT needs an NVIDIA GPU with CUDA, and none is available here "
            "(torch.cuda.is_available() is False); use --backend onnxruntime or pytorch"
        )
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ModelError(f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) exist")
    return torch.device("cuda", index)


def gpu_identity(device: torch.device) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of a CUDA device."""
    props = torch.cuda.get_device_properties(device)
    return str(props.name), f"{props.major}.{props.minor}"


def parse_hw(text: str | int | Sequence[int]) -> tuple[int, int]:
    """``"800"`` -> (800, 800); ``"768x1344"`` -> (768, 1344) (height x width)."""
    if isinstance(text, int):
        return int(text), int(text)
    if not isinstance(text, str):
        h, w = text
        return int(h), int(w)
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"size must be N or HxW, got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"size must be N or HxW with positive numbers, got {text!r}")
    return values[0], values[1]


def _ceil_to(value: int, multiple: int) -> int:
    multiple = max(int(multiple), 1)
    return int(math.ceil(value / multiple) * multiple)


@dataclass(frozen=True)
class BuildSettings:
    """What to build: precision and the shape ranges of the optimization profiles.

    Sizes are (height, width) of the padded model input; ``None`` takes the defaults
    derived from the export's resize settings (see ``graph_profiles``).

    INT8: ``calibration`` names the frames (e.g. their source URI; it is part of the engine
    cache key, so different frames need different names) and ``calibration_images()``
    returns an iterable of H x W x 3 uint8 RGB frames; it is called only when an engine is
    actually built. This layer opens no sources: the caller does (e.g.
    ``pipeline.tools.build_engines`` for ``--calibration SOURCE``).
    """

    precision: str = "fp16"
    max_batch: int = 8
    opt_batch: int | None = None
    batch_profiles: tuple[int, ...] = ()
    min_hw: tuple[int, int] | None = None
    opt_hw: tuple[int, int] | None = None
    max_hw: tuple[int, int] | None = None
    max_rois: int | None = None
    max_masks: int | None = None
    workspace_gb: float | None = None
    calibration: str | None = None
    calibration_frames: int = 64
    calibration_batch: int = 4
    extra: dict[str, Any] = field(default_factory=dict)
    # not compared: a function has no useful equality, and ``calibration`` identifies the frames
    calibration_images: Callable[[], Iterable[np.ndarray]] | None = field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ModelError(
                f"unknown precision '{self.precision}' (choices: {', '.join(PRECISIONS)})"
            )
        if self.max_batch < 1:
            raise ModelError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.precision == "int8" and not self.calibration:
            raise ModelError("int8 needs calibration frames: pass --calibration SOURCE (a video, "
                             "image folder or synthetic:// URI)")  # fmt: skip


def _default_sizes(
    manifest: dict[str, Any],
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    from engines.transform import target_size

    inp = manifest["input"]
    div = max(int(inp.get("size_divisible", 32)), 1)
    lo, hi = int(inp["min_size"]), int(inp["max_size"])
    smallest = _ceil_to(32, div)
    oh, ow = target_size(1080, 1920, lo, hi)  # a 16:9 frame, the common case
    opt = (_ceil_to(oh, div), _ceil_to(ow, div))
    side = _ceil_to(min(hi, 2 * lo), div)
    side = max(side, *opt)
    return (smallest, smallest), opt, (side, side)


def graph_profiles(
    manifest: dict[str, Any], graph: str, settings: BuildSettings
) -> list[ProfileShapes]:
    """Optimization profiles of one graph of an export (pure: no TensorRT needed).

    Image graphs (``dense``, ``semantic``): one profile per batch range, each
    ``min = [lo, 3, min_h, min_w]``, ``opt = [hi or opt_batch, 3, opt_h, opt_w]``,
    ``max = [hi, 3, max_h, max_w]``. Heads: one profile over the RoI count, 1 ..
    ``max_rois`` (box head, default ``max_batch * 1000``) or ``max_masks`` (mask head,
    default ``max_batch * 100``), opt at a quarter of the max.
    """
    info = manifest["graphs"][graph]
    spec = info["inputs"][0]
    name, dims = spec["name"], list(spec["shape"])
    if graph in ("dense", "semantic"):
        d_min, d_opt, d_max = _default_sizes(manifest)
        min_hw = settings.min_hw or d_min
        opt_hw = settings.opt_hw or d_opt
        max_hw = settings.max_hw or d_max
        if not (min_hw[0] <= opt_hw[0] <= max_hw[0] and min_hw[1] <= opt_hw[1] <= max_hw[1]):
            raise ModelError(
                f"profile sizes must satisfy min <= opt <= max, got min {min_hw}, opt {opt_hw}, "
                f"max {max_hw}"
            )
        uppers = sorted(
            {int(b) for b in settings.batch_profiles if 0 < int(b)} | {settings.max_batch}
        )
        uppers = [b for b in uppers if b <= settings.max_batch]
        profiles: list[ProfileShapes] = []
        lower = 1
        for upper in uppers:
            opt_b = upper
            if len(uppers) == 1 and settings.opt_batch:
                opt_b = min(max(int(settings.opt_batch), 1), upper)
            profiles.append({
                name: (
                    [lower, int(dims[1]), min_hw[0], min_hw[1]],
                    [opt_b, int(dims[1]), opt_hw[0], opt_hw[1]],
                    [upper, int(dims[1]), max_hw[0], max_hw[1]],
                )
            })  # fmt: skip
            lower = upper + 1
        return profiles
    if graph in ("box_head", "mask_head"):
        per_image = 1000 if graph == "box_head" else 100
        limit = settings.max_rois if graph == "box_head" else settings.max_masks
        top = int(limit or settings.max_batch * per_image)
        rest = [int(d) for d in dims[1:]]
        opt = max(1, top // 4)
        return [{name: ([1, *rest], [opt, *rest], [top, *rest])}]
    raise ModelError(f"unknown graph '{graph}' in the export manifest")


def _graph_precision(graph: str, precision: str) -> str:
    """INT8 covers the image graphs; RoI heads are built fp16 then (see module docs)."""
    if precision == "int8" and graph in ("box_head", "mask_head"):
        return "fp16"
    return precision


# --------------------------------------------------------------------------- calibration


def calibration_batches(
    frames: Iterable[np.ndarray],
    spec: Any,
    batch_size: int,
    max_frames: int,
    size: tuple[int, int] | None = None,
    *,
    name: str = "frames",
) -> Iterator[torch.Tensor]:
    """Fixed-shape CPU batches [batch_size, 3, H, W] of real frames for INT8 calibration.

    ``frames`` (H x W x 3 uint8 RGB) go through ``engines.transform.prepare_image`` with
    ``spec`` (a ``ModelSpec``) and are zero-padded (cropped if larger) into ``size``
    (default: the first frame's padded size). At most ``max_frames`` frames are read; a last
    partial batch is dropped (TensorRT needs full batches). ``name`` says what the frames are
    in messages (e.g. their source URI).
    """
    from engines.transform import prepare_image

    batch: list[torch.Tensor] = []
    used = 0
    for frame in frames:
        if used >= max_frames:
            break
        image = prepare_image(frame, spec, "cpu")
        if size is None:
            size = (
                _ceil_to(int(image.shape[1]), spec.size_divisible),
                _ceil_to(int(image.shape[2]), spec.size_divisible),
            )
        padded = image.new_zeros((3, *size))
        h, w = min(size[0], image.shape[1]), min(size[1], image.shape[2])
        padded[:, :h, :w] = image[:, :h, :w]
        batch.append(padded)
        used += 1
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if used == 0:
        raise ModelError(f"calibration {name} produced no frames")


def _make_calibrator(
    trt: Any, batches: Iterator[torch.Tensor], batch_size: int, cache_file: Path,
    device: torch.device,
) -> Any:  # fmt: skip
    """An ``IInt8EntropyCalibrator2`` over ``batches`` (copied to ``device`` one at a time)."""
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise ModelError(
            f"TensorRT {trt.__version__} has no implicit INT8 calibration "
            "(IInt8EntropyCalibrator2); use --precision fp16, or a quantized (Q/DQ) ONNX model"
        )

    class _Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self._batches = batches
            self._current: torch.Tensor | None = None
            self.count = 0

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                host = next(self._batches)
            except StopIteration:
                return None
            self._current = host.to(device).contiguous()
            if device.type == "cuda":  # the copy must land before TensorRT reads it
                torch.cuda.current_stream(device).synchronize()
            self.count += 1
            return [int(self._current.data_ptr())] * len(names)

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(cache_file, bytes(cache))

    return _Calibrator()


# --------------------------------------------------------------------------- build


@dataclass
class BuiltEngine:
    """A serialized engine and where it lives."""

    graph: str
    path: Path
    data: bytes
    built: bool
    precision: str
    profiles: list[ProfileShapes]


def _network_flags(trt: Any) -> int:
    major = int(str(trt.__version__).split(".")[0])
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if major < 10 and flag is not None:
        return 1 << int(flag)
    return 0


def _build_serialized(
    trt: Any,
    onnx_path: Path,
    profiles: list[ProfileShapes],
    precision: str,
    settings: BuildSettings,
    timing_cache: Path,
    calibrator_factory: Callable[[], Any] | None,
) -> bytes:
    """Parse ``onnx_path`` and build one serialized engine (TensorRT Python API)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(f"TensorRT cannot parse {onnx_path.name}: {'; '.join(errors[:3])}")
    config = builder.create_builder_config()
    if settings.workspace_gb:
        config.set_memory_pool_limit(
            trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gb * (1 << 30))
        )
    for shapes in profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, tuple(lo), tuple(opt), tuple(hi))
        config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if calibrator_factory is None:
            raise ModelError("int8 build without a calibrator")
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator, calib_shapes = calibrator_factory()
        config.int8_calibrator = calibrator
        calib_profile = builder.create_optimization_profile()
        for name, shape in calib_shapes.items():
            calib_profile.set_shape(name, shape, shape, shape)
        config.set_calibration_profile(calib_profile)
    blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, ignore_mismatch=True)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(
            f"TensorRT failed to build an engine from {onnx_path.name} (see its log above)"
        )
    atomic_write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


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
        spec = _spec_from_manifest(manifest)

    out: dict[str, BuiltEngine] = {}
    with _device_scope(dev):
        for graph, info in manifest["graphs"].items():
            precision = _graph_precision(graph, settings.precision)
            profiles = graph_profiles(manifest, graph, settings)
            extra = dict(settings.extra)
            if settings.workspace_gb:
                extra["workspace_gb"] = settings.workspace_gb
            calibrator_factory = None
            if precision == "int8":
                calib_id = f"{settings.calibration}|{settings.calibration_frames}|{settings.calibration_batch}"
                extra["calibration"] = calib_id
                calib_file = cache.directory / (
                    f"calib-{info['sha256'][:16]}-"
                    f"{hashlib.sha256(calib_id.encode()).hexdigest()[:12]}.cache"
                )
                calibrator_factory = _calibrator_factory(
                    trt, settings, spec, info["inputs"][0]["name"], calib_file, dev
                )
            key = EngineKey(
                onnx_sha256=str(info["sha256"]),
                tensorrt_version=str(trt.__version__),
                gpu_name=gpu_name,
                compute_capability=capability,
                precision=precision,
                profiles=tuple(profiles),
                extra=extra,
            )
            onnx_path = directory / info["file"]
            started = time.perf_counter()

            def build(
                onnx_path: Path = onnx_path, profiles: list = profiles, precision: str = precision,
                factory: Any = calibrator_factory, graph: str = graph,
            ) -> bytes:  # fmt: skip
                say(
                    f"build: {graph} engine ({precision}, TensorRT {trt.__version__}, {gpu_name}) ..."
                )
                return _build_serialized(
                    trt, onnx_path, profiles, precision, settings, timing_cache, factory
                )

            data, path, built = cache.get_or_build(graph, key, build, rebuild=rebuild)
            if built:
                say(
                    f"build: {graph} engine done in {time.perf_counter() - started:.1f} s -> {path}"
                )
            else:
                say(f"build: {graph} engine from cache {path}")
            out[graph] = BuiltEngine(graph, path, data, built, precision, profiles)
    return out


def _device_scope(device: torch.device) -> Any:
    """Make ``device`` current for the build (TensorRT builds on the current CUDA device)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.device(device)


def _calibrator_factory(
    trt: Any, settings: BuildSettings, spec: Any, input_name: str, cache_file: Path,
    device: torch.device,
) -> Callable[[], tuple[Any, dict[str, tuple[int, ...]]]]:  # fmt: skip
    def factory() -> tuple[Any, dict[str, tuple[int, ...]]]:
        assert settings.calibration is not None
        if settings.calibration_images is None:
            raise ModelError(
                f"int8 calibration {settings.calibration}: no frames given "
                "(BuildSettings.calibration_images)"
            )
        batches = calibration_batches(
            settings.calibration_images(), spec, settings.calibration_batch,
            settings.calibration_frames, name=settings.calibration,
        )  # fmt: skip
        first = next(batches, None)
        if first is None:
            raise ModelError(
                f"calibration source {settings.calibration} gave fewer than "
                f"{settings.calibration_batch} frames (one full batch is needed)"
            )

        def chained() -> Iterator[torch.Tensor]:
            yield first
            yield from batches

        calibrator = _make_calibrator(
            trt, chained(), settings.calibration_batch, cache_file, device
        )
        return calibrator, {input_name: tuple(int(d) for d in first.shape)}

    return factory


def _spec_from_manifest(manifest: dict[str, Any]) -> Any:
    from engines.backends.base import ModelSpec

    inp = manifest["input"]
    return ModelSpec(
        name=manifest["model"],
        task=manifest["task"],
        class_names=tuple(manifest["class_names"]),
        model_id=manifest.get("model_id", manifest["model"]),
        untrained=bool((manifest.get("weights") or {}).get("untrained", False)),
        min_size=int(inp["min_size"]),
        max_size=int(inp["max_size"]),
        image_mean=tuple(inp["image_mean"]),  # type: ignore[arg-type]
        image_std=tuple(inp["image_std"]),  # type: ignore[arg-type]
        size_divisible=int(inp.get("size_divisible", 32)),
    )
