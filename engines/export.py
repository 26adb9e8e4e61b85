"""ONNX export of the model split (see ``engines.split``), plus a manifest.

``python -m engines.export --model NAME --weights W --out DIR [--opset 17] [--argmax]``
writes, for a Mask R-CNN::

    dense.onnx      images [batch, 3, height, width] -> FPN maps, RPN objectness, RPN deltas
    box_head.onnx   rois [num_rois, C, 7, 7] -> class_logits, box_regression
    mask_head.onnx  rois [num_rois, C, 14, 14] -> mask_logits [num_rois, N, 28, 28]
    manifest.json

and for a semantic model ``semantic.onnx`` (images -> logits, or with ``--argmax`` a uint8
class map [batch, height, width]) plus ``manifest.json``. Batch, height, width and the RoI
counts are dynamic axes (symbolic dims in the graphs).

Exporter: ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export`` based exporter,
the default since torch 2.9). With ``dynamic_shapes`` it produces graphs of only the
model's real operators (Conv, Relu, Add, Resize, Gemm, ... plus a few Shape / Div /
Reshape nodes for the FPN's upsample sizes), readable symbolic output dims such as
``((height - 1)//4) + 1``, and folds BatchNorm into the convolutions. The TorchScript
exporter (``dynamo=False``) is deprecated in torch 2.14 and leaves Identity / Constant /
Gather / Cast chains around every shape computation, with output dims named after
internal nodes. torchvision's ``FrozenBatchNorm2d`` (the R50 Mask R-CNN) is a Python
multiply-add the exporter does not fold, so it is folded into the preceding convolution
here before export (:func:`fold_frozen_batchnorm`). torch's ONNX library implements
opset 18 and up; a lower ``--opset`` (17, the default, which TensorRT 8.6 still reads)
is reached with ONNX's version converter and checked afterwards; a graph the converter
cannot lower (e.g. LR-ASPP's) stays at opset 18, with a warning, and the manifest records
both the requested and the actual opset (TensorRT 10 reads opsets 9..24).

The manifest records the model, its weights (tag, source and a SHA-256 of the state
dict, which the ONNX Runtime backend's cache compares), opset, library versions, every
graph's inputs and outputs with their dims, class names, input size / mean / std and the
task. ``load_manifest`` reads and checks one.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines.errors import ModelError
from engines.registry import get_model_entry
from engines.split import (
    BoxHead,
    DenseHead,
    MaskHead,
    SemanticHead,
    feature_names_of,
    is_mask_rcnn,
)
from engines.weights import DEFAULT_SEED, LoadedWeights, build_model, resolve_weights

__all__ = [
    "DEFAULT_OPSET",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "ensure_export",
    "export_loaded",
    "export_model",
    "file_sha256",
    "fold_frozen_batchnorm",
    "graph_files",
    "load_manifest",
    "main",
    "state_dict_sha256",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "segstream-onnx-export"
MANIFEST_VERSION = 1
DEFAULT_OPSET = 17
MIN_OPSET = 13
#: The opset torch's ONNX function library implements; lower ones are converted down.
_NATIVE_OPSET = 18

# Bounds torch.export reasons with (not baked into the graphs: ONNX dims stay symbolic).
_MAX_BATCH = 1024
_MAX_SIDE = 8192
_MAX_ROIS = 1 << 20
# Example inputs for tracing: small, and > 1 along every dynamic axis.
_EXAMPLE_BATCH, _EXAMPLE_H, _EXAMPLE_W = 2, 128, 160
_EXAMPLE_ROIS = 3

ProgressFn = Callable[[str], None]


# --------------------------------------------------------------------------- helpers


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(model: nn.Module) -> str:
    """Hex SHA-256 over a model's state dict (names, dtypes, shapes, bytes), in key order.

    Identifies the exact weights an export was made from, whatever their source
    (checkpoint, torchvision, seeded random init).
    """
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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


def _image_dims() -> dict[int, Any]:
    d = torch.export.Dim
    return {
        0: d("batch", min=1, max=_MAX_BATCH),
        2: d("height", min=32, max=_MAX_SIDE),
        3: d("width", min=32, max=_MAX_SIDE),
    }


def _roi_dims() -> dict[int, Any]:
    return {0: torch.export.Dim("num_rois", min=1, max=_MAX_ROIS)}


# --------------------------------------------------------------------------- export


def graph_files(task: str) -> tuple[str, ...]:
    """The ONNX files an export of a model of ``task`` contains."""
    if task == "instance":
        return ("dense.onnx", "box_head.onnx", "mask_head.onnx")
    return ("semantic.onnx",)


def export_loaded(
    loaded: LoadedWeights,
    out_dir: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    opset: int = DEFAULT_OPSET,
    argmax: bool = False,
    min_size: int | None = None,
    max_size: int | None = None,
    progress: ProgressFn | None = None,
    weights_sha256: str | None = None,
) -> dict[str, Any]:
    """Export resolved weights ``loaded`` into ``out_dir`` (replaced as a whole, atomically).

    ``model`` may be the already built module (it is not modified: a copy is exported);
    ``weights_sha256`` its ``state_dict_sha256`` if already known.
    ``argmax`` (semantic models only) ends the graph in a uint8 argmax. ``progress``
    receives one line per graph. Returns the manifest (also written to ``manifest.json``).
    """
    from engines.backends.torch_backend import build_spec

    if not MIN_OPSET <= int(opset) <= 23:
        raise ModelError(f"unsupported ONNX opset {opset} (use {MIN_OPSET}..23; default 17)")
    entry = get_model_entry(loaded.model_name)
    say: ProgressFn = progress or (lambda _msg: None)
    source_model = model if model is not None else build_model(loaded)
    weights_sha = weights_sha256 or state_dict_sha256(source_model)
    net = copy.deepcopy(source_model).cpu().eval()
    spec = build_spec(entry, loaded, net, min_size=min_size, max_size=max_size)
    folded = fold_frozen_batchnorm(net)
    if folded:
        log.debug("folded %d FrozenBatchNorm2d layers into convolutions", folded)

    out = Path(out_dir).expanduser()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the export is an ordinary directory
    except OSError as exc:
        raise ModelError(f"cannot write the ONNX export to {out}: {exc}") from exc
    graphs: dict[str, dict[str, Any]] = {}
    feature_names: list[str] = []
    try:
        if entry.task == "instance":
            if not is_mask_rcnn(net):
                raise ModelError(f"{entry.name} is not a Mask R-CNN style model")
            feature_names = list(feature_names_of(net))
            dense = DenseHead(net, feature_names).eval()
            channels = int(getattr(net.backbone, "out_channels", 256))
            box_side = _pool_side(net.roi_heads.box_roi_pool, 7)
            mask_side = _pool_side(net.roi_heads.mask_roi_pool, 14)
            jobs = [
                ("dense", "dense.onnx", "backbone + FPN + RPN head", dense,
                 torch.randn(_EXAMPLE_BATCH, 3, _EXAMPLE_H, _EXAMPLE_W), "images",
                 _image_dims(), dense.output_names()),
                ("box_head", "box_head.onnx", "box head + predictor", BoxHead(net).eval(),
                 torch.randn(_EXAMPLE_ROIS, channels, box_side, box_side), "rois",
                 _roi_dims(), ["class_logits", "box_regression"]),
                ("mask_head", "mask_head.onnx", "mask head + predictor", MaskHead(net).eval(),
                 torch.randn(_EXAMPLE_ROIS, channels, mask_side, mask_side), "rois",
                 _roi_dims(), ["mask_logits"]),
            ]  # fmt: skip
        else:
            head = SemanticHead(net, argmax=argmax).eval()
            what = "semantic model" + (" + argmax (uint8 class map)" if argmax else " (logits)")
            jobs = [
                ("semantic", "semantic.onnx", what, head,
                 torch.randn(_EXAMPLE_BATCH, 3, _EXAMPLE_H, _EXAMPLE_W), "images",
                 _image_dims(), ["class_map" if argmax else "logits"]),
            ]  # fmt: skip
        for key, filename, what, module, example, in_name, dyn, out_names in jobs:
            started = time.perf_counter()
            say(f"export: {filename} ({what}) ...")
            try:
                info = _export_graph(
                    module, example, tmp / filename, input_name=in_name, dynamic=dyn,
                    output_names=out_names, opset=int(opset),
                )  # fmt: skip
            except ModelError:
                raise
            except Exception as exc:  # noqa: BLE001 - exporter failures vary widely
                raise ModelError(
                    f"ONNX export of {entry.name} {filename} failed: {type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                ) from exc
            graphs[key] = info
            size_mb = (tmp / filename).stat().st_size / 1e6
            say(
                f"export: {filename} done in {time.perf_counter() - started:.1f} s "
                f"({info['nodes']} nodes, {size_mb:.1f} MB)"
            )

        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "model": entry.name,
            "task": entry.task,
            "model_id": loaded.model_id,
            "weights": {
                "tag": loaded.tag,
                "source": loaded.source,
                "sha256": weights_sha,
                "untrained": loaded.untrained,
                "seed": loaded.seed,
                "meta": {k: v for k, v in loaded.meta.items() if _jsonable(v)},
            },
            "num_classes": loaded.num_classes,
            "class_names": list(loaded.class_names),
            "argmax": bool(argmax) if entry.task == "semantic" else False,
            "feature_names": feature_names,
            "input": {
                "min_size": spec.min_size,
                "max_size": spec.max_size,
                "size_divisible": spec.size_divisible,
                "image_mean": list(spec.image_mean),
                "image_std": list(spec.image_std),
            },
            "opset": max(int(g["opset"]) for g in graphs.values()),
            "requested_opset": int(opset),
            "exporter": "torch.onnx.export(dynamo=True)",
            "folded_frozen_batchnorm": folded,
            "versions": _versions(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "graphs": graphs,
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _replace_dir(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"cannot write the ONNX export to {out}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"export: wrote {out} ({', '.join(g['file'] for g in graphs.values())}, {MANIFEST_NAME})")
    return manifest


def export_model(
    model_name: str,
    weights: str | os.PathLike[str] | None = "default",
    out_dir: str | os.PathLike[str] = "onnx",
    *,
    opset: int = DEFAULT_OPSET,
    argmax: bool = False,
    num_classes: int | None = None,
    seed: int | None = DEFAULT_SEED,
    min_size: int | None = None,
    max_size: int | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Resolve ``weights`` for registry model ``model_name`` and export it (see module docs).

    Raises ``ModelError`` for an unknown model, unusable weights or a failed export.
    """
    loaded = resolve_weights(model_name, weights, num_classes, seed=seed)
    entry = get_model_entry(model_name)
    if argmax and entry.task != "semantic":
        raise ModelError(f"--argmax applies to semantic models only, not to {model_name}")
    return export_loaded(
        loaded, out_dir, opset=opset, argmax=argmax, min_size=min_size, max_size=max_size,
        progress=progress,
    )  # fmt: skip


