"""TensorRT backend: the model split (``engines.split``) with TensorRT engines as A / B / C.

The model is exported to ONNX (the same cached export the ONNX Runtime backend uses, see
``engines.export.ensure_export``), engines are built or taken from the engine cache
(``engines.build.build_engines``), deserialized, and run on torch CUDA tensors:

* one ``IExecutionContext`` per optimization profile (e.g. one per batch range); a call
  picks the first profile whose min..max range holds the input shape;
* ``set_input_shape`` for the actual shape, output buffers allocated as torch CUDA
  tensors of the shapes the context reports, every I/O bound with ``set_tensor_address``;
* ``execute_async_v3`` on the current torch CUDA stream: no host round trip, and
  ordering with the surrounding torch ops is the stream's;
* inputs larger than the biggest profile along axis 0 (batch or RoI count) run in chunks.

Between the engines the eager glue runs the anchors, NMS, RoIAlign and postprocessing on
the same device, exactly as for the other backends: ``TensorRTBackend`` is an
``ExportedGraphBackend`` (``graph_runner``) whose runner is ``TrtGraph``.

Without TensorRT: ``ModelError("TensorRT is not installed (pip install tensorrt on a
machine with NVIDIA drivers)...")``; without a CUDA GPU: a ``ModelError`` saying so.
``create_backend(..., backend="auto")`` then falls back to ONNX Runtime, then PyTorch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engines.backends.graph_runner import ExportedGraphBackend
from engines.backends.options import DEFAULT_CALIBRATION_FRAMES, ModelOptions
from engines.build import BuildSettings, build_engines, require_cuda, require_tensorrt
from engines.errors import ModelError
from engines.export import DEFAULT_OPSET
from engines.weights import LoadedWeights

__all__ = ["TensorRTBackend", "TrtGraph", "tensorrt_available"]

log = logging.getLogger(__name__)


def tensorrt_available(device: torch.device | str = "cuda") -> bool:
    """True if the ``tensorrt`` package is importable and ``device`` is a usable CUDA GPU."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return False
    if dev.type != "cuda" or not torch.cuda.is_available():
        return False
    return importlib.util.find_spec("tensorrt") is not None


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {
        "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16,
        "INT8": torch.int8, "UINT8": torch.uint8, "INT32": torch.int32,
        "INT64": torch.int64, "BOOL": torch.bool,
    }  # fmt: skip
    for name, torch_type in table.items():
        if getattr(trt.DataType, name, None) == dtype:
            return torch_type
    raise ModelError(f"unsupported TensorRT tensor type {dtype}")


class TrtGraph:
    """A deserialized TensorRT engine as a callable on torch CUDA tensors.

    ``graph(x) -> [outputs]`` for engines with one input (all graphs of the split).
    """

    def __init__(self, trt: Any, engine_bytes: bytes, device: torch.device, name: str) -> None:
        self.name = name
        self.device = device
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(device):
            self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise ModelError(
                f"TensorRT could not deserialize the {name} engine (built by another TensorRT "
                "version or for another GPU?): remove it from the engine cache and rebuild"
            )
        mode_input = trt.TensorIOMode.INPUT
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode_input]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode_input]
        if len(self.inputs) != 1:
            raise ModelError(f"{name} engine has {len(self.inputs)} inputs, expected 1")
        self.input_name = self.inputs[0]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.contexts: list[Any] = []
        self.ranges: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        stream = torch.cuda.current_stream(device).cuda_stream
        with torch.cuda.device(device):
            for index in range(self.engine.num_optimization_profiles):
                context = self.engine.create_execution_context()
                if context is None:
                    raise ModelError(
                        f"TensorRT could not create a context for {name} (GPU memory?)"
                    )
                # explicit for every context: which profile a new context gets by default
                # differs between TensorRT versions
                context.set_optimization_profile_async(index, stream)
                lo, _opt, hi = self.engine.get_tensor_profile_shape(self.input_name, index)
                self.contexts.append(context)
                self.ranges.append((tuple(int(d) for d in lo), tuple(int(d) for d in hi)))
        torch.cuda.current_stream(device).synchronize()

    @property
    def max_leading(self) -> int:
        """Largest axis-0 size (batch or RoI count) any profile accepts."""
        return max(hi[0] for _lo, hi in self.ranges)

    def _context_for(self, shape: Sequence[int]) -> Any | None:
        for context, (lo, hi) in zip(self.contexts, self.ranges, strict=True):
            if len(shape) == len(lo) and all(
                a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)
            ):
                return context
        return None

    def __call__(self, x: Tensor) -> list[Tensor]:
        """Run the engine on ``x`` (a CUDA tensor); outputs are new CUDA tensors."""
        x = x.to(self.device, self.dtypes[self.input_name]).contiguous()
        limit = self.max_leading
        if x.shape[0] > limit:  # more RoIs / images than any profile takes: run in chunks
            parts = [self._run(chunk.contiguous()) for chunk in x.split(limit)]
            return [torch.cat([p[i] for p in parts]) for i in range(len(self.outputs))]
        return self._run(x)

    def _run(self, x: Tensor) -> list[Tensor]:
        shape = tuple(int(d) for d in x.shape)
        context = self._context_for(shape)
        if context is None:
            ranges = ", ".join(f"{lo}..{hi}" for lo, hi in self.ranges)
            raise ModelError(
                f"input {list(shape)} is outside the {self.name} engine's profiles ({ranges}): "
                "rebuild the engines with a larger --max-size / --max-batch"
            )
        if not context.set_input_shape(self.input_name, shape):
            raise ModelError(f"TensorRT rejected input shape {list(shape)} for {self.name}")
        context.set_tensor_address(self.input_name, int(x.data_ptr()))
        outputs = []
        for name in self.outputs:
            out_shape = tuple(int(d) for d in context.get_tensor_shape(name))
            out = torch.empty(out_shape, dtype=self.dtypes[name], device=self.device)
            context.set_tensor_address(name, int(out.data_ptr()))
            outputs.append(out)
        stream = torch.cuda.current_stream(self.device)
        if not context.execute_async_v3(stream.cuda_stream):
            raise ModelError(f"TensorRT failed to run the {self.name} engine")
        return outputs


