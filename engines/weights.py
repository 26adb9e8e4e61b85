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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from engines.errors import ModelError
from engines.registry import ModelEntry, get_model_entry

CHECKPOINT_FORMAT = "segstream-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
DEMO_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_SEED = 0

_RANDOM_RE = re.compile(r"^random(?:[:@-]s?(\d+))?$", re.IGNORECASE)


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


# --------------------------------------------------------------------------- public API


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
        return _file_weights(
            entry, Path(spec).expanduser(), num_classes, source=f"checkpoint {spec}"
        )
    return _torchvision_weights(entry, spec, num_classes, progress)


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
        state = _fit_state_dict(weights.source, entry.name, weights.state_dict, _shapes(model))
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.endswith(".num_batches_tracked")] + list(unexpected)
        if bad:  # _fit_state_dict already checked; this guards against custom _load hooks
            raise ModelError(f"weights {weights.source} do not fit {entry.name}: key '{bad[0]}'")
    if "bn_eps" in weights.meta:
        from engines.models.torchvision_models import set_frozen_bn_eps

        set_frozen_bn_eps(model, float(weights.meta["bn_eps"]))
    return model.eval()


def save_checkpoint(
    path: str | os.PathLike[str],
    model_name: str,
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    class_names: list[str] | tuple[str, ...],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint in the project's format (loadable by ``resolve_weights``).

    ``{"format": "segstream-checkpoint", "version": 1, "model": name, "class_names": [...],
    "state_dict": {...}, "meta": {...}}``; tensors are stored on CPU.
    """
    get_model_entry(model_name)
    state = (
        model_or_state_dict.state_dict()
        if isinstance(model_or_state_dict, nn.Module)
        else model_or_state_dict
    )
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": model_name,
        "class_names": [str(c) for c in class_names],
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
        "meta": dict(meta or {}),
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, out)
    return out


def demo_weights_path(model_name: str) -> Path:
    """Where the demo checkpoint of ``model_name`` lives (``engines/weights/<name>.pt``)."""
    return DEMO_WEIGHTS_DIR / f"{model_name}.pt"


def file_tag(path: str | os.PathLike[str]) -> str:
    """First 8 hex digits of the SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:8]


def generic_class_names(num_classes: int) -> tuple[str, ...]:
    """``("background", "class_1", ..., "class_<n-1>")``."""
    return ("background",) + tuple(f"class_{i}" for i in range(1, num_classes))


# --------------------------------------------------------------------------- sources


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
    return _file_weights(entry, path, num_classes, source=f"demo checkpoint {path}")


def _file_weights(
    entry: ModelEntry, path: Path, num_classes: int | None, *, source: str
) -> LoadedWeights:
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ModelError(f"cannot read weights file {path}: {_one_line(exc)}") from exc

    meta: dict[str, Any] = {}
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        version = obj.get("version")
        if version != CHECKPOINT_VERSION:
            raise ModelError(
                f"{path}: unsupported segstream checkpoint version {version!r} "
                f"(this build reads version {CHECKPOINT_VERSION})"
            )
        if obj.get("model") != entry.name:
            raise ModelError(
                f"checkpoint {path} is for model '{obj.get('model')}', not '{entry.name}'"
            )
        state = _as_state_dict(obj.get("state_dict"))
        names = obj.get("class_names")
        if state is None or not isinstance(names, (list, tuple)) or not names:
            raise ModelError(f"checkpoint {path} lacks a state_dict or class_names")
        class_names = tuple(str(n) for n in names)
        meta = dict(obj.get("meta") or {})
    else:
        state = _as_state_dict(obj)
        if state is None and isinstance(obj, Mapping):  # training-script wrappers
            for key in ("model", "state_dict", "model_state_dict"):
                state = _as_state_dict(obj.get(key))
                if state is not None:
                    break
        if state is None:
            raise ModelError(f"{path} is neither a segstream checkpoint nor a state_dict")
        class_names = ()

    inferred = _infer_num_classes(entry, state)
    if not class_names:
        n = inferred
        if n is None:
            _fit_state_dict(source, entry.name, state, _expected_shapes(entry, 2))  # names the key
            raise ModelError(f"cannot tell the class count of {path} for {entry.name}")
        class_names = _plain_class_names(entry, path, n)
    elif inferred is not None and inferred != len(class_names):
        raise ModelError(
            f"checkpoint {path} lists {len(class_names)} class names but its weights have "
            f"{inferred} classes"
        )
    _check_num_classes(source, num_classes, len(class_names))
    state = _fit_state_dict(source, entry.name, state, _expected_shapes(entry, len(class_names)))
    return LoadedWeights(
        model_name=entry.name,
        state_dict=state,
        class_names=class_names,
        tag=file_tag(path),
        untrained=False,
        source=source,
        meta=meta,
    )