def ensure_export(
    loaded: LoadedWeights,
    model: nn.Module,
    *,
    export_dir: str | os.PathLike[str] | None = None,
    opset: int = DEFAULT_OPSET,
    argmax: bool = False,
    progress: ProgressFn | None = None,
) -> tuple[Path, dict[str, Any]]:
    """An up-to-date export of ``model`` (built from ``loaded``): reused or (re)made.

    ``export_dir`` defaults to ``<cache root>/onnx/<model>-<weights tag>``. An existing
    export is reused only if its manifest is for the same model, the same weights (SHA-256
    of the state dict), opset and argmax setting and all its graphs are intact; otherwise
    it is exported again, under a lock so concurrent processes export once.
    Returns ``(directory, manifest)``.
    """
    from engines.engine_cache import file_lock, onnx_cache_dir

    entry = get_model_entry(loaded.model_name)
    argmax = bool(argmax) and entry.task == "semantic"
    directory = (
        Path(export_dir).expanduser()
        if export_dir is not None
        else onnx_cache_dir(loaded.model_name, loaded.tag)
    )
    weights_sha = state_dict_sha256(model)
    with file_lock(directory.with_name(f".{directory.name}.lock")):
        reason = None
        try:
            manifest = load_manifest(directory, verify_files=True)
        except ModelError as exc:
            manifest, reason = None, str(exc)
        if manifest is not None:
            reason = _stale_reason(manifest, entry.name, weights_sha, int(opset), argmax)
        if reason is None and manifest is not None:
            log.debug("reusing ONNX export %s", directory)
            return directory, manifest
        log.info("exporting %s to ONNX in %s (%s)", loaded.model_id, directory, reason)
        manifest = export_loaded(
            loaded, directory, model=model, opset=opset, argmax=argmax, progress=progress,
            weights_sha256=weights_sha,
        )  # fmt: skip
        return directory, manifest


