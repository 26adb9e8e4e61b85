"""Inference backends and ``create_backend``, the one way the runtime makes one.

Backends register a factory ``(model, weights, device, **options) -> Backend`` and an
availability probe under a name. ``"auto"`` takes the first available of
``AUTO_ORDER`` (TensorRT, OpenVINO, ONNX Runtime, PyTorch), or with a probe the fastest
(``autoselect``); a candidate that fails to start with a ``ModelError`` is logged and the
next one is tried. Options are given flat: the shared ones (``options.ModelOptions``) and
the backend's own; a name the backend does not take fails before anything loads.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from engines.backends.base import Backend, ModelSpec
from engines.backends.options import DetectionOptions, ModelOptions, check_option_names
from engines.errors import ModelError

__all__ = [
    "AUTO_ORDER",
    "AutoProbe",
    "Backend",
    "BackendFactory",
    "DetectionOptions",
    "ModelOptions",
    "ModelSpec",
    "available_backends",
    "backend_names",
    "create_backend",
    "register_backend",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AutoProbe:
    """What ``backend="auto"`` times the candidates on: frames like the ones to come."""

    images: tuple[Any, ...]  # HxWx3 uint8 RGB frames of the source's size
    batch_size: int = 1
    threads: int = 1  # the model's thread budget (part of the remembered key)


def _measured_auto(model: str, weights: Any, device: str, probe: AutoProbe, options: dict[str, Any]) -> Backend:
    from engines.backends.autoselect import SelectionKey, select_backend

    candidates = available_backends(device)
    height, width = probe.images[0].shape[:2]
    key = SelectionKey.make(model, weights, device, probe.batch_size, (height, width), probe.threads,
                            {k: v for k, v in options.items() if k != "calibration_frames"})

    def open_candidate(name: str) -> Backend:
        factory = _BACKENDS[name].factory
        assert factory is not None
        return factory(model, weights, device, **options)

    try:
        selection, opened = select_backend(key, candidates, open_candidate, probe.images)
    except RuntimeError as exc:
        raise ModelError(f"backend auto: {exc}") from None
    log.info("backend: %s (auto: %s)", selection.backend, selection.reason())
    chosen = opened if opened is not None else open_candidate(selection.backend)
    chosen.selection = f"auto: {selection.reason()}"
    return chosen


BackendFactory = Callable[..., Backend]

#: Preference of ``backend="auto"``, best first.
AUTO_ORDER = ("tensorrt", "openvino", "onnxruntime", "pytorch")


@dataclass(frozen=True)
class _Registered:
    factory: BackendFactory | None  # None: name reserved, implementation not there yet
    is_available: Callable[[torch.device | str], bool]


def _always(_device: torch.device | str) -> bool:
    return True


def _factory(name: str, module: str, class_name: str) -> BackendFactory:
    """A factory that imports the backend's module only when it is used (heavy imports), and
    rejects an option the backend does not take before it starts anything."""

    def make(model: str, weights: Any, device: str | torch.device, **options: Any) -> Backend:
        cls = getattr(importlib.import_module(module), class_name)
        check_option_names(name, cls, options)
        return cls(model, weights, device, **options)

    return make


def _probe(module: str, function: str) -> Callable[[torch.device | str], bool]:
    """An availability probe in the backend's module, imported when asked."""

    def available(device: torch.device | str) -> bool:
        return bool(getattr(importlib.import_module(module), function)(device))

    return available


_PACKAGE = "engines.backends"
_BACKENDS: dict[str, _Registered] = {
    "pytorch": _Registered(
        _factory("pytorch", f"{_PACKAGE}.torch_backend", "TorchBackend"), _always
    ),
    "onnxruntime": _Registered(
        _factory("onnxruntime", f"{_PACKAGE}.onnxruntime_backend", "OnnxRuntimeBackend"),
        _probe(f"{_PACKAGE}.onnxruntime_backend", "onnxruntime_available"),
    ),
    "tensorrt": _Registered(
        _factory("tensorrt", f"{_PACKAGE}.tensorrt_backend", "TensorRTBackend"),
        _probe(f"{_PACKAGE}.tensorrt_backend", "tensorrt_available"),
    ),
    "openvino": _Registered(
        _factory("openvino", f"{_PACKAGE}.openvino_backend", "OpenVINOBackend"),
        _probe(f"{_PACKAGE}.openvino_backend", "openvino_available"),
    ),
}


def register_backend(
    name: str,
    factory: BackendFactory,
    is_available: Callable[[torch.device | str], bool] | None = None,
) -> None:
    """Register (or replace) a backend. ``is_available(device)`` tells ``"auto"`` whether it
    can run on that device here (default: always)."""
    _BACKENDS[name] = _Registered(factory, is_available or _always)


def backend_names() -> list[str]:
    """Every backend name ``create_backend`` understands, including ``"auto"``."""
    return [*_BACKENDS, "auto"]


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on ``device`` here, in ``AUTO_ORDER`` preference."""
    order = [n for n in AUTO_ORDER if n in _BACKENDS] + [
        n for n in _BACKENDS if n not in AUTO_ORDER
    ]
    return [
        n for n in order if _BACKENDS[n].factory is not None and _BACKENDS[n].is_available(device)
    ]


def create_backend(
    model: str,
    weights: str | None = "default",
    backend: str = "pytorch",
    device: str = "cpu",
    *,
    probe: AutoProbe | None = None,
    **options: Any,
) -> Backend:
    """Build the inference backend ``backend`` for registry model ``model``.

    ``weights``: see ``engines.weights.resolve_weights``. ``backend``: ``"pytorch"``,
    ``"onnxruntime"``, ``"openvino"``, ``"tensorrt"`` or ``"auto"`` (best available; logs
    one line ``backend: <name> ...``). ``options`` go to the backend, flat: the shared
    ones of ``ModelOptions`` / ``DetectionOptions`` (sizes, thresholds, threads, ...; or a
    whole ``model_options=ModelOptions(...)``) and the backend's own (its constructor's
    keyword-only parameters, e.g. ``precision``). Raises ``ModelError`` for an unknown
    model / backend / option, a bad option value or an unusable device.
    """
    from engines.registry import get_model_entry  # lazy: the registry imports backends.base

    get_model_entry(model)  # unknown model: fail before choosing a backend
    if backend == "auto" and probe is not None:
        return _measured_auto(model, weights, device, probe, options)
    if backend == "auto":
        candidates = available_backends(device)
        error: ModelError | None = None
        for name in candidates:
            factory = _BACKENDS[name].factory
            assert factory is not None
            try:
                instance = factory(model, weights, device, **options)
            except ModelError as exc:
                if name == candidates[-1]:
                    raise
                log.warning("backend %s unavailable (%s); trying the next one", name, exc)
                error = exc
                continue
            log.info("backend: %s (auto)", name)
            return instance
        raise error or ModelError(f"no inference backend can run on device {device}")

    registered = _BACKENDS.get(backend)
    if registered is None:
        raise ModelError(f"unknown backend '{backend}' (choices: {', '.join(backend_names())})")
    if registered.factory is None:
        raise ModelError(f"backend '{backend}' is not available yet")
    return registered.factory(model, weights, device, **options)