def _torchvision_weights(
    entry: ModelEntry, spec: str, num_classes: int | None, progress: bool
) -> LoadedWeights:
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
    _check_num_classes(f"torchvision weights {name}", num_classes, len(class_names))

    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    filename = os.path.basename(urlparse(tv_weights.url).path)
    cached = hub_dir / filename
    try:
        state = tv_weights.get_state_dict(
            progress=progress, check_hash=True, weights_only=True, map_location="cpu"
        )
    except Exception as exc:  # noqa: BLE001
        if cached.is_file():
            raise ModelError(f"cannot read cached weights {cached}: {_one_line(exc)}") from exc
        raise ModelError(
            f"cannot download weights '{name}' for {entry.name} (no network?): place the file "
            f"{filename} in {hub_dir}, or pass --weights PATH"
        ) from exc

    source = f"torchvision weights {enum_cls.__name__}.{name} ({cached})"
    state = _fit_state_dict(source, entry.name, state, _expected_shapes(entry, len(class_names)))
    return LoadedWeights(
        model_name=entry.name,
        state_dict=state,
        class_names=class_names,
        tag=name,
        untrained=False,
        source=source,
    )


# --------------------------------------------------------------------------- helpers


def _looks_like_path(spec: str) -> bool:
    return (
        spec.lower().endswith(CHECKPOINT_SUFFIXES)
        or os.sep in spec
        or "/" in spec
        or Path(spec).expanduser().is_file()
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _as_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """``obj`` as a flat ``{str: Tensor}`` dict (``module.`` prefixes stripped), else None."""
    if not isinstance(obj, Mapping) or not obj:
        return None
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return None
    state = dict(obj)
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _check_num_classes(source: str, wanted: int | None, actual: int) -> None:
    if wanted is not None and wanted != actual:
        raise ModelError(
            f"num_classes {wanted} does not match {source}, which has {actual} classes"
        )


def _plain_class_names(entry: ModelEntry, path: Path, n: int) -> tuple[str, ...]:
    sidecar = Path(f"{path}.classes.json")
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read class names {sidecar}: {_one_line(exc)}") from exc
        if isinstance(data, Mapping):
            data = data.get("class_names")
        if not isinstance(data, list) or not all(isinstance(c, str) for c in data):
            raise ModelError(f"{sidecar} must hold a JSON list of class names")
        if len(data) != n:
            raise ModelError(f"{sidecar} lists {len(data)} class names but {path} has {n} classes")
        return tuple(data)
    known = entry.default_class_names()
    if known is not None and len(known) == n:
        return known
    return generic_class_names(n)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _shapes(model: nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in model.state_dict(keep_vars=True).items()}


@cache
def _expected_shapes(entry: ModelEntry, num_classes: int) -> dict[str, torch.Size]:
    """State-dict shapes of the architecture, from a build on the meta device (no memory)."""
    with torch.device("meta"):
        model = entry.build(num_classes)
    return _shapes(model)


@cache
def _class_dependent_keys(entry: ModelEntry) -> tuple[tuple[str, int, int, int], ...]:
    """Keys whose shape grows with the class count: (key, dim, a, b) with size = a * n + b."""
    s2, s3 = _expected_shapes(entry, 2), _expected_shapes(entry, 3)
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


def _infer_num_classes(entry: ModelEntry, state: Mapping[str, torch.Tensor]) -> int | None:
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


def _fit_state_dict(
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
