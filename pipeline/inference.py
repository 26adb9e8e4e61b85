"""Opening the configured backend and running one batch: shared by the infer stage,
the in-process reference path and the benchmark's sequential baseline."""

from __future__ import annotations

import torch

from engines.backends import AutoProbe, create_backend
from engines.backends.base import Backend
from engines.outputs import InstanceOutput, SemanticOutput
from engines.transform import batch_images
from pipeline.config import ModelConfig

PROBE_SEED = 3  # the synthetic scene ``backend: auto`` times candidates on (timing only)


def auto_probe(frame_size: tuple[int, int], batch_size: int, threads: int) -> AutoProbe:
    """Frames like the source's (its size, with objects in them) for ``backend: auto`` to time
    the candidates on: detections drive Mask R-CNN's cost, so blank frames would mislead."""
    from pipeline.synthetic import SyntheticScene

    height, width = frame_size
    scene = SyntheticScene(PROBE_SEED, width, height)
    frames = max(2 * batch_size, 4)
    return AutoProbe(tuple(scene.frame(15 * i).image for i in range(frames)), batch_size, threads)


def open_backend(model: ModelConfig, probe: AutoProbe | None = None, threads: int | None = None) -> Backend:
    """The backend a ``model:`` config section asks for. ``probe``: what ``backend: auto``
    times the candidates on (without it, auto takes the first that starts); ``threads``:
    the model's thread budget (None: the engine's default)."""
    return create_backend(
        model.name,
        model.weights,
        backend=model.backend,
        device=model.device,
        probe=probe if model.backend == "auto" else None,
        min_size=model.min_size,
        max_size=model.max_size,
        seed=model.seed,
        **({"threads": threads} if threads else {}),
    )


def infer_images(
    backend: Backend, images: list[torch.Tensor]
) -> tuple[list[InstanceOutput] | list[SemanticOutput], list[tuple[int, int]]]:
    """Pad prepared images into one batch, run it, return outputs and the unpadded sizes."""
    tensor, sizes = batch_images(images, backend.spec.size_divisible)
    return backend.infer(tensor.to(backend.device, non_blocking=True), sizes), sizes
