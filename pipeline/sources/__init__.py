"""Frame sources and :func:`open_source`, which picks one from a URI.

URI forms:

* an existing directory, or ``file://DIR``: :class:`~pipeline.sources.image_folder.ImageFolderSource`
* a plain path or ``file://PATH``: :class:`~pipeline.sources.video_file.VideoFileSource`
* ``SCHEME://...`` or ``SCHEME:...`` for a scheme in :data:`SOURCE_SCHEMES`, e.g.
  ``synthetic://...``; live network streams (``rtsp://``, ``rtsps://``, ``rtmp://``,
  ``http(s)://``, ``udp://``, ``srt://``, ``tcp://``, ...):
  :class:`~pipeline.sources.stream.StreamSource`; cameras (``camera:N``, ``camera:/dev/PATH``
  and ``/dev/videoN`` / ``/dev/v4l/...`` paths): :class:`~pipeline.sources.camera.CameraSource`;
  more with :func:`register_source`.

Loaders are imported lazily, so a scheme whose module needs optional packages costs nothing
until it is used.

Sources that reconnect take their timeouts and backoff as one
:class:`~pipeline.sources.reconnect.ReconnectPolicy` (``reconnect=``); :func:`open_source`
also accepts its fields as loose keywords (``open_source(url, read_timeout_s=2)``) and folds
them into that policy.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

from pipeline.sources.base import Frame, Source, SourceError, SourceInfo

__all__ = [
    "Frame",
    "Source",
    "SourceError",
    "SourceInfo",
    "SOURCE_SCHEMES",
    "open_source",
    "reconnects",
    "register_source",
]

SourceLoader = Callable[..., Source]
"""Builds a source: ``loader(uri, **options) -> Source``."""

# live network streams: anything FFmpeg opens from a URL (pipeline/sources/stream.py)
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "rtp", "srt", "tcp")

# scheme (lower case, without ":" or "//") -> loader, or "module:attribute" imported on use.
SOURCE_SCHEMES: dict[str, SourceLoader | str] = {
    "synthetic": "pipeline.sources.synthetic:SyntheticSource",
    **{scheme: "pipeline.sources.stream:StreamSource" for scheme in NETWORK_SCHEMES},
    # V4L2 cameras: camera:N, camera:/dev/PATH (and /dev/videoN paths, see open_source)
    "camera": "pipeline.sources.camera:CameraSource",
}

# Device paths that name a camera rather than a file.
_CAMERA_DEVICE = re.compile(r"^/dev/(video\d+|v4l/.+)$")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(//)?")


def reconnects(uri: str) -> bool:
    """True for URIs of feeds that reconnect when lost (network streams and cameras), which
    take a ``reconnect`` policy (timeouts, backoff); files, folders and synthetic sources end."""
    uri = str(uri)
    if _CAMERA_DEVICE.match(uri):
        return True
    match = _SCHEME.match(uri)
    return bool(match) and match.group(1).lower() in (*NETWORK_SCHEMES, "camera")


def register_source(scheme: str, loader: SourceLoader | str) -> None:
    """Make ``scheme://...`` (or ``scheme:...``) URIs open with ``loader(uri, **options)``.

    ``loader`` is a callable or a ``"package.module:Name"`` string imported when first used.
    Registering an existing scheme replaces it.
    """
    scheme = scheme.lower().rstrip(":/")
    if not _SCHEME.match(scheme + ":"):
        raise ValueError(f"invalid source scheme {scheme!r}")
    if scheme == "file":
        raise ValueError("the file scheme is built in")
    SOURCE_SCHEMES[scheme] = loader


def _resolve(scheme: str) -> SourceLoader:
    loader = SOURCE_SCHEMES[scheme]
    if not isinstance(loader, str):
        return loader
    module_name, _, attr = loader.partition(":")
    try:
        module = importlib.import_module(module_name)
        resolved = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise SourceError(f"source scheme '{scheme}' is not available: {exc}") from exc
    SOURCE_SCHEMES[scheme] = resolved
    return resolved


def _keywords(factory: Callable[..., object]) -> set[str] | None:
    """The keyword parameters ``factory`` takes (``None``: unknown, or it takes any)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {
        name
        for name, p in params.items()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }


