"""``backend: auto``: the fastest installed backend, chosen by measurement and remembered.

Which engine is fastest depends on the model, the input size, the batch size, the device,
the machine and the library versions (on one 2-core CPU PyTorch beat ONNX Runtime on the
demo Mask R-CNN, on others the order flips), so a fixed preference order is wrong
somewhere. Instead, the first time a combination is seen every available backend is
opened and timed on the same probe batch (real-looking frames given by the caller), and
the winner is written to ``<cache root>/autoselect.json`` under a key holding all of the
above. Later runs read the answer and open only the winner. The log line says which
backend runs and why: the figures measured, or where the cached decision came from.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.backends.base import Backend
from engines.engine_cache import atomic_write_bytes, cache_root, file_lock

log = logging.getLogger(__name__)

CACHE_FILE = "autoselect.json"
TIMED_BATCHES = 3  # after one warm-up batch; the median is kept
_VERSIONED = ("torch", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt")


def machine_name() -> str:
    """The processor model (or GPU) a timing belongs to."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    found = {}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


@dataclass(frozen=True)
class SelectionKey:
    """Everything a measured decision depends on."""

    model: str
    weights: str
    device: str
    batch_size: int
    frame_size: tuple[int, int]  # (height, width) of the frames the probe batch holds
    threads: int
    options: str  # the backend options, canonical JSON
    machine: str
    versions: str  # installed engine versions, canonical JSON

    @classmethod
    def make(cls, model: str, weights: Any, device: str, batch_size: int, frame_size: tuple[int, int],
             threads: int, options: dict[str, Any]) -> SelectionKey:
        return cls(model, str(weights), str(device), int(batch_size), (int(frame_size[0]), int(frame_size[1])),
                   int(threads), json.dumps(options, sort_keys=True, default=str), machine_name(),
                   json.dumps(_versions(), sort_keys=True))

    def text(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True, default=list)


@dataclass(frozen=True)
class Selection:
    """The chosen backend, the figures behind the choice, and where they came from."""

    backend: str
    ms_per_frame: dict[str, float]  # every candidate that ran; failed ones are absent
    failed: dict[str, str]  # candidate -> why it could not run
    measured_at: str  # ISO date of the measurement
    cached: bool

    def reason(self) -> str:
        figures = ", ".join(f"{name} {ms:.1f}" for name, ms in sorted(self.ms_per_frame.items(), key=lambda i: i[1]))
        source = f"cached measurement of {self.measured_at}" if self.cached else "measured now"
        failed = "".join(f"; {name} unavailable ({why})" for name, why in self.failed.items())
        return f"fastest of ms/frame: {figures} ({source}){failed}"


def _cache_path() -> Path:
    return cache_root() / CACHE_FILE


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def time_backend(backend: Backend, prepare: Callable[[np.ndarray], torch.Tensor],
                 images: Sequence[np.ndarray], batch_size: int) -> float:
    """Median milliseconds per frame of ``backend`` on ``images`` in batches of ``batch_size``."""
    from engines.transform import batch_images

    prepared = [prepare(image) for image in images]
    batches = [prepared[i:i + batch_size] for i in range(0, len(prepared), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or batches[:1]

    def run(batch: list[torch.Tensor]) -> None:
        tensor, sizes = batch_images(batch, backend.spec.size_divisible)
        backend.infer(tensor.to(backend.device), sizes)
        if backend.device.type == "cuda":
            torch.cuda.synchronize()

    run(batches[0])  # warm-up: lazy initialisation, kernel selection
    times = []
    for i in range(TIMED_BATCHES):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - start) * 1000 / len(batch))
    return float(np.median(times))


def select_backend(
    key: SelectionKey,
    candidates: Sequence[str],
    open_candidate: Callable[[str], Backend],
    probe_images: Sequence[np.ndarray],
) -> tuple[Selection, Backend | None]:
    """The fastest of ``candidates`` for ``key``: from the cache, or by timing each one.

    ``open_candidate(name)`` opens a backend (it may raise: that candidate is skipped and
    the reason kept). Returns the selection and, when it was measured now, the winner
    still open (the caller uses it rather than opening it again); None when cached.
    """
    path = _cache_path()
    entry = _read_cache(path).get(key.text())
    if entry and entry.get("backend") in candidates:
        return Selection(entry["backend"], entry["ms_per_frame"], entry.get("failed", {}),
                         entry["measured_at"], cached=True), None
    if not probe_images:
        raise ValueError("backend auto-selection needs probe images to time the candidates on")
    from engines.transform import prepare_image

    timings: dict[str, float] = {}
    failed: dict[str, str] = {}
    best: tuple[float, str, Backend] | None = None
    for name in candidates:
        try:
            backend = open_candidate(name)
            ms = time_backend(backend, lambda im, b=backend: prepare_image(im, b.spec, device=b.device),
                              probe_images, key.batch_size)
        except Exception as exc:  # noqa: BLE001 - any failure just rules the candidate out
            failed[name] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.info("auto backend: %s cannot run here: %s", name, failed[name])
            continue
        timings[name] = round(ms, 2)
        log.info("auto backend: %s %.1f ms/frame at batch %d", name, ms, key.batch_size)
        if best is None or ms < best[0]:
            if best is not None:
                best[2].close()
            best = (ms, name, backend)
        else:
            backend.close()
    if best is None:
        raise RuntimeError("no backend could run: " + "; ".join(f"{n}: {w}" for n, w in failed.items()))
    selection = Selection(best[1], timings, failed, datetime.now(UTC).date().isoformat(), cached=False)
    _store(path, key, selection)
    return selection, best[2]


def _store(path: Path, key: SelectionKey, selection: Selection) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path.with_suffix(".lock"), timeout=30):
            data = _read_cache(path)
            data[key.text()] = {"backend": selection.backend, "ms_per_frame": selection.ms_per_frame,
                                "failed": selection.failed, "measured_at": selection.measured_at,
                                "pid": os.getpid()}
            atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())
    except (OSError, TimeoutError) as exc:  # a read-only cache only costs a re-measurement
        log.warning("auto backend: could not save the decision in %s: %s", path, exc)
