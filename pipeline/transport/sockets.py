"""ZeroMQ socket factories with the pipeline's policies, and message send/receive.

Policies (see DESIGN.md): queues between stages are a few messages deep (small high-water
marks on both ends), PUSH sockets set IMMEDIATE so nothing queues for a peer that is not
connected yet, and LINGER is bounded so closing never hangs on a dead peer.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse

import zmq

from pipeline import messages
from pipeline.errors import ConfigError

LINGER_MS = 2000  # control/event sockets: flush the last messages, never hang on a dead peer


def _base(ctx: zmq.Context, kind: int, hwm: int) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    return sock


def push(ctx: zmq.Context, endpoint: str, hwm: int, bind: bool = False, lossless: bool = False) -> zmq.Socket:
    """A PUSH end of a hop (connects by default: the receiver owns the endpoint).

    ``lossless`` hops keep unsent messages at close until the peer takes them (a stage
    that finished must not drop the frames a slower stage has not pulled yet); a run whose
    downstream died is torn down by the supervisor, so this cannot hang a run.
    """
    sock = _base(ctx, zmq.PUSH, hwm)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    if lossless:
        sock.setsockopt(zmq.LINGER, -1)
    _attach(sock, endpoint, bind)
    return sock


def pull(ctx: zmq.Context, endpoint: str, hwm: int, bind: bool = True) -> zmq.Socket:
    """A PULL end of a hop (binds by default)."""
    sock = _base(ctx, zmq.PULL, hwm)
    _attach(sock, endpoint, bind)
    return sock


def publisher(
    ctx: zmq.Context, endpoint: str, hwm: int = 64, prepare: Callable[[zmq.Socket], Any] | None = None
) -> zmq.Socket:
    """A PUB socket: drops for slow subscribers at its high-water mark, never blocks.

    ``prepare`` runs before ``bind`` (CURVE keys must be set before the socket attaches).
    """
    sock = _base(ctx, zmq.PUB, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    if prepare is not None:
        prepare(sock)
    _attach(sock, endpoint, bind=True)
    return sock


def subscriber(
    ctx: zmq.Context,
    endpoint: str,
    topics: Sequence[str] = ("",),
    hwm: int = 1000,
    prepare: Callable[[zmq.Socket], Any] | None = None,
) -> zmq.Socket:
    """A SUB socket connected to ``endpoint`` and subscribed to ``topics`` ('' = all)."""
    sock = _base(ctx, zmq.SUB, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
    if prepare is not None:
        prepare(sock)
    sock.connect(endpoint)
    return sock


def _attach(sock: zmq.Socket, endpoint: str, bind: bool) -> None:
    try:
        if bind:
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)
    except zmq.ZMQError as err:
        sock.close(0)
        verb = "bind" if bind else "connect"
        raise ConfigError(f"cannot {verb} ZeroMQ endpoint '{endpoint}': {err}") from None


def send(sock: zmq.Socket, header: dict[str, Any], buffers: Sequence[Any] = (), flags: int = 0) -> None:
    """Send ``[header, *buffers]``; buffers go zero-copy."""
    sock.send_multipart(messages.encode(header, buffers), flags=flags, copy=False)


def recv(sock: zmq.Socket, flags: int = 0) -> tuple[dict[str, Any], list[memoryview]]:
    """Receive one ``[header, *buffers]`` message."""
    return messages.decode(sock.recv_multipart(flags=flags, copy=False))


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ipc:// and tcp:// endpoints bound to a loopback address."""
    if endpoint.startswith("ipc://"):
        return True
    host = urlparse(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', interface names and hostnames may reach other machines


def http_address(key: str, address: str, allow_remote: bool, what: str, example_port: int) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) of an HTTP server we serve (``what``: e.g.
    "metrics") as ``(host, port)``; a :class:`ConfigError` naming config ``key`` if it is not
    one, or if HOST is not loopback and ``allow_remote`` is off."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{key}: '{address}' is not HOST:PORT (e.g. 127.0.0.1:{example_port})")
    endpoint = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
    if not allow_remote and not is_loopback_endpoint(endpoint):
        raise ConfigError(f"{key}: '{address}' is not a loopback address: set output.allow_remote "
                          f"(--allow-remote) to serve {what} on it")
    return host, int(port)


def check_tcp_port_free(host: str, port: int) -> None:
    """Raise ``OSError`` (``OverflowError`` for a bad port) if a TCP server could not bind
    ``(host, port)`` now. For servers a stage binds later: the error comes before any stage
    starts (a port taken in between still fails that stage: a small race)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        probe.bind((host, port))


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, for a server that binds it a moment later."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
