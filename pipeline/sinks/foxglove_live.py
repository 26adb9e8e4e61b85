"""Every frame's results live over the Foxglove WebSocket protocol (``--foxglove HOST:PORT``,
config ``observability.foxglove``), served by the publish stage with ``foxglove-sdk``.

The messages are the very ones ``--mcap`` records (:mod:`pipeline.sinks.mcap_recorder`):
the same topics (``/segstream/<stream>/<name>``), ROS 2 schemas (``ros2msg``) and CDR
encoding, so a layout made on a recording works on the live run and back. Open it in
Foxglove with "Open connection" → ``ws://HOST:PORT``; any client speaking the protocol
(subprotocol ``foxglove.sdk.v1``) may subscribe. ``class_names`` (JSON) is in each
channel's metadata.

What it costs: a frame's messages are built (JPEG, id images, CDR) only for the channels
a client subscribed to, so with nobody connected a frame costs a few calls. A client that
stops reading never slows the pipeline: the server keeps at most ``BACKLOG_MESSAGES``
messages per client and drops the oldest (bounded memory, latest wins).
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Callable
from typing import Any

from pipeline.errors import ConfigError
from pipeline.results import FrameResult
from pipeline.sinks.mcap_recorder import ImageSource, frame_parts, log_time_ns, schema_text
from pipeline.transport.sockets import check_tcp_port_free, http_address

KEY = "observability.foxglove"
BACKLOG_MESSAGES = 64  # per client; a stalled one loses its oldest messages beyond this
SUBPROTOCOL = "foxglove.sdk.v1"
STOP_WAIT_S = 2.0  # close(): how long to wait for the server to part with its clients


def foxglove_address(address: str, allow_remote: bool) -> tuple[str, int]:
    """``HOST:PORT`` as ``(host, port)``; loopback unless ``allow_remote``."""
    return http_address(KEY, address, allow_remote, "the Foxglove server", 8765)


def check_foxglove(address: str, allow_remote: bool) -> None:
    """Fail now (before any stage starts, before the model loads) on a bad address, a
    missing ``foxglove-sdk`` or a port already taken."""
    host, port = foxglove_address(address, allow_remote)
    if importlib.util.find_spec("foxglove") is None:
        raise ConfigError(f"{KEY}: '{address}' needs the foxglove-sdk package "
                          "(pip install 'segstream[robotics]')")
    try:
        check_tcp_port_free(host, port)
    except (OSError, OverflowError) as err:
        raise ConfigError(_bind_error(address, err)) from None


def _bind_error(address: str, err: BaseException) -> str:
    reason = getattr(err, "strerror", None) or str(err).removeprefix("FoxgloveError: ")
    return f"{KEY}: cannot serve Foxglove on '{address}': {reason}"


class FoxgloveLive:
    """A Foxglove WebSocket server of one run's results, from construction to :meth:`close`.

    Args:
        address: ``HOST:PORT`` (port 0: any free one; see :attr:`port`).
        allow_remote: allow a non-loopback host.
        class_names: index = class id (put in each channel's metadata).
    """

    def __init__(self, address: str, allow_remote: bool, class_names: list[str]) -> None:
        import foxglove

        host, port = foxglove_address(address, allow_remote)
        self._context = foxglove.Context()  # our channels reach our server only
        try:
            self._server = foxglove.start_server(name="segstream", host=host, port=port, context=self._context,
                                                 message_backlog_size=BACKLOG_MESSAGES)
        except (RuntimeError, OverflowError, ValueError) as err:
            raise ConfigError(_bind_error(address, err)) from None
        self.host, self._port = host, self._server.port
        self._metadata = {"class_names": json.dumps(list(class_names))}
        self._channels: dict[str, Any] = {}  # by topic
        self._encoders: dict[str, Callable[[dict], bytes]] = {}  # CDR, by schema name
        self.messages_sent = 0

    @classmethod
    def open(cls, config: Any, class_names: list[str]) -> FoxgloveLive | None:
        """``observability.foxglove`` of ``config``: a server, or None when off."""
        address = config.observability.foxglove
        return None if address is None else cls(address, config.output.allow_remote, class_names)

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    def frame(self, result: FrameResult, image: ImageSource, overlay: bool) -> int:
        """Send one frame's messages to the clients subscribed to them; the number sent.
        ``image``: as for :func:`~pipeline.sinks.mcap_recorder.frame_parts` (a function is
        called only if someone subscribed to the image topic)."""
        sent = 0
        log_time = log_time_ns(result)
        for part in frame_parts(result, image, overlay):
            channel = self._channels.get(part.topic) or self._advertise(part.topic, part.schema)
            if not channel.has_sinks():
                continue  # nobody listens: build nothing
            message = part.build()
            if message is None:
                continue
            channel.log(self._encoders[part.schema](message), log_time=log_time)
            sent += 1
        self.messages_sent += sent
        return sent

    def _advertise(self, name: str, schema: str) -> Any:
        """A new channel (clients are told of it at once, and may subscribe)."""
        import foxglove
        from mcap_ros2._dynamic import serialize_dynamic

        text = schema_text(schema)
        if schema not in self._encoders:
            self._encoders[schema] = serialize_dynamic(schema, text)[schema]
        channel = foxglove.Channel(name, schema=foxglove.Schema(name=schema, encoding="ros2msg", data=text.encode()),
                                   message_encoding="cdr", context=self._context, metadata=self._metadata)
        self._channels[name] = channel
        return channel

    def close(self) -> None:
        """Stop serving: every client disconnected, the port free (idempotent)."""
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        if self._server is not None:
            # stop() waits until every client has been handed the close, which a client that
            # stopped reading never takes: wait a little, then leave it to the process's exit
            # (which closes its sockets) rather than hang the end of the run
            stopper = threading.Thread(target=self._server.stop, name="foxglove-stop", daemon=True)
            stopper.start()
            stopper.join(STOP_WAIT_S)
            self._server = None