def _stale_reason(
    manifest: dict[str, Any], model_name: str, weights_sha: str, opset: int, argmax: bool
) -> str | None:
    """Why an existing export cannot be reused (None: it can)."""
    if manifest.get("model") != model_name:
        return f"it is an export of {manifest.get('model')}"
    if (manifest.get("weights") or {}).get("sha256") != weights_sha:
        return "the weights changed"
    if manifest.get("requested_opset", manifest.get("opset")) != opset:
        return f"it was made for opset {manifest.get('requested_opset')}, not {opset}"
    if bool(manifest.get("argmax")) != argmax:
        return "its argmax setting differs"
    return None


def load_manifest(export_dir: str | os.PathLike[str], *, verify_files: bool = False) -> dict:
    """Read and check ``manifest.json`` of an export directory.

    Raises ``ModelError`` if it is missing, unreadable, of another format or version, or
    names graph files that are not there (with ``verify_files``: whose SHA-256 differs).
    """
    directory = Path(export_dir).expanduser()
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"{directory} is not an ONNX export: {MANIFEST_NAME} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ModelError(f"{path} is not a segstream ONNX export manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ModelError(
            f"{path}: unsupported export manifest version {manifest.get('version')!r} "
            f"(this build reads version {MANIFEST_VERSION}; export again)"
        )
    for key in ("model", "task", "graphs", "class_names", "input"):
        if key not in manifest:
            raise ModelError(f"{path} lacks '{key}'")
    for name in graph_files(manifest["task"]):
        stem = name[: -len(".onnx")]
        info = manifest["graphs"].get(stem)
        file = directory / name
        if info is None or not file.is_file():
            raise ModelError(f"ONNX export {directory} is incomplete: {name} is missing")
        if verify_files and file_sha256(file) != info.get("sha256"):
            raise ModelError(f"{file} does not match its manifest (changed after export?)")
    return manifest


