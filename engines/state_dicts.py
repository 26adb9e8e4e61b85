"""State-dict checks: does a set of weights fit a registry architecture, and for how many classes.

Every weight loader (``engines.checkpoints``, ``engines.torchvision_weights``) and
``engines.weights.build_model`` goes through ``fit_state_dict``, so a file that does not fit
fails with the same message naming the first bad key, whatever its source. Expected shapes
come from a build on the meta device, so checking costs no memory for the weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import torch
from torch import nn

from engines.errors import ModelError
from engines.registry import ModelEntry

__all__ = [
    "as_state_dict",
    "check_num_classes",
    "expected_shapes",
    "fit_state_dict",
    "infer_num_classes",
    "model_shapes",
]


def as_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """``obj`` as a flat ``{str: Tensor}`` dict (``module.`` prefixes stripped), else None."""
    if not isinstance(obj, Mapping) or not obj:
        return None
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return None
    state = dict(obj)
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def check_num_classes(source: str, wanted: int | None, actual: int) -> None:
    """``ModelError`` if a requested class count ``wanted`` differs from the weights' own."""
    if wanted is not None and wanted != actual:
        raise ModelError(
            f"num_classes {wanted} does not match {source}, which has {actual} classes"
        )


def model_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """State-dict key -> shape of a built model (``keep_vars``: no copies of the tensors)."""
    return {k: v.shape for k, v in model.state_dict(keep_vars=True).items()}


@cache
def expected_shapes(entry: ModelEntry, num_classes: int) -> dict[str, torch.Size]:
    """State-dict shapes of the architecture, from a build on the meta device (no memory)."""
    with torch.device("meta"):
        model = entry.build(num_classes)
    return model_shapes(model)


@cache
def _class_dependent_keys(entry: ModelEntry) -> tuple[tuple[str, int, int, int], ...]:
    """Keys whose shape grows with the class count: (key, dim, a, b) with size = a * n + b."""
    s2, s3 = expected_shapes(entry, 2), expected_shapes(entry, 3)
    out = []
    for key, shape2 in s2.items():
        shape3 = s3.get(key)
        if shape3 is None or len(shape3) != len(shape2):
            continue
        for dim, (a2, a3) in enumerate(zip(shape2, shape3, strict=True)):
            if a2 != a3:
                out.append((key, dim, a3 - a2, a2 - 2 * (a3 - a2)))
                break
    return tuple(out)


def infer_num_classes(entry: ModelEntry, state: Mapping[str, torch.Tensor]) -> int | None:
    """Class count implied by the predictor shapes of ``state`` (None if it cannot tell)."""
    for key, dim, a, b in _class_dependent_keys(entry):
        tensor = state.get(key)
        if tensor is None or tensor.dim() <= dim:
            continue
        n, rem = divmod(tensor.shape[dim] - b, a)
        if rem == 0 and n >= 1:
            return n
    return None


def _fmt(shape: torch.Size) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def fit_state_dict(
    source: str,
    model_name: str,
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size],
) -> dict[str, torch.Tensor]:
    """Check ``state`` against the architecture's ``expected`` shapes and return what to load.

    Tolerated: an ``aux_classifier`` the architecture does not build (training-only head),
    and ``num_batches_tracked`` counters on either side (BatchNorm vs FrozenBatchNorm).
    Anything else missing, extra or of another shape raises ``ModelError`` naming the key.
    """

    def ignorable(key: str) -> bool:
        return key.endswith(".num_batches_tracked") or key.startswith("aux_classifier.")

    out: dict[str, torch.Tensor] = {}
    for key, shape in expected.items():
        tensor = state.get(key)
        if tensor is None:
            if key.endswith(".num_batches_tracked"):
                continue
            raise ModelError(f"weights {source} do not fit {model_name}: missing key '{key}'")
        if tensor.shape != shape:
            raise ModelError(
                f"weights {source} do not fit {model_name}: key '{key}' has shape "
                f"{_fmt(tensor.shape)} in the file but {_fmt(shape)} in the model"
            )
        out[key] = tensor
    extra = [k for k in state if k not in expected and not ignorable(k)]
    if extra:
        raise ModelError(f"weights {source} do not fit {model_name}: unexpected key '{extra[0]}'")
    return out
