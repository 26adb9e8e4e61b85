"""torchvision's standard weights by name (``DEFAULT``, ``COCO_V1``, ``<Enum>.<member>``).

torchvision downloads the file into the torch hub cache (``$TORCH_HOME/hub/checkpoints``)
when the network allows; a file already there loads offline (torch verifies the hash in the
file name only when it downloads). Without either, the error says which file to place where.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch

from engines.errors import ModelError, one_line
from engines.loaded_weights import LoadedWeights
from engines.registry import ModelEntry
from engines.state_dicts import check_num_classes, expected_shapes, fit_state_dict

__all__ = ["load_torchvision_weights"]


def load_torchvision_weights(
    entry: ModelEntry, spec: str, num_classes: int | None, progress: bool
) -> LoadedWeights:
    """Load torchvision weights ``spec`` (a member name of the model's weight enum) for ``entry``.

    Raises ``ModelError`` for a model without torchvision weights, an unknown name, or a
    file that can be neither downloaded nor read from the hub cache.
    """
    if entry.family != "torchvision":
        raise ModelError(
            f"unknown weights '{spec}' for {entry.name} "
            "(use demo, random or a checkpoint path; a file name needs .pt/.pth)"
        )
    from torchvision.models import get_model_weights

    enum_cls = get_model_weights(entry.name)
    member = spec
    if "." in spec:
        prefix, member = spec.rsplit(".", 1)
        if prefix != enum_cls.__name__:
            raise ModelError(
                f"weights '{spec}' are not for {entry.name} (expected {enum_cls.__name__}.<name>)"
            )
    choices = list(enum_cls.__members__)
    key = next((c for c in choices if c.lower() == member.lower()), None)
    if key is None:
        raise ModelError(
            f"unknown weights '{spec}' for {entry.name} (available: {', '.join(choices)}, "
            "random, or a checkpoint path)"
        )
    tv_weights = enum_cls[key]
    name = tv_weights.name  # DEFAULT resolves to the real member's name
    class_names = tuple(str(c) for c in tv_weights.meta["categories"])
    check_num_classes(f"torchvision weights {name}", num_classes, len(class_names))

    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    filename = os.path.basename(urlparse(tv_weights.url).path)
    cached = hub_dir / filename
    try:
        state = tv_weights.get_state_dict(
            progress=progress, check_hash=True, weights_only=True, map_location="cpu"
        )
    except Exception as exc:  # noqa: BLE001
        if cached.is_file():
            raise ModelError(f"cannot read cached weights {cached}: {one_line(exc)}") from exc
        raise ModelError(
            f"cannot download weights '{name}' for {entry.name} (no network?): place the file "
            f"{filename} in {hub_dir}, or pass --weights PATH"
        ) from exc

    source = f"torchvision weights {enum_cls.__name__}.{name} ({cached})"
    state = fit_state_dict(source, entry.name, state, expected_shapes(entry, len(class_names)))
    return LoadedWeights(
        model_name=entry.name,
        state_dict=state,
        class_names=class_names,
        tag=name,
        untrained=False,
        source=source,
    )