def _fold_reconnect(factory: Callable[..., object], options: dict) -> dict:
    """``options`` with loose reconnect fields (``read_timeout_s=2``, ...) folded into the
    ``reconnect`` policy, for sources that take one (over a ``reconnect`` given too)."""
    if "reconnect" not in (_keywords(factory) or ()):
        return options
    from pipeline.sources.reconnect import RECONNECT_OPTIONS, ReconnectPolicy

    loose = {name: options[name] for name in RECONNECT_OPTIONS if name in options}
    if not loose:
        return options
    folded = {name: value for name, value in options.items() if name not in loose}
    folded["reconnect"] = dataclasses.replace(folded.get("reconnect") or ReconnectPolicy(), **loose)
    return folded


def _check_options(kind: str, factory: Callable[..., object], options: dict) -> None:
    """Reject options the source does not take, naming them (instead of a TypeError)."""
    if not options:
        return
    accepted = _keywords(factory)
    if accepted is None:
        return
    unknown = sorted(set(options) - accepted)
    if unknown:
        if "reconnect" in accepted:  # open_source folds these into it
            from pipeline.sources.reconnect import RECONNECT_OPTIONS

            accepted |= set(RECONNECT_OPTIONS)
        known = ", ".join(sorted(accepted - {"path", "uri", "self"})) or "none"
        raise SourceError(
            f"unknown option(s) {', '.join(unknown)} for {kind} source (accepted: {known})"
        )


def _open_path(path: str, options: dict) -> Source:
    from pipeline.sources.image_folder import ImageFolderSource
    from pipeline.sources.video_file import VideoFileSource

    if os.path.isdir(path):
        _check_options("image folder", ImageFolderSource, options)
        return ImageFolderSource(path, **options)
    _check_options("video file", VideoFileSource, options)
    return VideoFileSource(path, **options)


def _supported() -> str:
    schemes = ["file://"] + [f"{s}://" for s in sorted(SOURCE_SCHEMES)]
    return ", ".join(schemes + ["a path to a video file or an image folder"])


def open_source(uri: str, **options: object) -> Source:
    """Open the source a URI names (see the module docs); ``options`` go to its constructor.

    Raises:
        SourceError: unknown scheme, missing path, or the source's own open error.
    """
    uri = str(uri)
    if not uri.strip():
        raise SourceError("empty source URI")
    match = _SCHEME.match(uri)
    scheme = match.group(1).lower() if match else None

    if scheme == "file" and match and match.group(2):
        path = uri[match.end() :]
        if path.startswith("localhost/"):
            path = path[len("localhost") :]
        if not os.path.exists(path) and os.path.exists(unquote(path)):
            path = unquote(path)
        if not os.path.exists(path):
            raise SourceError(f"source not found: {path}")
        return _open_path(path, options)

    if scheme is not None and scheme in SOURCE_SCHEMES:
        loader = _resolve(scheme)
        options = _fold_reconnect(loader, options)
        _check_options(f"{scheme}://", loader, options)
        return loader(uri, **options)

    if match and match.group(2):  # "foo://..." with an unknown scheme
        raise SourceError(
            f"unknown source scheme '{scheme}://' in '{uri}' (supported: {_supported()})"
        )

    if _CAMERA_DEVICE.match(uri) and "camera" in SOURCE_SCHEMES:
        loader = _resolve("camera")
        options = _fold_reconnect(loader, options)
        _check_options("camera", loader, options)
        return loader(uri, **options)

    if os.path.exists(uri):
        return _open_path(uri, options)
    # "camera:0"-like names (scheme followed by ":" but no "//") that are not files either;
    # one-letter schemes are Windows drive letters ("C:\\video.mp4").
    if match and len(scheme or "") > 1 and not Path(uri).suffix:
        raise SourceError(
            f"unknown source scheme '{scheme}:' in '{uri}' (supported: {_supported()})"
        )
    raise SourceError(f"source not found: {uri}")
