"""Joining the Ray cluster: an existing one (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``)
or, with no address, a local one started for this run and stopped with it.

An address is checked with a plain TCP connect (a few seconds) before Ray is asked to join:
``ray.init`` on an address nobody answers keeps retrying for a long time, and the user
should get one line instead.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from pipeline.fleet.files import FleetInputError

__all__ = ["ClusterError", "check_address", "connect", "disconnect", "cluster_gpus"]

CONNECT_TIMEOUT_S = 5.0
_joined = False  # whether connect() called ray.init (else a caller's Ray session is used)


class ClusterError(FleetInputError):
    """The Ray cluster cannot be reached or joined (exit 2)."""


def _host_port(address: str) -> tuple[str, int]:
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"bad --address {address}: use auto, HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def check_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail with one line when ``address`` (not ``auto``) does not accept a connection."""
    if address == "auto":
        return
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        if isinstance(err, TimeoutError | socket.timeout):
            reason = f"no answer in {timeout_s:.0f} s"
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {reason}") from err


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address``, or start a local one (``num_cpus``: its CPU budget;
    default: every core). In a process already in a Ray session (an application that
    embeds the fleet), that session is used. Raises ClusterError with one line on failure."""
    global _joined
    import ray

    if ray.is_initialized():
        return
    if address is not None:
        check_address(address)

    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False,
                              "configure_logging": True}
    if address is None:
        kwargs.update(num_cpus=num_cpus, include_dashboard=False)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ClusterError(f"cannot join the Ray cluster at {address or 'local'}: {first}") from err
    _joined = True


def disconnect() -> None:
    """Leave the cluster joined by :func:`connect` (and stop it when it was a local one)."""
    global _joined
    import ray

    if _joined and ray.is_initialized():
        ray.shutdown()
    _joined = False


def cluster_gpus() -> float:
    """GPUs the cluster has in total (0 on CPU-only clusters)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))
