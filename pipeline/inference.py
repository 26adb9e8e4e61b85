"""Opening the configured backend and running one batch: shared by the infer stage,
the in-process reference path and the benchmark's sequential baseline."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from engines.backends import AutoProbe, create_backend
from engines.backends.base import Backend, ModelSpec
from engines.backends.options import DEFAULT_CALIBRATION_FRAMES, DEFAULT_CALIBRATION_SOURCE
from engines.outputs import InstanceOutput, SemanticOutput
from engines.transform import batch_images
from pipeline.config import BACKEND_PRECISIONS, ModelConfig
from pipeline.errors import ConfigError

PROBE_SEED = 3  # the synthetic scene ``backend: auto`` times candidates on (timing only)


def auto_probe(frame_size: tuple[int, int], batch_size: int, threads: int) -> AutoProbe:
    """Frames like the source's (its size, with objects in them) for ``backend: auto`` to time
    the candidates on: detections drive Mask R-CNN's cost, so blank frames would mislead."""
    from pipeline.synthetic import SyntheticScene

    height, width = frame_size
    scene = SyntheticScene(PROBE_SEED, width, height)
    frames = max(2 * batch_size, 4)
    return AutoProbe(tuple(scene.frame(15 * i).image for i in range(frames)), batch_size, threads)


def calibration_frames(uri: str, limit: int) -> Iterator[np.ndarray]:
    """The first ``limit`` frames of source ``uri`` as H x W x 3 uint8 RGB arrays.

    A generator: the source is opened only when the first frame is asked for, so a backend
    whose int8 model is already cached (keyed by ``uri``) never opens it.
    """
    from pipeline.sources import open_source

    with open_source(uri) as source:
        for frame in itertools.islice(source.frames(), limit):
            yield frame.image


def backend_options(model: ModelConfig, threads: int | None = None) -> dict[str, Any]:
    """The backend's own keyword options from ``model.backend_options`` (the shared ones,
    sizes and seed, are added by ``open_backend``). ``threads``: the model's thread budget,
    unless ``backend_options.threads`` overrides it. Raises ``ConfigError`` for an option
    the configured backend does not take (normally caught when the config is loaded)."""
    chosen = model.backend_options
    problem = chosen.check(model.backend)
    if problem:  # a config changed after validation: still one line, before anything starts
        raise ConfigError(f"model.backend_options: {problem}")
    options = chosen.given()
    precision = options.pop("precision", None)
    options.pop("calibration_source", None)
    options.pop("calibration_frames", None)
    threads = options.pop("threads", None) or threads
    if threads:
        options["threads"] = int(threads)
    # fp32-only backends have no precision option: fp32 there is what they run anyway
    if precision is not None and BACKEND_PRECISIONS[model.backend] != ("fp32",):
        options["precision"] = precision
    if precision == "int8":  # engines never open sources: the frames are read here
        uri = chosen.calibration_source or DEFAULT_CALIBRATION_SOURCE
        limit = chosen.calibration_frames or DEFAULT_CALIBRATION_FRAMES
        options.update(calibration=calibration_frames(uri, limit), calibration_source=uri,
                       calibration_frames=limit)  # fmt: skip
    return options


def open_backend(model: ModelConfig, probe: AutoProbe | None = None, threads: int | None = None) -> Backend:
    """The backend a ``model:`` config section asks for, with its ``backend_options``.
    ``probe``: what ``backend: auto`` times the candidates on (without it, auto takes the
    first that starts); ``threads``: the model's thread budget (None: the engine's
    default; ``backend_options.threads`` overrides it)."""
    options = backend_options(model, threads)
    if probe is not None and options.get("threads") and options["threads"] != probe.threads:
        probe = dataclasses.replace(probe, threads=options["threads"])  # part of auto's cache key
    return create_backend(
        model.name,
        model.weights,
        backend=model.backend,
        device=model.device,
        probe=probe if model.backend == "auto" else None,
        min_size=model.min_size,
        max_size=model.max_size,
        seed=model.seed,
        **options,
    )


def semantic_model_config(model: ModelConfig) -> ModelConfig | None:
    """Panoptic mode: the ``model:`` section as it opens the semantic model (same backend,
    device, options; its own weights and its own default input size); None otherwise."""
    if model.semantic is None:
        return None
    return model.model_copy(update={"name": model.semantic, "weights": model.semantic_weights, "semantic": None,
                                    "min_size": None, "max_size": None})


def same_transform(a: ModelSpec, b: ModelSpec) -> bool:
    """Whether two models take the very same input (resize, normalisation, padding), so one
    prepared batch serves both."""
    return (a.min_size, a.max_size, a.image_mean, a.image_std, a.size_divisible) == (
        b.min_size, b.max_size, b.image_mean, b.image_std, b.size_divisible)


def infer_images(
    backend: Backend, images: list[torch.Tensor]
) -> tuple[list[InstanceOutput] | list[SemanticOutput], list[tuple[int, int]]]:
    """Pad prepared images into one batch, run it, return outputs and the unpadded sizes."""
    tensor, sizes = batch_images(images, backend.spec.size_divisible)
    return backend.infer(tensor.to(backend.device, non_blocking=True), sizes), sizes
