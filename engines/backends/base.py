"""The backend interface every inference engine implements, and ``SplitBackend``, the shape
they all share (PyTorch, ONNX Runtime, OpenVINO, TensorRT)."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from engines.outputs import InstanceOutput, SemanticOutput

Task = Literal["instance", "semantic"]


@dataclass(frozen=True)
class ModelSpec:
    """What the runtime needs to know about a loaded model, independent of the backend."""

    name: str  # registry name, e.g. "maskrcnn_resnet50_fpn" or "fcn_demo"
    task: Task
    class_names: tuple[str, ...]  # index = class id; index 0 is background
    model_id: str  # name + weights tag, e.g. "maskrcnn_demo@3f2a9c1b" (goes on the wire)
    untrained: bool  # True for `random` weights: results are labelled untrained
    min_size: int  # resize: shorter side to min_size ...
    max_size: int  # ... unless the longer side would exceed max_size
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    size_divisible: int = 32  # batches are padded to a multiple of this


class Backend(abc.ABC):
    """Runs a batch of preprocessed images and returns raw per-image outputs.

    Input: ``batch`` [B, 3, H, W] float32, normalised, zero-padded (see
    ``engines.transform.batch_images``) and the unpadded ``image_sizes`` [(h, w), ...].
    Output: one ``InstanceOutput`` or ``SemanticOutput`` per image, on ``self.device``,
    in model-input coordinates.
    """

    name: str  # "pytorch" | "onnxruntime" | "openvino" | "tensorrt"
    spec: ModelSpec
    device: torch.device
    selection: str = "configured"  # why this backend runs (``backend: auto`` says what it measured)

    @abc.abstractmethod
    def infer(
        self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]
    ) -> list[InstanceOutput] | list[SemanticOutput]:
        """Run one batch (one launch per dense engine)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free engines / sessions."""


def checked_sizes(batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ``image_sizes`` of a padded batch [B, 3, H, W] as int pairs, after checking that
    they fit it; ``ValueError`` (a caller's bug, not a user's) otherwise."""
    if batch.dim() != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected a [B, 3, H, W] batch, got {tuple(batch.shape)}")
    if len(image_sizes) != batch.shape[0]:
        raise ValueError(f"{len(image_sizes)} image sizes for a batch of {batch.shape[0]}")
    sizes = [(int(h), int(w)) for h, w in image_sizes]
    for h, w in sizes:
        if h > batch.shape[2] or w > batch.shape[3]:
            raise ValueError(f"image size {h}x{w} exceeds the batch {tuple(batch.shape)}")
    return sizes


#: The split as one callable: a padded batch and its unpadded image sizes -> one output each.
SplitRun = Callable[
    [torch.Tensor, list[tuple[int, int]]], list[InstanceOutput] | list[SemanticOutput]
]


class SplitBackend(Backend):
    """A backend that runs the model split (``engines.split``): ``SplitMaskRCNN`` or
    ``SplitSemantic`` over the runtime's callables, set as ``_run`` by the constructor.

    Every backend is one: only what runs the graphs differs (eager modules, ONNX Runtime
    sessions, OpenVINO compiled models, TensorRT engines), so input checks, the device
    move and closing are here once.
    """

    _run: SplitRun

    def infer(
        self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]
    ) -> list[InstanceOutput] | list[SemanticOutput]:
        """Run one padded batch [B, 3, H, W]; one output per image, on ``self.device``."""
        sizes = checked_sizes(batch, image_sizes)
        with torch.inference_mode():
            batch = batch.to(self.device, torch.float32, non_blocking=True)
            return self._run(batch, sizes)

    def close(self) -> None:
        """Drop the split (and with it the runners); later calls raise ``RuntimeError``."""
        self._run = _closed
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _closed(*_args: Any) -> Any:
    raise RuntimeError("backend is closed")
