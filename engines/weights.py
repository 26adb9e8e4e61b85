"""Weight resolution: what ``--weights`` means for a model, and loading it.

``resolve_weights(model, weights)`` accepts:

- ``"default"``: the model's default (torchvision's ``DEFAULT`` weights, or ``"demo"``).
- a torchvision weight name for that model: ``"DEFAULT"``, ``"COCO_V1"`` or the full
  ``"MaskRCNN_ResNet50_FPN_Weights.COCO_V1"``. torchvision downloads the file into the torch
  hub cache (``$TORCH_HOME/hub/checkpoints``) when the network allows; a file already there
  loads offline (torch verifies the hash in the file name only when it downloads).
- a local checkpoint path (``.pt`` / ``.pth`` / ``.ckpt`` or any existing file): either the
  project's own format (see ``save_checkpoint``) or a plain torchvision ``state_dict``. For a
  plain ``state_dict`` the class count is read from the predictor shapes and the names come
  from a sidecar ``<path>.classes.json`` (a JSON list, or ``{"class_names": [...]}``), else
  from the model's standard categories when the count matches, else ``class_<i>``.
- ``"random"`` / ``"random:<seed>"``: seeded random initialisation, no pretrained backbone;
  results are labelled untrained.
- ``"demo"``: the project's demo checkpoint ``engines/weights/<model>.pt``.

Everything is loaded with ``torch.load(weights_only=True)`` (no arbitrary pickles) and checked
against the architecture before use; a file that does not fit names the first bad key.

This module decides which kind a ``--weights`` value is, and handles random and demo
weights itself; the loaders live in ``engines.checkpoints`` (weight files and their
format), ``engines.torchvision_weights`` (torchvision names) and ``engines.state_dicts``
(shape checks), the result type in ``engines.loaded_weights``. Their public names are
re-exported here, so ``engines.weights`` stays the one import for callers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from engines.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_SUFFIXES,
    CHECKPOINT_VERSION,
    file_tag,
    load_weights_file,
    save_checkpoint,
)
from engines.errors import ModelError
from engines.loaded_weights import LoadedWeights, generic_class_names
from engines.registry import ModelEntry, get_model_entry
from engines.state_dicts import fit_state_dict, model_shapes
from engines.torchvision_weights import load_torchvision_weights

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_SUFFIXES",
    "CHECKPOINT_VERSION",
    "DEFAULT_SEED",
    "DEMO_WEIGHTS_DIR",
    "LoadedWeights",
    "build_model",
    "demo_weights_path",
    "file_tag",
    "generic_class_names",
    "resolve_weights",
    "save_checkpoint",
]

# Read at call time by demo_weights_path, so tests can point it at another folder.
DEMO_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_SEED = 0

_RANDOM_RE = re.compile(r"^random(?:[:@-]s?(\d+))?$", re.IGNORECASE)


def resolve_weights(
    model_name: str,
    weights: str | os.PathLike[str] | None = "default",
    num_classes: int | None = None,
    *,
    seed: int | None = DEFAULT_SEED,
    progress: bool = False,
) -> LoadedWeights:
    """Resolve ``weights`` for ``model_name`` (see module docstring) and load them on CPU.

    ``num_classes`` (incl. background) is only needed for random weights of a custom class
    count; with any other weights it must match them if given. Raises ``ModelError``.
    """
    entry = get_model_entry(model_name)
    if num_classes is not None and num_classes < 1:
        raise ModelError(f"num_classes must be at least 1, got {num_classes}")
    spec = str(weights).strip() if weights is not None else "default"
    if spec.lower() == "default":
        spec = entry.default_weights

    match = _RANDOM_RE.match(spec)
    if match:
        if match.group(1) is not None:
            seed = int(match.group(1))
        return _random_weights(entry, num_classes, DEFAULT_SEED if seed is None else int(seed))
    if spec.lower() == "demo":
        return _demo_weights(entry, num_classes)
    if _looks_like_path(spec):
        return load_weights_file(
            entry, Path(spec).expanduser(), num_classes, source=f"checkpoint {spec}"
        )
    return load_torchvision_weights(entry, spec, num_classes, progress)


def build_model(weights: LoadedWeights) -> nn.Module:
    """Build the architecture of ``weights.model_name`` and put the weights into it (CPU).

    Random weights are initialised under ``torch.manual_seed(weights.seed)`` without touching
    the caller's global RNG state. The model is returned in eval mode.
    """
    entry = get_model_entry(weights.model_name)
    if weights.state_dict is None:
        with _seeded(weights.seed if weights.seed is not None else DEFAULT_SEED):
            model = entry.build(weights.num_classes)
    else:
        model = entry.build(weights.num_classes)
        state = fit_state_dict(weights.source, entry.name, weights.state_dict, model_shapes(model))
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.endswith(".num_batches_tracked")] + list(unexpected)
        if bad:  # fit_state_dict already checked; this guards against custom _load hooks
            raise ModelError(f"weights {weights.source} do not fit {entry.name}: key '{bad[0]}'")
    if "bn_eps" in weights.meta:
        from engines.models.torchvision_models import set_frozen_bn_eps

        set_frozen_bn_eps(model, float(weights.meta["bn_eps"]))
    return model.eval()


def demo_weights_path(model_name: str) -> Path:
    """Where the demo checkpoint of ``model_name`` lives (``engines/weights/<name>.pt``)."""
    return DEMO_WEIGHTS_DIR / f"{model_name}.pt"


def _random_weights(entry: ModelEntry, num_classes: int | None, seed: int) -> LoadedWeights:
    known = entry.default_class_names()
    if num_classes is None:
        if known is None:
            raise ModelError(
                f"weights 'random' for {entry.name} need a class count: pass num_classes"
            )
        num_classes = len(known)
    names = known if known is not None and len(known) == num_classes else None
    return LoadedWeights(
        model_name=entry.name,
        state_dict=None,
        class_names=names or generic_class_names(num_classes),
        tag=f"random-s{seed}",
        untrained=True,
        source=f"random init (seed {seed})",
        seed=seed,
    )


def _demo_weights(entry: ModelEntry, num_classes: int | None) -> LoadedWeights:
    if entry.family != "demo":
        raise ModelError(
            f"weights 'demo' exist only for the demo models, not for {entry.name} "
            "(use DEFAULT, a checkpoint path or random)"
        )
    path = demo_weights_path(entry.name)
    if not path.is_file():
        raise ModelError(
            f"demo weights for {entry.name} are missing: {path} does not exist "
            "(train them, or use --weights random / a checkpoint path)"
        )
    return load_weights_file(entry, path, num_classes, source=f"demo checkpoint {path}")


def _looks_like_path(spec: str) -> bool:
    return (
        spec.lower().endswith(CHECKPOINT_SUFFIXES)
        or os.sep in spec
        or "/" in spec
        or Path(spec).expanduser().is_file()
    )


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for a block, restoring the caller's state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
