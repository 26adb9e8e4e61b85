"""The socket file of a stage's ipc:// bind, removed when the stage closes: ZeroMQ
leaves it behind."""

from __future__ import annotations

import os

import zmq


def bound_ipc_file(sock: zmq.Socket | None) -> tuple[str, int] | None:
    """The socket file ``sock``'s ipc:// bind created, as (path, inode), so that
    :func:`remove_ipc_file` removes it only if it is still ours (not rebound since)."""
    if sock is None:
        return None
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    path = endpoint.removeprefix("ipc://")
    if path == endpoint or path.startswith("@"):  # tcp, or Linux's abstract namespace
        return None
    try:
        return path, os.stat(path).st_ino
    except OSError:
        return None


def remove_ipc_file(bound: tuple[str, int] | None) -> None:
    if bound is None:
        return
    path, inode = bound
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass  # already gone
