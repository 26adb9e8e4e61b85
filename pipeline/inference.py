"""Opening the configured backend and running one batch: shared by the infer stage,
the in-process reference path and the benchmark's sequential baseline."""

from __future__ import annotations

import torch

from engines.backends import create_backend
from engines.backends.base import Backend
from engines.outputs import InstanceOutput, SemanticOutput
from engines.transform import batch_images
from pipeline.config import ModelConfig


def open_backend(model: ModelConfig) -> Backend:
    """The backend a ``model:`` config section asks for."""
    return create_backend(
        model.name,
        model.weights,
        backend=model.backend,
        device=model.device,
        min_size=model.min_size,
        max_size=model.max_size,
        seed=model.seed,
    )


def infer_images(
    backend: Backend, images: list[torch.Tensor]
) -> tuple[list[InstanceOutput] | list[SemanticOutput], list[tuple[int, int]]]:
    """Pad prepared images into one batch, run it, return outputs and the unpadded sizes."""
    tensor, sizes = batch_images(images, backend.spec.size_divisible)
    return backend.infer(tensor.to(backend.device, non_blocking=True), sizes), sizes