def _pool_side(pool: nn.Module, default: int) -> int:
    size = getattr(pool, "output_size", default)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _versions() -> dict[str, str]:
    import onnx
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "onnx": onnx.__version__}  # fmt: skip


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the finished directory ``src`` to ``dst``, replacing what was there."""
    old: Path | None = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- CLI


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m engines.export",
        description="Export a model to ONNX as the split every backend runs "
        "(dense / box_head / mask_head graphs for Mask R-CNN, one graph for semantic models).",
    )
    parser.add_argument("--model", required=True, help="registry model name, e.g. maskrcnn_demo")
    parser.add_argument("--weights", default="default",
                        help="default, a torchvision weight name, a checkpoint path, "
                        "demo, or random[:SEED] (default: default)")  # fmt: skip
    parser.add_argument("--out", required=True, help="output directory (replaced if it exists)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default {DEFAULT_OPSET})")  # fmt: skip
    parser.add_argument(
        "--argmax",
        action="store_true",
        help="semantic models: end the graph in an argmax -> uint8 class map",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="class count incl. background (random weights only)",
    )
    parser.add_argument(
        "--min-size",
        type=int,
        default=None,
        help="recorded input resize (shorter side); graphs stay dynamic",
    )
    parser.add_argument("--max-size", type=int, default=None, help="recorded longer-side cap")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 ok, 2 error)."""
    args = _parse_args(argv)

    def say(msg: str) -> None:
        print(msg, flush=True)

    started = time.perf_counter()
    try:
        export_model(
            args.model, args.weights, args.out, opset=args.opset, argmax=args.argmax,
            num_classes=args.num_classes, min_size=args.min_size, max_size=args.max_size,
            progress=say,
        )  # fmt: skip
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    say(f"export: done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
