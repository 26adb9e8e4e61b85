"""ONNX Runtime backend: the model split (``engines.split``) with ORT sessions as engines.

Mask R-CNN runs ``dense.onnx`` / ``box_head.onnx`` / ``mask_head.onnx`` through ONNX
Runtime and the data-dependent glue (anchors, NMS, RoIAlign, postprocess) in eager
torchvision ops, exactly as ``TorchBackend`` would; semantic models run ``semantic.onnx``
(by default with the argmax inside the graph). Outputs are the same ``InstanceOutput`` /
``SemanticOutput`` as every backend, in model-input coordinates.

Where the graphs come from:

* ``onnx_dir=DIR``: an export made by ``python -m engines.export`` (its manifest supplies
  the class names and weights identity; ``weights``, if given, must be the same weights);
* otherwise the model is exported on first use into
  ``<cache root>/onnx/<model>-<weights tag>/`` (``$SEGSTREAM_CACHE`` overrides the root) and
  reused while the weights' SHA-256, opset and argmax setting match its manifest.

Providers: on a CUDA device ``TensorrtExecutionProvider`` (when this onnxruntime has it
and ``tensorrt_ep`` is left on), then ``CUDAExecutionProvider``, with the CPU provider as
the fallback for anything they do not take; on the CPU ``CPUExecutionProvider``. One log
line names the providers in use. On CUDA, inputs and outputs are bound to torch CUDA
tensors with IO binding (no host copies); ORT runs on torch's current CUDA stream.
"""

from __future__ import annotations

import ast
import logging
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engines.backends.graph_runner import ExportedGraphBackend
from engines.backends.options import ModelOptions
from engines.backends.torch_backend import resolve_device
from engines.errors import ModelError
from engines.export import DEFAULT_OPSET
from engines.weights import LoadedWeights

__all__ = [
    "OnnxRuntimeBackend",
    "OrtGraph",
    "eval_dim",
    "onnxruntime_available",
    "select_providers",
]

log = logging.getLogger(__name__)

_NP_TO_TORCH = {
    np.dtype("float32"): torch.float32,
    np.dtype("float16"): torch.float16,
    np.dtype("int64"): torch.int64,
    np.dtype("int32"): torch.int32,
    np.dtype("uint8"): torch.uint8,
    np.dtype("int8"): torch.int8,
    np.dtype("bool"): torch.bool,
}

_OPS: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


