"""The record every kind of ``--weights`` resolves to (see ``engines.weights``).

It lives apart from the loaders so that each of them (checkpoint files, torchvision
weights, random and demo weights) can return it without importing the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["LoadedWeights", "generic_class_names"]


@dataclass(frozen=True)
class LoadedWeights:
    """Resolved weights of one model, ready to be put into its architecture.

    ``state_dict`` is ``None`` for random weights (the model is built under ``seed``).
    ``tag`` identifies the weights: a torchvision weight name, the first 8 hex digits of the
    checkpoint file's SHA-256, or ``random-s<seed>``. ``meta`` carries extra architecture
    settings from a checkpoint (``bn_eps``) and whatever else it recorded.
    """

    model_name: str
    state_dict: dict[str, torch.Tensor] | None
    class_names: tuple[str, ...]
    tag: str
    untrained: bool
    source: str
    seed: int | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.class_names)

    @property
    def model_id(self) -> str:
        """``<model>@<tag>``: identifies model and weights on the wire."""
        return f"{self.model_name}@{self.tag}"


def generic_class_names(num_classes: int) -> tuple[str, ...]:
    """``("background", "class_1", ..., "class_<n-1>")``."""
    return ("background",) + tuple(f"class_{i}" for i in range(1, num_classes))
