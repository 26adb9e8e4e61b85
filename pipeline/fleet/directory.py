"""The stream directory: one HTTP endpoint that says where every stream is published.

The fleet driver serves it (``--directory HOST:PORT``)::

    GET /streams        {"NAME": ENTRY, ...}
    GET /streams/NAME   ENTRY, or 404 {"error": "unknown stream NAME"}

    ENTRY = {"endpoint": "tcp://10.0.0.5:40123",  ZeroMQ PUB socket to connect a SUB to
             "topic": "0",                         the stream's topic (subscribe "0" + NUL)
             "status": "live",                     live | restarting | failed
             "node": "<ray node id>", "host": "10.0.0.5",
             "worker": 1, "since": 1795994895.6,   Unix s the current pipeline started
             "uri": "rtsp://...", "error": null}   failed: the pipeline's one-line reason

A consumer looks a stream up, subscribes, and looks it up again when ``status`` is not
``live`` or frames stop: after a node loss the entry turns ``restarting``, then ``live``
with the new endpoint (``since`` moves on). :func:`fetch_streams` is a client for it.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline.errors import ConfigError
from pipeline.fleet.files import FleetInputError
from pipeline.transport.sockets import http_address

__all__ = ["StreamDirectory", "DirectoryServer", "directory_entries", "fetch_streams",
           "parse_listen"]


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); raises FleetInputError with one line."""
    try:  # any host: the directory is meant for consumers on other hosts too
        return http_address("--directory", text, True, "the directory", 8470)
    except ConfigError:
        raise FleetInputError(f"bad --directory {text}: use HOST:PORT (port 0: any free)") from None


def directory_entries(info: dict[str, Any] | None, streams: list[dict[str, Any]],
                      previous: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The entries of one worker's streams, from its ``info()`` (None: the worker is
    unreachable, i.e. restarting; its streams keep their last endpoint until it is back)."""
    out = {}
    for topic, stream in enumerate(streams):
        name = stream["name"]
        if info is None:
            old = previous.get(name, {"endpoint": None, "node": None, "host": None,
                                      "since": None, "error": None})
            out[name] = {**old, "topic": str(topic), "uri": stream["uri"],
                         "status": "restarting"}
            continue
        out[name] = {
            "endpoint": info["endpoint"], "topic": str(topic), "uri": stream["uri"],
            "status": "live" if info["running"] else "restarting" if info.get("relaunching") else "failed",
            "node": info["node"],
            "host": info["host"], "worker": info["worker"], "since": info["since"],
            "error": info.get("error"),
        }
    return out


class StreamDirectory:
    """The current entries, shared by the driver's poll loop and the HTTP threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}

    def update(self, entries: dict[str, dict[str, Any]]) -> None:
        """Replace the entries of these streams."""
        with self._lock:
            self._entries.update(entries)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """A copy of every entry."""
        with self._lock:
            return {k: dict(v) for k, v in self._entries.items()}


class _Handler(BaseHTTPRequestHandler):
    directory: StreamDirectory  # set on the per-server subclass

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        entries = self.directory.snapshot()
        path = self.path.split("?", 1)[0].rstrip("/")
        code, body = 200, entries
        if path.startswith("/streams/"):
            name = path.removeprefix("/streams/")
            code, body = (200, entries[name]) if name in entries else (
                404, {"error": f"unknown stream {name}"})
        elif path not in ("", "/streams"):
            code, body = 404, {"error": "try GET /streams or /streams/NAME"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


class DirectoryServer:
    """Serves ``directory`` over HTTP on ``host:port`` (port 0: any) in a daemon thread."""

    def __init__(self, directory: StreamDirectory, host: str, port: int) -> None:
        handler = type("DirectoryHandler", (_Handler,), {"directory": directory})
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as err:
            raise FleetInputError(f"cannot serve the stream directory on {host}:{port}: "
                                  f"{err.strerror or err}") from err
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fleet-directory")
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://HOST:PORT/streams``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/streams"

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def fetch_streams(url: str, timeout_s: float = 2.0) -> dict[str, dict[str, Any]]:
    """GET the directory at ``url`` (``http://HOST:PORT/streams``)."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())
