"""A small Foxglove WebSocket client (subprotocol ``foxglove.sdk.v1``), written against the
protocol itself with ``websocket-client``: it learns the channels the server advertises,
subscribes to them, and decodes each message with mcap_ros2's CDR decoder. The tests and
``pipeline.bench_observability`` watch ``--foxglove`` with it; from a shell::

    python -m pipeline.tools.foxglove_client ws://127.0.0.1:8765 --seconds 5

prints, per topic, the messages received and the size of the last one.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

SUBPROTOCOL = "foxglove.sdk.v1"
MESSAGE_DATA = 0x01  # binary opcode: u8 op, u32 subscription id, u64 log time (ns), payload
_HEAD = struct.Struct("<BIQ")


class FoxgloveClient:
    """One connection to a Foxglove WebSocket server.

    Args:
        url: ``ws://HOST:PORT``.
        timeout: seconds a :meth:`poll` waits for a message.
        subscribe_all: subscribe to every channel as soon as it is advertised.
        keep: keep every message (``received``, ``payloads``); else only count them.
    """

    def __init__(self, url: str, timeout: float = 5.0, subscribe_all: bool = True, keep: bool = True) -> None:
        import websocket

        self._errors = (websocket.WebSocketTimeoutException, websocket.WebSocketConnectionClosedException)
        self.ws = websocket.create_connection(url, subprotocols=[SUBPROTOCOL], timeout=timeout)
        self.subscribe_all, self.keep = subscribe_all, keep
        self.channels: dict[int, dict[str, Any]] = {}  # as advertised, by channel id
        self.subscriptions: dict[int, int] = {}  # subscription id -> channel id
        self.received: list[tuple[str, int, Any]] = []  # (topic, log time, decoded message)
        self.payloads: list[bytes] = []  # the CDR bytes of each, in the same order
        self.counts: Counter[str] = Counter()  # messages per topic
        self.last_size: dict[str, int] = {}  # bytes of the last message per topic
        self.server_info: dict[str, Any] | None = None
        self.closed = False
        self._decoders: dict[int, Callable[[bytes], Any]] = {}

    def subscribe(self, channel_id: int) -> None:
        sub = len(self.subscriptions) + 1
        self.subscriptions[sub] = channel_id
        self.ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": sub, "channelId": channel_id}]}))

    def poll(self) -> bool:
        """Handle one message from the server; False when none came within the timeout or
        the server closed the connection (then :attr:`closed`)."""
        import websocket

        try:
            data = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return False
        except (websocket.WebSocketConnectionClosedException, OSError):
            data = ""
        if data == "":  # websocket-client's "the server closed the connection"
            self.closed = True
            return False
        if isinstance(data, str):
            self._control(json.loads(data))
        else:
            self._message(data)
        return True

    def poll_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Poll until ``predicate()``; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline or self.closed:
                raise TimeoutError(f"foxglove client: condition not met; received {sum(self.counts.values())}")
            self.poll()

    def close(self) -> None:
        self.ws.close()

    def _control(self, message: dict[str, Any]) -> None:
        if message.get("op") == "serverInfo":
            self.server_info = message
        elif message.get("op") == "advertise":
            for channel in message["channels"]:
                self.channels[channel["id"]] = channel
                if self.subscribe_all:
                    self.subscribe(channel["id"])
        elif message.get("op") == "unadvertise":
            for channel_id in message["channelIds"]:
                self.channels.pop(channel_id, None)

    def _message(self, data: bytes) -> None:
        op, sub, log_time = _HEAD.unpack_from(data)
        if op != MESSAGE_DATA or sub not in self.subscriptions:
            return  # another binary opcode (time, service replies): not used here
        channel = self.channels.get(self.subscriptions[sub])
        if channel is None:
            return
        payload = bytes(data[_HEAD.size:])
        self.counts[channel["topic"]] += 1
        self.last_size[channel["topic"]] = len(payload)
        if self.keep:
            self.received.append((channel["topic"], log_time, self._decoder(channel)(payload)))
            self.payloads.append(payload)

    def _decoder(self, channel: dict[str, Any]) -> Callable[[bytes], Any]:
        if channel["id"] not in self._decoders:
            if channel["encoding"] != "cdr" or channel["schemaEncoding"] != "ros2msg":
                raise ValueError(f"{channel['topic']}: {channel['encoding']}/{channel['schemaEncoding']} "
                                 "is not a ROS 2 (cdr/ros2msg) channel")
            from mcap_ros2._dynamic import generate_dynamic

            name = channel["schemaName"]
            self._decoders[channel["id"]] = generate_dynamic(name, channel["schema"])[name]
        return self._decoders[channel["id"]]


def main(argv: list[str] | None = None) -> int:
    """Command line: connect, subscribe to everything for ``--seconds``, print the counts."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.foxglove_client",
                                     description="Subscribe to every topic of a Foxglove WebSocket server.")
    parser.add_argument("url", help="ws://HOST:PORT")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to listen (default 5)")
    args = parser.parse_args(argv)
    try:
        client = FoxgloveClient(args.url, timeout=0.5, keep=False)
    except OSError as err:
        print(f"error: cannot connect to '{args.url}': {err}", file=sys.stderr)
        return 2
    end = time.monotonic() + args.seconds
    while time.monotonic() < end and not client.closed:
        client.poll()
    client.close()
    for name in sorted(client.counts):
        print(f"{name}: {client.counts[name]} messages, last {client.last_size[name]} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
