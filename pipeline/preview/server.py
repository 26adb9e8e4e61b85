"""The preview's HTTP server: standard library only, one daemon thread per connection.

``/`` lists the streams; ``/stream/<id>`` shows one (the overlay as MJPEG, the stats
polled each second); ``/stream/<id>/mjpeg`` is ``multipart/x-mixed-replace`` of JPEGs,
``/stream/<id>/frame.jpg`` one JPEG, ``/stream/<id>/stats.json`` the live stats. A viewer
that stops reading blocks its own thread only, until ``VIEWER_TIMEOUT_S`` drops it.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline.preview.hub import PreviewHub, StreamFeed
from pipeline.preview.pages import index_page, stream_page

BOUNDARY = "segstreamframe"
VIEWER_TIMEOUT_S = 15.0  # a viewer whose socket takes no data for this long is dropped
WAIT_S = 1.0  # a viewer re-checks for the end of the run this often


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], hub: PreviewHub, ipv6: bool) -> None:
        self.address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self.hub = hub
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = VIEWER_TIMEOUT_S
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # no line per request on the stage's log

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        hub = self.server.hub
        try:
            if parts == [""]:
                return self._send(200, "text/html; charset=utf-8", index_page(
                    [(f.id, f.label) for f in hub.feeds.values()]).encode())
            feed = hub.feeds.get(parts[1]) if len(parts) >= 2 and parts[0] == "stream" else None
            if feed is None or len(parts) > 3:
                return self._send(404, "text/plain", b"not found\n")
            page = parts[2] if len(parts) == 3 else ""
            if page == "":
                return self._send(200, "text/html; charset=utf-8", stream_page(feed.id, feed.label).encode())
            if page == "stats.json":
                return self._send(200, "application/json", json.dumps(feed.stats()).encode())
            if page == "frame.jpg":
                return self._frame(feed)
            if page == "mjpeg":
                return self._mjpeg(feed)
            return self._send(404, "text/plain", b"not found\n")
        except OSError:
            return None  # the viewer went away (or stalled past the timeout)

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _frame(self, feed: StreamFeed) -> None:
        """The next frame (within about a frame interval), else the latest there is."""
        with feed.viewer():
            found = feed.next_jpeg(feed.version, 2.0) or feed.latest_jpeg()
        if found is None:
            return self._send(503, "text/plain", b"no frame yet\n")
        return self._send(200, "image/jpeg", found[1])

    def _mjpeg(self, feed: StreamFeed) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        version = 0
        with feed.viewer():
            while not feed.closed:
                found = feed.next_jpeg(version, WAIT_S)
                if found is None:
                    continue
                version, jpeg = found
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                self.wfile.write(head.encode() + jpeg + b"\r\n")
                self.wfile.flush()


class PreviewServer:
    """Serves a hub at ``http://HOST:PORT/`` from a daemon thread, from :meth:`start` to
    :meth:`stop` (after which the port is free and every viewer disconnected)."""

    def __init__(self, hub: PreviewHub, host: str, port: int) -> None:
        self.hub, self.host, self.port = hub, host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        """Bind and serve (an ``OSError`` if the address cannot be bound)."""
        self._server = _Server((self.host, self.port), self.hub, ":" in self.host)
        self.port = self._server.server_address[1]  # port 0: the one the system chose
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="preview-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, end every viewer's connection and free the port (idempotent)."""
        if self._server is None:
            return
        self.hub.close()
        self._server.shutdown()
        self._server.server_close()
        with self._server.connections_lock:
            for conn in list(self._server.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
