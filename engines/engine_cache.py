"""On-disk caches for compiled models: the cache root, ONNX export dirs, TensorRT engines.

Layout under the cache root (``$SEGSTREAM_CACHE``, default ``~/.cache/segstream``)::

    onnx/<model>-<weights tag>/         an ONNX export (see engines.export) + manifest.json
    tensorrt/<model>-<weights tag>/     serialized engines + one sidecar JSON each,
                                        timing-<TensorRT version>-<GPU>.cache

A TensorRT engine is only valid for the exact ONNX graph, TensorRT version, GPU model and
compute capability, precision and optimization-profile shapes it was built with.
``EngineKey`` holds all of them; its SHA-256 (``digest``) names the engine file and the
sidecar ``<engine>.json`` stores the full key plus the engine's own SHA-256.
``EngineCache.load`` returns an engine only when the sidecar's key equals the wanted key
and the bytes hash to what the sidecar says; anything stale, foreign, truncated or
hand-edited is rebuilt (``get_or_build``), never deserialized.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CACHE_ENV",
    "EngineCache",
    "EngineKey",
    "ProfileShapes",
    "atomic_write_bytes",
    "cache_root",
    "file_lock",
    "onnx_cache_dir",
    "safe_name",
    "tensorrt_cache_dir",
]

log = logging.getLogger(__name__)

#: Environment variable that overrides the cache root.
CACHE_ENV = "SEGSTREAM_CACHE"
SIDECAR_FORMAT = "segstream-tensorrt-engine"
SIDECAR_VERSION = 1

#: Per input tensor: (min, opt, max) shapes of one optimization profile.
ProfileShapes = Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]]


def cache_root() -> Path:
    """``$SEGSTREAM_CACHE`` if set, else ``~/.cache/segstream``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "segstream"


def safe_name(text: str) -> str:
    """``text`` reduced to characters safe in a file name (others become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", text).strip(".") or "_"


def onnx_cache_dir(model_name: str, weights_tag: str, root: Path | None = None) -> Path:
    """Default ONNX export directory of a model + weights: ``<root>/onnx/<model>-<tag>``."""
    return (root or cache_root()) / "onnx" / safe_name(f"{model_name}-{weights_tag}")


def tensorrt_cache_dir(model_name: str, weights_tag: str, root: Path | None = None) -> Path:
    """Default engine directory of a model + weights: ``<root>/tensorrt/<model>-<tag>``."""
    return (root or cache_root()) / "tensorrt" / safe_name(f"{model_name}-{weights_tag}")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` body.

    Serialises exports / engine builds of the same item across processes (several
    infer stages starting together). ``timeout`` seconds (None: wait forever) raises
    ``TimeoutError``.
    """
    lock_path = Path(path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline else 0))
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"could not lock {lock_path} in {timeout} s") from None
                time.sleep(0.1)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _canonical_profiles(profiles: Sequence[ProfileShapes]) -> list[dict[str, list[list[int]]]]:
    return [
        {name: [[int(d) for d in s] for s in shapes] for name, shapes in sorted(p.items())}
        for p in profiles
    ]


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized TensorRT engine depends on.

    ``profiles``: one mapping per optimization profile, input name -> (min, opt, max).
    ``extra``: further build settings that change the engine (INT8 calibration data,
    workspace limits, ...), JSON-serialisable.
    """

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: tuple[ProfileShapes, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The key as plain JSON data (what the sidecar stores)."""
        return {
            "onnx_sha256": self.onnx_sha256,
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "precision": self.precision,
            "profiles": _canonical_profiles(self.profiles),
            "extra": json.loads(json.dumps(dict(self.extra), sort_keys=True)),
        }

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of the key."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


class EngineCache:
    """Serialized engines in one directory, each verified against its sidecar on load."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()

    def engine_path(self, name: str, key: EngineKey) -> Path:
        """``<dir>/<name>-<precision>-<digest[:16]>.engine``."""
        return self.directory / safe_name(f"{name}-{key.precision}-{key.digest[:16]}.engine")

    @staticmethod
    def sidecar_path(engine_path: Path) -> Path:
        """The sidecar JSON of an engine file."""
        return engine_path.with_name(engine_path.name + ".json")

    def load(self, name: str, key: EngineKey) -> bytes | None:
        """The cached engine for ``key``, or None if absent, stale, foreign or corrupt."""
        path = self.engine_path(name, key)
        sidecar = self.sidecar_path(path)
        if not path.is_file() or not sidecar.is_file():
            return None
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("engine cache: unreadable sidecar %s (%s); rebuilding", sidecar, exc)
            return None
        if (
            not isinstance(meta, dict)
            or meta.get("format") != SIDECAR_FORMAT
            or meta.get("version") != SIDECAR_VERSION
        ):
            log.warning("engine cache: %s is not a current sidecar; rebuilding", sidecar)
            return None
        if meta.get("key") != key.as_dict() or meta.get("key_sha256") != key.digest:
            log.warning("engine cache: %s was built for another configuration; rebuilding", path)
            return None
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("engine_sha256"):
            log.warning("engine cache: %s does not match its sidecar hash; rebuilding", path)
            return None
        return data

    def store(self, name: str, key: EngineKey, data: bytes) -> Path:
        """Write an engine and its sidecar (engine first, sidecar last, both atomic)."""
        path = self.engine_path(name, key)
        atomic_write_bytes(path, data)
        meta = {
            "format": SIDECAR_FORMAT,
            "version": SIDECAR_VERSION,
            "name": name,
            "key": key.as_dict(),
            "key_sha256": key.digest,
            "engine_sha256": hashlib.sha256(data).hexdigest(),
            "engine_bytes": len(data),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_bytes(self.sidecar_path(path), (json.dumps(meta, indent=2) + "\n").encode())
        return path

    def get_or_build(
        self, name: str, key: EngineKey, build: Callable[[], bytes], *, rebuild: bool = False
    ) -> tuple[bytes, Path, bool]:
        """The engine for ``key``: from the cache, else ``build()`` and store it.

        Returns ``(engine bytes, path, built)``. Builds of the same engine in several
        processes are serialised with a lock file; the second one finds the first's result.
        """
        path = self.engine_path(name, key)
        with file_lock(path.with_name(path.name + ".lock")):
            if not rebuild:
                data = self.load(name, key)
                if data is not None:
                    return data, path, False
            data = build()
            if not data:
                raise RuntimeError(f"building engine {name} produced no data")
            return data, self.store(name, key, data), True
