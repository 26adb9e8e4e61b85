"""SHA-256 digests that identify files and weights across exports, caches and checkpoints.

One implementation serves the weight tags of ``engines.weights`` (a checkpoint file's
digest prefix) and the export manifests of ``engines.export`` (graph files and the state
dict an export was made from), so a tag and a manifest entry of the same file always agree.
"""

from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

__all__ = ["file_sha256", "state_dict_sha256"]


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
