"""The backend interface every inference engine implements (PyTorch, ONNX Runtime, TensorRT)."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal

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
