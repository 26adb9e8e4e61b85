"""Files written by training: the final checkpoint (``engines.weights``' format) and the
resumable training state.

The checkpoint is written with ``engines.weights.save_checkpoint`` and read back with
``resolve_weights`` / ``build_model``, the same code the pipeline loads weights with; only
the write is made atomic here (a run killed mid-write leaves the old file).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines.weights import CHECKPOINT_FORMAT, build_model, resolve_weights, save_checkpoint
from pipeline.synthetic import CLASS_NAMES

__all__ = ["atomic_save", "load_checkpoint", "save_trained", "store_half"]


def _tmp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + ".tmp")


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary name, then rename over ``path``."""
    tmp = _tmp(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_trained(
    path: Path,
    model_name: str,
    model: nn.Module,
    meta: dict[str, Any],
    class_names: tuple[str, ...] = CLASS_NAMES,
) -> Path:
    """Write the trained model as a segstream checkpoint (atomically); returns ``path``."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    tmp = save_checkpoint(_tmp(path), model_name, state, class_names, meta)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> tuple[str, nn.Module, dict[str, Any]]:
    """Load a segstream checkpoint of a demo model -> (model name, model in eval mode, meta)."""
    # the file names its model; engines.weights then loads (and checks) it for that model
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a segstream checkpoint")
    loaded = resolve_weights(ckpt["model"], Path(path))
    return loaded.model_name, build_model(loaded), dict(loaded.meta)


def store_half(path: str | Path) -> Path:
    """Rewrite a checkpoint with its floating-point tensors stored as float16 (half the file;
    the loader copies them into the float32 model, so the model still runs in float32). The
    meta records it (``stored_as``); the held-out figures of the shipped weights come from
    evaluating this file, not the float32 one training measured."""
    path = Path(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a segstream checkpoint")
    ckpt["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    ckpt["meta"] = {**ckpt.get("meta", {}), "stored_as": "float16"}
    atomic_save(ckpt, path)
    return path
