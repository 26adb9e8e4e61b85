"""The manifest of an ONNX export (``manifest.json``): writing, reading and reuse checks.

The manifest records the model, its weights (tag, source and a SHA-256 of the state dict,
which the export cache and the ONNX Runtime backend compare), opset, library versions, every
graph's inputs and outputs with their dims, class names, input size / mean / std and the
task. It is what every backend and the TensorRT build read instead of the model itself.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import torch

from engines.errors import ModelError
from engines.hashing import file_sha256
from engines.loaded_weights import LoadedWeights
from engines.onnx_graphs import graph_files
from engines.registry import ModelEntry

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "load_manifest",
    "make_manifest",
    "stale_reason",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "segstream-onnx-export"
MANIFEST_VERSION = 1


def make_manifest(
    entry: ModelEntry,
    loaded: LoadedWeights,
    *,
    weights_sha: str,
    spec: Any,
    argmax: bool,
    feature_names: list[str],
    graphs: dict[str, dict[str, Any]],
    opset: int,
    folded: int,
) -> dict[str, Any]:
    """The manifest of an export of ``entry`` with ``loaded`` whose graphs are ``graphs``.

    ``spec`` is the ``ModelSpec`` (input resize and normalisation), ``opset`` the requested
    one (graphs record their actual one), ``folded`` the count of folded frozen norms.
    """
    return {
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


def stale_reason(
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
