"""The TensorRT side of an engine build: the environment checks and one builder call.

Everything that touches the ``tensorrt`` module or the GPU for a build is here, against the
one version-dependent API (8.6 .. 10.x); ``engines.build`` plans and caches around it.
``require_tensorrt`` / ``require_cuda`` are also what the TensorRT backend and the build
command line call first, so a missing library or GPU fails with the same one-line message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from engines.build_plan import BuildSettings
from engines.engine_cache import ProfileShapes, atomic_write_bytes
from engines.errors import ModelError

__all__ = [
    "MIN_TENSORRT",
    "TENSORRT_MISSING",
    "build_serialized",
    "gpu_identity",
    "require_cuda",
    "require_tensorrt",
]

TENSORRT_MISSING = (
    "TensorRT is not installed (pip install tensorrt on a machine with NVIDIA drivers); "
    "use --backend onnxruntime or pytorch, or --backend auto to take the best available"
)
MIN_TENSORRT = (8, 6)


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


def _network_flags(trt: Any) -> int:
    """``EXPLICIT_BATCH`` where it is still a flag (8.x); TensorRT 10 networks always are."""
    major = int(str(trt.__version__).split(".")[0])
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if major < 10 and flag is not None:
        return 1 << int(flag)
    return 0


def build_serialized(
    trt: Any,
    onnx_path: Path,
    profiles: list[ProfileShapes],
    precision: str,
    settings: BuildSettings,
    timing_cache: Path,
    calibrator_factory: Callable[[], Any] | None,
) -> bytes:
    """Parse ``onnx_path`` and build one serialized engine (TensorRT Python API).

    ``timing_cache`` is read if present and written back after the build, so later builds
    on the same TensorRT and GPU reuse the kernel timings. Raises ``ModelError`` when the
    ONNX file cannot be parsed or the build fails.
    """
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
