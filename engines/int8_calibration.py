"""INT8 calibration for TensorRT builds: real frames in, an ``IInt8EntropyCalibrator2`` out.

Frames go through the same ``engines.transform.prepare_image`` as at run time, so the
calibrated ranges are those of the inputs the engine will see. Frames are read only when
an engine is actually built (a cached engine needs none), hence the factory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.build_plan import BuildSettings, ceil_to
from engines.engine_cache import atomic_write_bytes
from engines.errors import ModelError

__all__ = ["CalibratorFactory", "calibration_batches", "calibration_plan"]

#: Makes the calibrator and the one input shape of its calibration profile.
CalibratorFactory = Callable[[], tuple[Any, dict[str, tuple[int, ...]]]]


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
                ceil_to(int(image.shape[1]), spec.size_divisible),
                ceil_to(int(image.shape[2]), spec.size_divisible),
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


def calibration_plan(
    trt: Any, settings: BuildSettings, spec: Any, graph_info: dict[str, Any],
    cache_directory: Path, device: torch.device,
) -> tuple[str, CalibratorFactory]:  # fmt: skip
    """(engine cache key entry, calibrator factory) of an int8 build of one export graph.

    The key entry names the frames, their count and batch size, so other frames make
    another engine; the calibration cache file is keyed by the graph's and the frames' hash.
    """
    calib_id = f"{settings.calibration}|{settings.calibration_frames}|{settings.calibration_batch}"
    calib_file = cache_directory / (
        f"calib-{graph_info['sha256'][:16]}-"
        f"{hashlib.sha256(calib_id.encode()).hexdigest()[:12]}.cache"
    )
    factory = _calibrator_factory(
        trt, settings, spec, graph_info["inputs"][0]["name"], calib_file, device
    )
    return calib_id, factory


def _calibrator_factory(
    trt: Any, settings: BuildSettings, spec: Any, input_name: str, cache_file: Path,
    device: torch.device,
) -> CalibratorFactory:  # fmt: skip
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
