"""Weight files: the project's checkpoint format, plain state dicts, and their tags.

A file is either a segstream checkpoint (written by ``save_checkpoint``: model name, class
names, state dict, meta) or a plain torchvision ``state_dict`` (possibly wrapped by a
training script). For a plain one the class count comes from the predictor shapes and the
names from a sidecar ``<path>.classes.json``, else from the model's standard categories
when the count matches, else ``class_<i>``. Files are read with
``torch.load(weights_only=True)``: no arbitrary pickles.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines.errors import ModelError, one_line
from engines.hashing import file_sha256
from engines.loaded_weights import LoadedWeights, generic_class_names
from engines.registry import ModelEntry, get_model_entry
from engines.state_dicts import (
    as_state_dict,
    check_num_classes,
    expected_shapes,
    fit_state_dict,
    infer_num_classes,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_SUFFIXES",
    "CHECKPOINT_VERSION",
    "file_tag",
    "load_weights_file",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "segstream-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def file_tag(path: str | os.PathLike[str]) -> str:
    """First 8 hex digits of the SHA-256 of a file."""
    return file_sha256(path)[:8]


def save_checkpoint(
    path: str | os.PathLike[str],
    model_name: str,
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    class_names: list[str] | tuple[str, ...],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint in the project's format (loadable by ``resolve_weights``).

    ``{"format": "segstream-checkpoint", "version": 1, "model": name, "class_names": [...],
    "state_dict": {...}, "meta": {...}}``; tensors are stored on CPU.
    """
    get_model_entry(model_name)
    state = (
        model_or_state_dict.state_dict()
        if isinstance(model_or_state_dict, nn.Module)
        else model_or_state_dict
    )
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": model_name,
        "class_names": [str(c) for c in class_names],
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
        "meta": dict(meta or {}),
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, out)
    return out


def load_weights_file(
    entry: ModelEntry, path: Path, num_classes: int | None, *, source: str
) -> LoadedWeights:
    """Load a checkpoint or plain state dict at ``path`` for ``entry`` and check that it fits.

    ``source`` describes the file in messages; ``num_classes``, if given, must match the
    file's class count. Raises ``ModelError`` naming the problem (or the first bad key).
    """
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ModelError(f"cannot read weights file {path}: {one_line(exc)}") from exc
    state, class_names, meta = _unpack(entry, path, obj)

    inferred = infer_num_classes(entry, state)
    if not class_names:
        n = inferred
        if n is None:
            fit_state_dict(source, entry.name, state, expected_shapes(entry, 2))  # names the key
            raise ModelError(f"cannot tell the class count of {path} for {entry.name}")
        class_names = _plain_class_names(entry, path, n)
    elif inferred is not None and inferred != len(class_names):
        raise ModelError(
            f"checkpoint {path} lists {len(class_names)} class names but its weights have "
            f"{inferred} classes"
        )
    check_num_classes(source, num_classes, len(class_names))
    state = fit_state_dict(source, entry.name, state, expected_shapes(entry, len(class_names)))
    return LoadedWeights(
        model_name=entry.name,
        state_dict=state,
        class_names=class_names,
        tag=file_tag(path),
        untrained=False,
        source=source,
        meta=meta,
    )


def _unpack(
    entry: ModelEntry, path: Path, obj: Any
) -> tuple[dict[str, torch.Tensor], tuple[str, ...], dict[str, Any]]:
    """(state dict, class names or ``()``, meta) of a loaded file, either format."""
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        version = obj.get("version")
        if version != CHECKPOINT_VERSION:
            raise ModelError(
                f"{path}: unsupported segstream checkpoint version {version!r} "
                f"(this build reads version {CHECKPOINT_VERSION})"
            )
        if obj.get("model") != entry.name:
            raise ModelError(
                f"checkpoint {path} is for model '{obj.get('model')}', not '{entry.name}'"
            )
        state = as_state_dict(obj.get("state_dict"))
        names = obj.get("class_names")
        if state is None or not isinstance(names, (list, tuple)) or not names:
            raise ModelError(f"checkpoint {path} lacks a state_dict or class_names")
        return state, tuple(str(n) for n in names), dict(obj.get("meta") or {})
    state = as_state_dict(obj)
    if state is None and isinstance(obj, Mapping):  # training-script wrappers
        for key in ("model", "state_dict", "model_state_dict"):
            state = as_state_dict(obj.get(key))
            if state is not None:
                break
    if state is None:
        raise ModelError(f"{path} is neither a segstream checkpoint nor a state_dict")
    return state, (), {}


def _plain_class_names(entry: ModelEntry, path: Path, n: int) -> tuple[str, ...]:
    """Class names of a plain state dict: its sidecar, the model's own, or generic ones."""
    sidecar = Path(f"{path}.classes.json")
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read class names {sidecar}: {one_line(exc)}") from exc
        if isinstance(data, Mapping):
            data = data.get("class_names")
        if not isinstance(data, list) or not all(isinstance(c, str) for c in data):
            raise ModelError(f"{sidecar} must hold a JSON list of class names")
        if len(data) != n:
            raise ModelError(f"{sidecar} lists {len(data)} class names but {path} has {n} classes")
        return tuple(data)
    known = entry.default_class_names()
    if known is not None and len(known) == n:
        return known
    return generic_class_names(n)
