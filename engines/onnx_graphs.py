"""ONNX export of the graphs of the model split (``engines.split``), one file each.

``split_graph_jobs`` says which graphs a model splits into (dense / box_head / mask_head
for a Mask R-CNN, semantic otherwise) with example inputs and dynamic axes;
``export_job`` exports one with ``torch.onnx.export(..., dynamo=True)``, checks it and
describes its inputs and outputs for the manifest (see ``engines.export`` for why this
exporter, and for the opset handling). ``fold_frozen_batchnorm`` prepares a torchvision
model whose frozen norms the exporter would otherwise leave as separate multiply-adds.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from engines.errors import ModelError
from engines.hashing import file_sha256
from engines.split import (
    BoxHead,
    DenseHead,
    MaskHead,
    SemanticHead,
    feature_names_of,
    is_mask_rcnn,
)

__all__ = [
    "DEFAULT_OPSET",
    "MAX_OPSET",
    "MIN_OPSET",
    "GraphJob",
    "export_job",
    "fold_frozen_batchnorm",
    "graph_files",
    "split_graph_jobs",
]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MIN_OPSET = 13
MAX_OPSET = 23
#: The opset torch's ONNX function library implements; lower ones are converted down.
_NATIVE_OPSET = 18

# Bounds torch.export reasons with (not baked into the graphs: ONNX dims stay symbolic).
_MAX_BATCH = 1024
_MAX_SIDE = 8192
_MAX_ROIS = 1 << 20
# Example inputs for tracing: small, and > 1 along every dynamic axis.
_EXAMPLE_BATCH, _EXAMPLE_H, _EXAMPLE_W = 2, 128, 160
_EXAMPLE_ROIS = 3


class GraphJob(NamedTuple):
    """One graph to export: manifest key, file, description, module and how to trace it."""

    key: str
    filename: str
    what: str
    module: nn.Module
    example: torch.Tensor
    input_name: str
    dynamic: dict[int, Any]
    output_names: list[str]


def graph_files(task: str) -> tuple[str, ...]:
    """The ONNX files an export of a model of ``task`` contains."""
    if task == "instance":
        return ("dense.onnx", "box_head.onnx", "mask_head.onnx")
    return ("semantic.onnx",)


def fold_frozen_batchnorm(model: nn.Module) -> int:
    """Fold every ``FrozenBatchNorm2d`` that directly follows a ``Conv2d`` into that conv.

    Recognised pairs: sibling attributes ``convN`` / ``bnN`` (ResNet blocks and stem) and
    consecutive entries of an ``nn.Sequential`` (``downsample``). The norm is replaced by
    ``nn.Identity``; the conv gets a bias if it had none. Works in place; returns the
    number of folded pairs. Results equal the unfolded model up to float rounding.
    """
    from torchvision.ops.misc import FrozenBatchNorm2d

    def fold(conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> None:
        scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
        shift = bn.bias - bn.running_mean * scale
        with torch.no_grad():
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            if conv.bias is None:
                conv.bias = nn.Parameter(shift.clone(), requires_grad=False)
            else:
                conv.bias.mul_(scale).add_(shift)

    count = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            children = list(module._modules.items())
            for (_, a), (bname, b) in zip(children, children[1:], strict=False):
                if isinstance(a, nn.Conv2d) and isinstance(b, FrozenBatchNorm2d):
                    fold(a, b)
                    module._modules[bname] = nn.Identity()
                    count += 1
            continue
        for name, child in list(module._modules.items()):
            if not (name.startswith("bn") and isinstance(child, FrozenBatchNorm2d)):
                continue
            conv = module._modules.get("conv" + name[2:])
            if isinstance(conv, nn.Conv2d):
                fold(conv, child)
                setattr(module, name, nn.Identity())
                count += 1
    return count


def split_graph_jobs(
    model_name: str, task: str, net: nn.Module, argmax: bool
) -> tuple[list[GraphJob], list[str]]:
    """The graphs ``net`` (a model of ``task``) is exported as, and its FPN feature names.

    ``argmax`` (semantic models) ends the graph in a uint8 class map. Raises ``ModelError``
    for an instance model that is not a Mask R-CNN (the split needs its parts).
    """
    if task != "instance":
        head = SemanticHead(net, argmax=argmax).eval()
        what = "semantic model" + (" + argmax (uint8 class map)" if argmax else " (logits)")
        return [
            GraphJob("semantic", "semantic.onnx", what, head,
                     torch.randn(_EXAMPLE_BATCH, 3, _EXAMPLE_H, _EXAMPLE_W), "images",
                     _image_dims(), ["class_map" if argmax else "logits"]),
        ], []  # fmt: skip
    if not is_mask_rcnn(net):
        raise ModelError(f"{model_name} is not a Mask R-CNN style model")
    feature_names = list(feature_names_of(net))
    dense = DenseHead(net, feature_names).eval()
    channels = int(getattr(net.backbone, "out_channels", 256))
    box_side = _pool_side(net.roi_heads.box_roi_pool, 7)
    mask_side = _pool_side(net.roi_heads.mask_roi_pool, 14)
    return [
        GraphJob("dense", "dense.onnx", "backbone + FPN + RPN head", dense,
                 torch.randn(_EXAMPLE_BATCH, 3, _EXAMPLE_H, _EXAMPLE_W), "images",
                 _image_dims(), dense.output_names()),
        GraphJob("box_head", "box_head.onnx", "box head + predictor", BoxHead(net).eval(),
                 torch.randn(_EXAMPLE_ROIS, channels, box_side, box_side), "rois",
                 _roi_dims(), ["class_logits", "box_regression"]),
        GraphJob("mask_head", "mask_head.onnx", "mask head + predictor", MaskHead(net).eval(),
                 torch.randn(_EXAMPLE_ROIS, channels, mask_side, mask_side), "rois",
                 _roi_dims(), ["mask_logits"]),
    ], feature_names  # fmt: skip


def export_job(
    job: GraphJob, directory: Path, opset: int, model_name: str, say: Callable[[str], None]
) -> dict[str, Any]:
    """Export ``job`` into ``directory`` with progress lines; returns its manifest entry.

    Any exporter failure becomes a one-line ``ModelError`` naming the model and file.
    """
    started = time.perf_counter()
    say(f"export: {job.filename} ({job.what}) ...")
    try:
        info = _export_graph(
            job.module, job.example, directory / job.filename, input_name=job.input_name,
            dynamic=job.dynamic, output_names=job.output_names, opset=opset,
        )  # fmt: skip
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - exporter failures vary widely
        raise ModelError(
            f"ONNX export of {model_name} {job.filename} failed: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ) from exc
    size_mb = (directory / job.filename).stat().st_size / 1e6
    say(
        f"export: {job.filename} done in {time.perf_counter() - started:.1f} s "
        f"({info['nodes']} nodes, {size_mb:.1f} MB)"
    )
    return info


def _export_graph(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    input_name: str,
    dynamic: dict[int, Any],
    output_names: list[str],
    opset: int,
) -> dict[str, Any]:
    """Export one module to ``path``, check it, and describe its I/O."""
    import onnx

    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            None,
            input_names=[input_name],
            output_names=output_names,
            opset_version=opset,
            dynamo=True,
            dynamic_shapes={input_name: dynamic},
            external_data=False,
            verbose=False,
        )
        if program is None:  # pragma: no cover - dynamo=True always returns a program
            raise ModelError(f"ONNX export of {path.name} returned nothing")
        program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"exported {path.name} is not valid ONNX: {exc}") from exc
    got = {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")}
    if len(got) != 1:
        raise ModelError(f"{path.name} imports several ONNX opsets: {sorted(got)}")
    actual = got.pop()
    if actual != opset:
        if not opset < actual <= _NATIVE_OPSET:
            raise ModelError(f"{path.name} was exported at opset {actual}, not {opset}")
        log.warning(
            "%s: ONNX's version converter could not lower the graph to opset %d; "
            "it stays at opset %d", path.name, opset, actual,
        )  # fmt: skip
    return {
        "file": path.name,
        "opset": actual,
        "sha256": file_sha256(path),
        "inputs": _tensor_specs(proto.graph.input),
        "outputs": _tensor_specs(proto.graph.output),
        "nodes": len(proto.graph.node),
    }


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's own chatter (its progress prints, warnings, INFO logs)."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "torch.__trace",
             "onnx_ir", "onnxscript")  # fmt: skip
    noisy = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(noisy, levels, strict=True):
            lg.setLevel(level)


def _dims(value_info: Any) -> list[int | str]:
    return [
        d.dim_param if d.dim_param else int(d.dim_value)
        for d in value_info.type.tensor_type.shape.dim
    ]


def _tensor_specs(values: Any) -> list[dict[str, Any]]:
    import onnx

    return [
        {
            "name": v.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
            "shape": _dims(v),
        }
        for v in values
    ]


def _image_dims() -> dict[int, Any]:
    d = torch.export.Dim
    return {
        0: d("batch", min=1, max=_MAX_BATCH),
        2: d("height", min=32, max=_MAX_SIDE),
        3: d("width", min=32, max=_MAX_SIDE),
    }


def _roi_dims() -> dict[int, Any]:
    return {0: torch.export.Dim("num_rois", min=1, max=_MAX_ROIS)}


def _pool_side(pool: nn.Module, default: int) -> int:
    size = getattr(pool, "output_size", default)
    return int(size[0] if isinstance(size, (tuple, list)) else size)