def eval_dim(dim: int | str, env: Mapping[str, int]) -> int:
    """Value of one graph dim: an int, a symbol (``"batch"``) or an exporter expression such
    as ``"(((height - 1)//4)) + 1"``, given the symbols' values. Only integer ``+ - * // %``
    and parentheses are accepted."""
    if isinstance(dim, int):
        return dim

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return int(node.value)
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise ValueError(f"unknown symbol {node.id!r} in dim {dim!r}")
            return int(env[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise ValueError(f"unsupported dim expression {dim!r}")

    return walk(ast.parse(str(dim), mode="eval"))


def onnxruntime_available(device: torch.device | str = "cpu") -> bool:
    """True if onnxruntime imports and can run on ``device`` (CUDA needs its CUDA provider)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    dev = torch.device(device)
    if dev.type == "cuda":
        return (
            torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()
        )
    return dev.type == "cpu"


def select_providers(
    device: torch.device,
    available: Sequence[str],
    *,
    tensorrt_ep: bool = True,
    trt_cache_dir: Path | None = None,
    trt_profiles: Mapping[str, str] | None = None,
    cuda_stream: int | None = None,
) -> list[str | tuple[str, dict[str, Any]]]:
    """Execution providers for ``device``, best first, from those ``available``.

    Raises ``ModelError`` for a CUDA device when onnxruntime has no CUDA provider.
    """
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise ModelError(
            "onnxruntime here has no CUDAExecutionProvider (available: "
            f"{', '.join(available)}); install onnxruntime-gpu, or use --device cpu"
        )
    index = device.index or 0
    providers: list[str | tuple[str, dict[str, Any]]] = []
    if tensorrt_ep and "TensorrtExecutionProvider" in available:
        trt_opts: dict[str, Any] = {"device_id": index}
        if trt_cache_dir is not None:
            trt_opts.update(
                trt_engine_cache_enable=True,
                trt_engine_cache_path=str(trt_cache_dir),
                trt_timing_cache_enable=True,
                trt_timing_cache_path=str(trt_cache_dir),
            )
        if trt_profiles:
            trt_opts.update(trt_profiles)
        providers.append(("TensorrtExecutionProvider", trt_opts))
    cuda_opts: dict[str, Any] = {"device_id": index}
    if cuda_stream is not None:
        cuda_opts.update(has_user_compute_stream=True, user_compute_stream=str(cuda_stream))
    providers.append(("CUDAExecutionProvider", cuda_opts))
    providers.append("CPUExecutionProvider")
    return providers


class OrtGraph:
    """One ONNX graph as a callable on torch tensors: ``graph(x) -> [outputs]``.

    ``inputs`` / ``outputs`` are the manifest's tensor specs (names, dtypes, dims with
    symbolic expressions). On the CPU it runs ``session.run`` on numpy views; on CUDA (or
    with ``io_binding=True``) it binds ``x`` and freshly allocated torch outputs (shapes
    evaluated from the dims) with IO binding, so data never leaves the GPU.
    """

    def __init__(
        self,
        path: Path,
        device: torch.device,
        providers: Sequence[str | tuple[str, dict[str, Any]]],
        options: Any,
        inputs: Sequence[Mapping[str, Any]],
        outputs: Sequence[Mapping[str, Any]],
        cuda_stream: int | None = None,
        io_binding: bool | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = path
        self.device = device
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=list(providers)
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise ModelError(f"onnxruntime cannot load {path}: {exc}") from exc
        if len(inputs) != 1:
            raise ModelError(f"{path.name}: expected one input, the manifest lists {len(inputs)}")
        self.input_name = str(inputs[0]["name"])
        self.input_dims = list(inputs[0]["shape"])
        self.input_dtype = np.dtype(inputs[0]["dtype"])
        self.output_names = [str(o["name"]) for o in outputs]
        self.output_dims = [list(o["shape"]) for o in outputs]
        self.output_dtypes = [np.dtype(o["dtype"]) for o in outputs]
        self.cuda_stream = cuda_stream
        #: Bind torch tensors in place (default on CUDA; on the CPU plain ``run`` is used).
        self.io_binding = device.type == "cuda" if io_binding is None else bool(io_binding)
        self._shape_from_dims = True

    @property
    def providers(self) -> list[str]:
        """Providers the session actually uses."""
        return list(self.session.get_providers())

    def __call__(self, x: Tensor) -> list[Tensor]:
        """Run the graph on ``x`` (on the backend's device); outputs on the same device."""
        if x.dtype != _NP_TO_TORCH[self.input_dtype]:
            x = x.to(_NP_TO_TORCH[self.input_dtype])
        x = x.contiguous()
        if self.io_binding:
            return self._run_bound(x)
        feeds = {self.input_name: x.detach().cpu().numpy()}
        return [torch.from_numpy(np.asarray(o)) for o in self.session.run(self.output_names, feeds)]

    def output_shapes(self, input_shape: Sequence[int]) -> list[tuple[int, ...]]:
        """Output shapes for an input shape, from the graph's symbolic dims."""
        env: dict[str, int] = {}
        for dim, size in zip(self.input_dims, input_shape, strict=True):
            if isinstance(dim, str):
                env[dim] = int(size)
        return [tuple(eval_dim(d, env) for d in dims) for dims in self.output_dims]

    def _run_bound(self, x: Tensor) -> list[Tensor]:
        """IO binding: ``x`` and preallocated torch outputs are used in place."""
        kind = x.device.type
        index = x.device.index or 0
        if kind == "cuda":
            current = torch.cuda.current_stream(x.device)
            if self.cuda_stream != current.cuda_stream:
                current.synchronize()  # ORT runs on another stream: make x ready first
        binding = self.session.io_binding()
        binding.bind_input(
            self.input_name, kind, index, self.input_dtype.type, tuple(x.shape), x.data_ptr()
        )
        outputs: list[Tensor] = []
        shapes: list[tuple[int, ...]] | None = None
        if self._shape_from_dims:
            try:
                shapes = self.output_shapes(x.shape)
            except ValueError as exc:
                log.warning("%s: output shapes not computable (%s); ORT allocates", self.path, exc)
                self._shape_from_dims = False
        if shapes is not None:
            for name, dtype, shape in zip(
                self.output_names, self.output_dtypes, shapes, strict=True
            ):
                out = torch.empty(shape, dtype=_NP_TO_TORCH[dtype], device=x.device)
                binding.bind_output(name, kind, index, dtype.type, shape, out.data_ptr())
                outputs.append(out)
        else:
            for name in self.output_names:
                binding.bind_output(name, kind, index)
        binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        if shapes is None:  # rare fallback: through the host once per call
            outputs = [torch.from_numpy(v.numpy()).to(x.device) for v in binding.get_outputs()]
        return outputs


class OnnxRuntimeBackend(ExportedGraphBackend):
    """ONNX Runtime inference of one registry model through the shared model split.

    Options: the shared ``ModelOptions`` (given flat, as for every backend; ``threads`` is
    ORT's intra-op thread count, default ORT's choice) plus its own: ``onnx_dir`` (use this
    export), ``opset`` (for exports made here), ``argmax`` (semantic graphs end in the
    argmax; default True), ``tensorrt_ep`` (allow ORT's TensorRT provider on CUDA),
    ``max_batch`` (that provider's profile).
    """

    name = "onnxruntime"

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
        tensorrt_ep: bool = True,
        max_batch: int = 8,
        **options: Any,
    ) -> None:
        opts = ModelOptions.take(self.name, type(self), model_options, options)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError(
                "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu "
                "for CUDA)"
            ) from exc
        self.device = resolve_device(device)
        net = self._load_export(model, weights, opts, onnx_dir=onnx_dir, opset=opset, argmax=argmax)
        export_dir, manifest = self.export_dir, self.manifest

        stream = None
        if self.device.type == "cuda":
            stream = int(torch.cuda.current_stream(self.device).cuda_stream)
        available = ort.get_available_providers()
        sess_options = ort.SessionOptions()
        sess_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess_options.log_severity_level = 3
        if opts.threads:
            sess_options.intra_op_num_threads = opts.threads
            sess_options.inter_op_num_threads = 1
            # a budgeted process shares the machine with other stages: idle pool threads
            # must sleep, not spin (ORT spins by default, like OpenMP's active wait)
            sess_options.add_session_config_entry("session.intra_op.allow_spinning", "0")

        def graph(key: str) -> OrtGraph:
            info = manifest["graphs"][key]
            providers = select_providers(
                self.device,
                available,
                tensorrt_ep=tensorrt_ep,
                trt_cache_dir=export_dir / "ort_tensorrt",
                trt_profiles=self._trt_ep_profiles(key, max_batch),
                cuda_stream=stream,
            )
            return OrtGraph(
                export_dir / info["file"], self.device, providers, sess_options,
                info["inputs"], info["outputs"], cuda_stream=stream,
            )  # fmt: skip

        self._assemble(net, graph)
        del net
        used = self.providers
        log.info("onnxruntime %s providers: %s (%s)", ort.__version__, ", ".join(used), export_dir)

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend({self.spec.model_id}, device={self.device})"

    def _trt_ep_profiles(self, key: str, max_batch: int) -> dict[str, str] | None:
        """Shape ranges for ORT's TensorRT provider (one profile: no rebuild per new shape)."""
        if self.device.type != "cuda":
            return None
        from engines.build import BuildSettings, graph_profiles

        sized = {**self.manifest, "input": {**self.manifest["input"],
                 "min_size": self.spec.min_size, "max_size": self.spec.max_size}}  # fmt: skip
        settings = BuildSettings(
            precision="fp32",
            max_batch=max(int(max_batch), 1),
            max_rois=max_batch * int(self.options.get("rpn_post_nms_top_n_test", 1000)),
            max_masks=max_batch * int(self.options.get("box_detections_per_img", 100)),
        )
        profile = graph_profiles(sized, key, settings)[0]
        out = {}
        for i, option in enumerate(("min", "opt", "max")):
            out[f"trt_profile_{option}_shapes"] = ",".join(
                f"{name}:{'x'.join(str(d) for d in shapes[i])}" for name, shapes in profile.items()
            )
        return out

    @property
    def providers(self) -> list[str]:
        """Execution providers the sessions use, best first."""
        return self.graphs[next(iter(self.graphs))].providers
