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

This module runs an export as a whole (into a fresh directory that replaces the old one
atomically, or reused from the cache) and is its command line; the graphs themselves are
exported by ``engines.onnx_graphs``, the manifest is ``engines.export_manifest`` and the
digests ``engines.hashing``. Their public names are re-exported here.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from engines.errors import ModelError
from engines.export_manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    load_manifest,
    make_manifest,
)
from engines.export_manifest import stale_reason as _stale_reason
from engines.hashing import file_sha256, state_dict_sha256
from engines.onnx_graphs import (
    DEFAULT_OPSET,
    MAX_OPSET,
    MIN_OPSET,
    export_job,
    fold_frozen_batchnorm,
    graph_files,
    split_graph_jobs,
)
from engines.registry import get_model_entry
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

ProgressFn = Callable[[str], None]


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

    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ModelError(
            f"unsupported ONNX opset {opset} (use {MIN_OPSET}..{MAX_OPSET}; "
            f"default {DEFAULT_OPSET})"
        )
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
    tmp = _staging_dir(out)
    try:
        jobs, feature_names = split_graph_jobs(entry.name, entry.task, net, argmax)
        graphs = {job.key: export_job(job, tmp, int(opset), entry.name, say) for job in jobs}
        manifest = make_manifest(
            entry, loaded, weights_sha=weights_sha, spec=spec, argmax=argmax,
            feature_names=feature_names, graphs=graphs, opset=int(opset), folded=folded,
        )  # fmt: skip
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
        # export_loaded is looked up in this module's namespace at call time: tests stub it
        manifest = export_loaded(
            loaded, directory, model=model, opset=opset, argmax=argmax, progress=progress,
            weights_sha256=weights_sha,
        )  # fmt: skip
        return directory, manifest


def _staging_dir(out: Path) -> Path:
    """A fresh directory next to ``out``, to be renamed over it once the export is complete."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the export is an ordinary directory
    except OSError as exc:
        raise ModelError(f"cannot write the ONNX export to {out}: {exc}") from exc
    return tmp


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