class TensorRTBackend(ExportedGraphBackend):
    """TensorRT inference of one registry model through the shared model split.

    Options: the shared ``ModelOptions`` (given flat; ``threads`` is torch's host threads
    for the eager glue) plus its own: ``precision`` (fp32 / fp16 / int8), ``calibration``
    (int8: real H x W x 3 uint8 RGB frames; the caller opens their source, as for
    OpenVINO), ``calibration_source`` (what they are, e.g. their URI: part of the engine
    cache key; without it the frames' bytes are hashed), ``calibration_frames`` (at most
    this many are used), ``max_batch`` / ``batch_profiles`` (profiles), ``max_hw`` (largest
    padded input, N or HxW), ``onnx_dir`` (use this export), ``cache_dir`` (engine cache),
    ``opset`` and ``rebuild``; ``progress`` prints build progress lines.
    """

    name = "tensorrt"

    # Long on purpose: the backend's keyword-only options are its public signature (option discovery reads it); the body is short.
    def __init__(
        self,
        model: str,
        weights: str | LoadedWeights | None = "default",
        device: str | torch.device = "cuda",
        *,
        model_options: ModelOptions | None = None,
        precision: str = "fp16",
        calibration: Iterable[np.ndarray] | None = None,
        calibration_source: str | None = None,
        calibration_frames: int = DEFAULT_CALIBRATION_FRAMES,
        max_batch: int = 8,
        batch_profiles: Sequence[int] = (),
        max_hw: str | int | Sequence[int] | None = None,
        onnx_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        opset: int = DEFAULT_OPSET,
        rebuild: bool = False,
        **options: Any,
    ) -> None:
        trt = require_tensorrt()  # first: the clearest message where nothing is installed
        opts = ModelOptions.take(self.name, type(self), model_options, options)
        if opts.threads:  # host threads of the eager steps between the engines
            torch.set_num_threads(opts.threads)
        self.device = require_cuda(device)
        major = int(str(trt.__version__).split(".")[0])
        argmax = major >= 10  # uint8 network outputs need TensorRT 10
        net = self._load_export(model, weights, opts, onnx_dir=onnx_dir, opset=opset, argmax=argmax)
        from engines.build import parse_hw

        calibration_name = calibration_source
        if calibration is not None and calibration_name is None:
            # unnamed frames: their bytes name them (the name keys the engine cache)
            calibration = list(itertools.islice(calibration, int(calibration_frames)))
            digest = hashlib.sha256()
            for frame in calibration:
                digest.update(repr(frame.shape).encode())
                digest.update(np.ascontiguousarray(frame).tobytes())
            calibration_name = f"sha256:{digest.hexdigest()}"
        manifest_for_sizes = {**self.manifest, "input": {**self.manifest["input"],
                              "min_size": self.spec.min_size, "max_size": self.spec.max_size}}  # fmt: skip
        settings = BuildSettings(
            precision=precision,
            max_batch=int(max_batch),
            batch_profiles=tuple(int(b) for b in batch_profiles),
            max_hw=parse_hw(max_hw) if max_hw is not None else None,
            max_rois=int(max_batch) * int(self.options.get("rpn_post_nms_top_n_test", 1000)),
            max_masks=int(max_batch) * int(self.options.get("box_detections_per_img", 100)),
            calibration=calibration_name,
            calibration_frames=int(calibration_frames),
            calibration_images=(lambda: calibration) if calibration is not None else None,
        )
        say: Callable[[str], None] | None = print if opts.progress else None
        engines = build_engines(
            self.export_dir, settings, device=self.device, rebuild=rebuild, spec=self.spec,
            progress=say, cache_dir=cache_dir, manifest=manifest_for_sizes,
        )  # fmt: skip
        self.engine_paths = {k: e.path for k, e in engines.items()}
        self._assemble(net, lambda key: TrtGraph(trt, engines[key].data, self.device, key))
        log.info(
            "tensorrt %s: %s engines (%s) on %s", trt.__version__, precision,
            ", ".join(self.graphs), torch.cuda.get_device_name(self.device),
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"TensorRTBackend({self.spec.model_id}, device={self.device})"
