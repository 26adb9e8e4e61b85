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
the same device, exactly as for the other backends.

Without TensorRT: ``ModelError("TensorRT is not installed (pip install tensorrt on a
machine with NVIDIA drivers)...")``; without a CUDA GPU: a ``ModelError`` saying so.
``create_backend(..., backend="auto")`` then falls back to ONNX Runtime, then PyTorch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engines.backends.base import Backend, ModelSpec
from engines.backends.onnxruntime_backend import _resolve_export
from engines.backends.torch_backend import build_spec
from engines.build import BuildSettings, build_engines, require_cuda, require_tensorrt
from engines.errors import ModelError
from engines.export import DEFAULT_OPSET
from engines.outputs import InstanceOutput, SemanticOutput
from engines.registry import get_model_entry
from engines.split import SplitMaskRCNN, SplitSemantic, configure_detection
from engines.weights import DEFAULT_SEED, LoadedWeights

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


class TensorRTBackend(Backend):
    """TensorRT inference of one registry model through the shared model split.

    Options as ``TorchBackend`` (``num_classes``, ``seed``, ``min_size``, ``max_size``, the
    Mask R-CNN thresholds) plus: ``precision`` (fp32 / fp16 / int8), ``calibration`` (int8:
    real H x W x 3 uint8 RGB frames; the caller opens their source, as for OpenVINO),
    ``calibration_source`` (what they are, e.g. their URI: part of the engine cache key;
    without it the frames' bytes are hashed), ``max_batch`` / ``batch_profiles`` (profiles),
    ``max_hw`` (largest padded input, N or HxW), ``onnx_dir`` (use this export), ``cache_dir``
    (engine cache), ``opset``, ``rebuild`` and ``progress`` (print build progress lines).
    """

    name = "tensorrt"

    def __init__(
        self,
        model: str,
        weights: str | LoadedWeights | None = "default",
        device: str | torch.device = "cuda",
        *,
        num_classes: int | None = None,
        seed: int | None = DEFAULT_SEED,
        min_size: int | None = None,
        max_size: int | None = None,
        box_score_thresh: float | None = None,
        box_nms_thresh: float | None = None,
        box_detections_per_img: int | None = None,
        rpn_pre_nms_top_n_test: int | None = None,
        rpn_post_nms_top_n_test: int | None = None,
        precision: str = "fp16",
        calibration: Iterable[np.ndarray] | None = None,
        calibration_source: str | None = None,
        max_batch: int = 8,
        batch_profiles: Sequence[int] = (),
        max_hw: str | int | Sequence[int] | None = None,
        onnx_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        opset: int = DEFAULT_OPSET,
        rebuild: bool = False,
        progress: bool = False,
        threads: int | None = None,
    ) -> None:
        trt = require_tensorrt()  # first: the clearest message where nothing is installed
        if threads:  # host threads of the eager steps between the engines
            torch.set_num_threads(int(threads))
        self.device: torch.device = require_cuda(device)
        entry = get_model_entry(model)
        major = int(str(trt.__version__).split(".")[0])
        argmax = major >= 10  # uint8 network outputs need TensorRT 10
        net, loaded, export_dir, manifest = _resolve_export(
            entry.name, weights, num_classes, seed, onnx_dir, opset, argmax, progress
        )
        if onnx_dir is not None:
            min_size = min_size if min_size is not None else manifest["input"].get("min_size")
            max_size = max_size if max_size is not None else manifest["input"].get("max_size")
        self.weights: LoadedWeights = dataclasses.replace(loaded, state_dict=None)
        self.spec: ModelSpec = build_spec(
            entry, self.weights, net, min_size=min_size, max_size=max_size
        )
        self.export_dir: Path = export_dir
        self.options: dict[str, Any] = {}
        if entry.task == "instance":
            self.options = configure_detection(
                net,
                box_score_thresh=box_score_thresh,
                box_nms_thresh=box_nms_thresh,
                box_detections_per_img=box_detections_per_img,
                rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
                rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
            )
        from engines.build import parse_hw

        calibration_name = calibration_source
        if calibration is not None and calibration_name is None:
            # unnamed frames: their bytes name them (the name keys the engine cache)
            calibration = list(itertools.islice(calibration, BuildSettings.calibration_frames))
            digest = hashlib.sha256()
            for frame in calibration:
                digest.update(repr(frame.shape).encode())
                digest.update(np.ascontiguousarray(frame).tobytes())
            calibration_name = f"sha256:{digest.hexdigest()}"
        manifest_for_sizes = {**manifest, "input": {**manifest["input"],
                              "min_size": self.spec.min_size, "max_size": self.spec.max_size}}  # fmt: skip
        settings = BuildSettings(
            precision=precision,
            max_batch=int(max_batch),
            batch_profiles=tuple(int(b) for b in batch_profiles),
            max_hw=parse_hw(max_hw) if max_hw is not None else None,
            max_rois=int(max_batch) * int(self.options.get("rpn_post_nms_top_n_test", 1000)),
            max_masks=int(max_batch) * int(self.options.get("box_detections_per_img", 100)),
            calibration=calibration_name,
            calibration_images=(lambda: calibration) if calibration is not None else None,
        )
        say: Callable[[str], None] | None = print if progress else None
        engines = build_engines(
            export_dir, settings, device=self.device, rebuild=rebuild, spec=self.spec,
            progress=say, cache_dir=cache_dir, manifest=manifest_for_sizes,
        )  # fmt: skip
        self.engine_paths = {k: e.path for k, e in engines.items()}
        self.graphs = {k: TrtGraph(trt, e.data, self.device, k) for k, e in engines.items()}
        if entry.task == "instance":
            split = SplitMaskRCNN(
                net.to(self.device).eval(),
                dense=self.graphs["dense"],
                box=self.graphs["box_head"],
                mask=self.graphs["mask_head"],
                feature_names=manifest.get("feature_names") or None,
            )
            split.drop_dense_weights()
            self._run: Callable[..., Any] = split
        else:
            self._run = SplitSemantic(self.graphs["semantic"], argmax=bool(manifest["argmax"]))
        log.info(
            "tensorrt %s: %s engines (%s) on %s", trt.__version__, precision,
            ", ".join(self.graphs), torch.cuda.get_device_name(self.device),
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"TensorRTBackend({self.spec.model_id}, device={self.device})"

    def infer(
        self, batch: Tensor, image_sizes: list[tuple[int, int]]
    ) -> list[InstanceOutput] | list[SemanticOutput]:
        """Run one padded batch [B, 3, H, W]; one output per image, on ``self.device``."""
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a [B, 3, H, W] batch, got {tuple(batch.shape)}")
        if len(image_sizes) != batch.shape[0]:
            raise ValueError(f"{len(image_sizes)} image sizes for a batch of {batch.shape[0]}")
        sizes = [(int(h), int(w)) for h, w in image_sizes]
        with torch.inference_mode():
            batch = batch.to(self.device, torch.float32, non_blocking=True)
            return self._run(batch, sizes)

    def close(self) -> None:
        """Free the engines and their contexts."""
        self.graphs = {}
        self._run = _closed
        torch.cuda.empty_cache()


def _closed(*_args: Any) -> Any:
    raise RuntimeError("backend is closed")
