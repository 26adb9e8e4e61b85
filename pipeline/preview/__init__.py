"""Live preview in a browser (``observability.preview``, ``--preview HOST:PORT``).

The publish stage serves, per stream, the overlay frames as MJPEG and the live stats as
JSON over plain HTTP (README "Live preview"): :mod:`.hub` holds the latest frame of each
stream (the publish loop only swaps a reference), :mod:`.server` serves it, and
:mod:`.stage` is the few calls the publish stage makes.
"""

from __future__ import annotations

from pipeline.errors import ConfigError
from pipeline.transport.sockets import check_tcp_port_free, http_address

KEY = "observability.preview"


def preview_address(address: str, allow_remote: bool) -> tuple[str, int]:
    """``HOST:PORT`` of the preview as ``(host, port)`` (``sockets.http_address``)."""
    return http_address(KEY, address, allow_remote, "the preview", 8090)


def check_preview_port(address: str, allow_remote: bool) -> None:
    """Fail now (before any stage starts) if the preview cannot bind ``address``."""
    host, port = preview_address(address, allow_remote)
    try:
        check_tcp_port_free(host, port)
    except (OSError, OverflowError) as err:
        raise ConfigError(bind_error(address, err)) from None


def bind_error(address: str, err: BaseException) -> str:
    reason = getattr(err, "strerror", None) or str(err)
    return f"{KEY}: cannot serve the preview on '{address}': {reason}"
