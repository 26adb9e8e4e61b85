"""OpenVINO backend: the model split (``engines.split``) with OpenVINO compiled models as runners.

The graphs are the same cached ONNX export the ONNX Runtime backend runs
(``engines.export.ensure_export``); ``graph_runner.ExportedGraphBackend`` supplies the
eager glue between them, so only :class:`OvGraph` (one compiled graph as a callable on
torch tensors) is OpenVINO's. Batch, height, width and the RoI counts stay dynamic.

Devices: ``cpu`` (OpenVINO's CPU plugin) and ``gpu`` / ``gpu.N`` (an *Intel* GPU through
OpenVINO's GPU plugin; the glue and the outputs stay on the host). CUDA devices are not
OpenVINO's: ``ModelError``.

Precision ``fp32`` compiles the ONNX graphs as they are (inference precision pinned to
f32: on CPUs with AVX512-BF16 / AMX the plugin would otherwise run bf16). ``int8``
quantises every graph with NNCF post-training quantisation (``engines.backends.
openvino_int8``), calibrated on real frames given as ``calibration`` (an iterable of
H x W x 3 uint8 RGB frames; engines never open sources, the caller does), and caches the
result on disk (see that module), so the second open only reads the IR.

Calibration seeds: the synthetic scenes 3000..3999 (``CALIBRATION_SEEDS``) are reserved for
calibration; they are neither training scenes (1000..1999) nor evaluation scenes (seed 7,
the demo scene, and the small seeds tests use). ``DEFAULT_CALIBRATION_SOURCE`` is the
source URI callers open by default. Both live in ``engines.backends.options`` (TensorRT's
int8 shares them) and are re-exported here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engines.backends.graph_runner import ExportedGraphBackend
from engines.backends.options import (
    CALIBRATION_SEEDS,
    DEFAULT_CALIBRATION_FRAMES,
    DEFAULT_CALIBRATION_SOURCE,
    ModelOptions,
)
from engines.errors import ModelError
from engines.export import DEFAULT_OPSET
from engines.weights import LoadedWeights

__all__ = [
    "CALIBRATION_SEEDS",
    "DEFAULT_CALIBRATION_SOURCE",
    "OpenVINOBackend",
    "OvGraph",
    "openvino_available",
    "openvino_device",
]

log = logging.getLogger(__name__)

#: Why LATENCY: the infer stage runs one batch at a time (one synchronous request per graph).
#: THROUGHPUT splits the cores into several streams that only pay off with parallel requests;
#: with one request it gives that request a fraction of the cores. Measured on 2 cores (AVX2,
#: maskrcnn_demo, 640x480, fp32): LATENCY / THROUGHPUT 2.9 / 1.8 fps at batch 1, 3.6 / 3.6 at
#: batch 4, 3.5 / 3.2 at batch 8.
PERFORMANCE_HINT = "LATENCY"

_PRECISIONS = ("fp32", "int8")


def openvino_device(device: str | torch.device) -> str:
    """OpenVINO's name for ``device``: ``cpu`` -> ``CPU``, ``gpu`` / ``gpu.N`` -> ``GPU[.N]``.

    Raises ``ModelError`` for CUDA devices (OpenVINO runs on Intel CPUs and GPUs) and for
    anything else it does not know.
    """
    text = str(device).strip().lower()
    if text.startswith("cuda"):
        raise ModelError(
            f"the openvino backend cannot run on {device}: OpenVINO targets CPUs and Intel "
            "GPUs, not CUDA devices (use --backend tensorrt or onnxruntime for CUDA, or "
            "--device cpu)"
        )
    if text == "cpu":
        return "CPU"
    if text == "gpu" or (text.startswith("gpu.") and text[4:].isdigit()):
        return text.upper()
    raise ModelError(f"unknown device '{device}' for openvino (use cpu, gpu or gpu.N)")


def openvino_available(device: torch.device | str = "cpu") -> bool:
    """True if ``openvino`` is installed and can run on ``device`` here."""
    if importlib.util.find_spec("openvino") is None:
        return False
    try:
        target = openvino_device(device)
    except ModelError:
        return False
    if target == "CPU":
        return True
    import openvino as ov

    return _has_device(ov.Core().available_devices, target)


def _has_device(available: list[str], target: str) -> bool:
    """``GPU`` is there when any ``GPU.N`` is (OpenVINO lists them numbered)."""
    return target in available or (target == "GPU" and any(d.startswith("GPU") for d in available))


def _require_openvino() -> Any:
    try:
        import openvino as ov
    except ImportError as exc:
        raise ModelError(
            "openvino is not installed (pip install 'segstream[openvino]', or "
            "pip install openvino nncf)"
        ) from exc
    return ov


class OvGraph:
    """One compiled OpenVINO graph as a callable on CPU torch tensors: ``graph(x) -> [outputs]``.

    One infer request, reused (the backend runs one batch at a time). The input is shared
    with OpenVINO without a copy; outputs are copied out (the request reuses its buffers).
    """

    def __init__(self, compiled: Any, name: str) -> None:
        self.name = name
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.outputs = list(compiled.outputs)
        self.input_dtype = np.dtype(compiled.input(0).get_element_type().to_dtype())

    def __call__(self, x: Tensor) -> list[Tensor]:
        """Run the graph on ``x``; outputs are new CPU tensors."""
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=self.input_dtype)
        result = self.request.infer({0: arr}, share_inputs=True, share_outputs=False)
        return [torch.from_numpy(np.asarray(result[o])) for o in self.outputs]


class OpenVINOBackend(ExportedGraphBackend):
    """OpenVINO inference of one registry model through the shared model split.

    Options: the shared ``ModelOptions`` (given flat; ``threads`` is the CPU plugin's
    ``INFERENCE_NUM_THREADS``), ``onnx_dir`` / ``opset`` / ``argmax`` as for
    ``OnnxRuntimeBackend``, plus ``precision`` (``fp32`` / ``int8``), for int8
    ``calibration`` (H x W x 3 uint8 RGB frames), ``calibration_source`` (what they are,
    e.g. their URI: names them in the quantised-model cache key, so a cached model is reused
    without reading a frame; without it the frames' bytes are hashed),
    ``calibration_frames`` (at most this many are used), ``cache_dir`` (quantised models;
    default ``<cache root>/openvino/<model>-<tag>``) and ``rebuild`` (quantise again).
    """

    name = "openvino"

    # Long on purpose: the backend's keyword-only options are its public signature (option discovery reads it); the body is short.
    def __init__(
        self,
        model: str,
        weights: str | LoadedWeights | None = "default",
        device: str | torch.device = "cpu",
        *,
        model_options: ModelOptions | None = None,
        onnx_dir: str | os.PathLike[str] | None = None,
        opset: int = DEFAULT_OPSET,
        argmax: bool = True,
        precision: str = "fp32",
        calibration: Iterable[np.ndarray] | None = None,
        calibration_source: str | None = None,
        calibration_frames: int = DEFAULT_CALIBRATION_FRAMES,
        cache_dir: str | os.PathLike[str] | None = None,
        rebuild: bool = False,
        **options: Any,
    ) -> None:
        opts = ModelOptions.take(self.name, type(self), model_options, options)
        target = openvino_device(device)  # first: a CUDA device fails before any import
        ov = _require_openvino()
        precision = str(precision).lower()
        if precision not in _PRECISIONS:
            raise ModelError(f"unknown precision '{precision}' for openvino (fp32 or int8)")
        if precision == "int8" and importlib.util.find_spec("nncf") is None:
            raise ModelError(
                "openvino int8 needs NNCF for post-training quantisation (pip install nncf, "
                "or 'segstream[openvino]'); fp32 works without it"
            )
        self.device = torch.device("cpu")  # the glue and the outputs stay on the host
        self.ov_device = target
        self.precision = precision
        core = ov.Core()
        if target != "CPU" and not _has_device(core.available_devices, target):
            raise ModelError(
                f"OpenVINO has no {target} device here (available: "
                f"{', '.join(core.available_devices)}); an Intel GPU needs its OpenCL driver"
            )
        net = self._load_export(model, weights, opts, onnx_dir=onnx_dir, opset=opset, argmax=argmax)
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": PERFORMANCE_HINT,
            # fp32 means fp32: bf16-capable CPUs (and GPUs, f16) would otherwise lower it
            "INFERENCE_PRECISION_HINT": "f32",
        }
        if opts.threads and target == "CPU":
            config["INFERENCE_NUM_THREADS"] = opts.threads
        self.compile_config = config

        def compile_graph(ov_model: Any, key: str) -> OvGraph:
            try:
                return OvGraph(core.compile_model(ov_model, target, config), key)
            except RuntimeError as exc:
                raise ModelError(f"OpenVINO cannot compile {key} for {target}: {exc}") from exc

        models: dict[str, Any] = {}
        for key, info in self.manifest["graphs"].items():
            try:
                models[key] = core.read_model(str(self.export_dir / info["file"]))
            except RuntimeError as exc:
                raise ModelError(f"OpenVINO cannot read {info['file']}: {exc}") from exc
        self.quantized_dir = None
        if precision == "int8":
            from engines.backends.openvino_int8 import quantized_models

            say = print if opts.progress else None
            models, self.quantized_dir = quantized_models(
                self, net, models, compile_graph, calibration=calibration,
                calibration_source=calibration_source, calibration_frames=calibration_frames,
                cache_dir=cache_dir, rebuild=rebuild, say=say,
            )  # fmt: skip
        graphs = models
        self._assemble(net, lambda key: compile_graph(graphs[key], key))
        log.info(
            "openvino %s: %s on %s, hint %s (%s)", ov.__version__, precision, target,
            PERFORMANCE_HINT, self.quantized_dir or self.export_dir,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"OpenVINOBackend({self.spec.model_id}, {self.precision}, device={self.ov_device})"
