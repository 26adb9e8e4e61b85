"""CURVE security for the results socket: real ZeroMQ sockets on 127.0.0.1, random ports."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from pipeline import messages
from pipeline.errors import ConfigError
from pipeline.sources.reconnect import status_message
from pipeline.transport.security import (
    bind_secure_publisher,
    generate_keypair,
    load_public_key,
    secure_publisher,
    secure_subscriber,
)

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """server, good (authorized) and bad (not authorized) key pairs, plus keys/authorized/."""
    kdir = tmp_path / "keys"
    for name in ("server", "good", "bad", "other_server"):
        generate_keypair(kdir, name)
    (kdir / "authorized").mkdir()
    (kdir / "authorized" / "good.key").write_bytes((kdir / "good.key").read_bytes())
    return kdir


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def endpoint_of(sock: zmq.Socket) -> str:
    return sock.getsockopt(zmq.LAST_ENDPOINT).decode()


def sub_socket(ctx: zmq.Context, endpoint: str, secret: Path | None, server_public: Path | None) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if secret is not None:
        secure_subscriber(sock, secret, server_public)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


def pump(pub: zmq.Socket, subs: dict[str, zmq.Socket], seconds: float, stop_when: tuple[str, ...] = ()) -> dict[str, list]:
    """Publish a status message every 20 ms for ``seconds``; collect what each SUB receives."""
    got: dict[str, list] = {name: [] for name in subs}
    poller = zmq.Poller()
    for sock in subs.values():
        poller.register(sock, zmq.POLLIN)
    by_sock = {sock: name for name, sock in subs.items()}
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        header = status_message({"event": "online", "time_ns": time.time_ns(), "detail": f"msg {n}"}, stream="cam")
        pub.send_multipart(messages.encode_envelope("cam", header))
        n += 1
        for sock, _ in poller.poll(20):
            while sock.poll(0):
                got[by_sock[sock]].append(messages.decode_envelope(sock.recv_multipart()))
        if stop_when and all(got[name] for name in stop_when):
            break
    return got


def test_generate_keypair_files_and_permissions(tmp_path: Path) -> None:
    public, secret = generate_keypair(tmp_path / "k", "server")
    assert public == tmp_path / "k" / "server.key" and secret == tmp_path / "k" / "server.key_secret"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert len(load_public_key(public)) == 40  # Z85 of 32 bytes
    assert load_public_key(public) == load_public_key(secret)
    with pytest.raises(ConfigError, match="already exist"):
        generate_keypair(tmp_path / "k", "server")
    new_public, _ = generate_keypair(tmp_path / "k", "server", overwrite=True)
    assert load_public_key(new_public) != b""


def test_keys_cli(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.keys", "generate", "--dir", str(tmp_path), "--name", "robot1"],
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "robot1.key").exists() and (tmp_path / "robot1.key_secret").exists()
    assert "robot1.key_secret" in out.stdout
    again = subprocess.run(
        [sys.executable, "-m", "pipeline.keys", "generate", "--dir", str(tmp_path), "--name", "robot1"],
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO,
    )
    assert again.returncode == 2 and "already exist" in again.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "pipeline.keys", "show", str(tmp_path / "robot1.key")],
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO,
    )
    assert shown.returncode == 0
    assert shown.stdout.strip().encode() == load_public_key(tmp_path / "robot1.key")


def test_only_authorized_consumers_receive(ctx: zmq.Context, keys: Path) -> None:
    threads_before = threading.active_count()
    pub, server = bind_secure_publisher(ctx, "tcp://127.0.0.1:*", keys / "server.key_secret", keys / "authorized")
    try:
        endpoint = endpoint_of(pub)
        subs = {
            "good": sub_socket(ctx, endpoint, keys / "good.key_secret", keys / "server.key"),
            "wrong_key": sub_socket(ctx, endpoint, keys / "bad.key_secret", keys / "server.key"),
            "no_key": sub_socket(ctx, endpoint, None, None),
            # authorized client key, but it expects another server: the handshake fails
            "wrong_server": sub_socket(ctx, endpoint, keys / "good.key_secret", keys / "other_server.key"),
        }
        got = pump(pub, subs, seconds=5.0, stop_when=("good",))
        assert got["good"], "the authorized consumer received nothing within 5 s"
        topic, header, _ = got["good"][0]
        assert topic == "cam" and header["schema"] == messages.SCHEMA_STATUS
        # keep publishing a while longer: the others must still get nothing
        more = pump(pub, subs, seconds=1.5)
        assert more["good"], "the authorized consumer stopped receiving"
        for name in ("wrong_key", "no_key", "wrong_server"):
            assert not got[name] and not more[name], f"{name} consumer received a message"
        for sock in subs.values():
            sock.close(0)
    finally:
        pub.close(0)
        server.stop()
    deadline = time.monotonic() + 5
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= threads_before, "the authenticator thread was left running"


def test_encryption_only_without_client_directory(ctx: zmq.Context, keys: Path) -> None:
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    server = secure_publisher(pub, keys / "server.key_secret")
    pub.bind("tcp://127.0.0.1:*")
    try:
        endpoint = endpoint_of(pub)
        subs = {
            "any_key": sub_socket(ctx, endpoint, keys / "bad.key_secret", keys / "server.key"),
            "no_key": sub_socket(ctx, endpoint, None, None),
        }
        got = pump(pub, subs, seconds=5.0, stop_when=("any_key",))
        assert got["any_key"], "a CURVE client was refused by an allow-any publisher"
        assert not got["no_key"], "a plain (unencrypted) client received a message"
        for sock in subs.values():
            sock.close(0)
    finally:
        pub.close(0)
        server.stop()


def test_reload_authorizes_new_client(ctx: zmq.Context, keys: Path) -> None:
    pub, server = bind_secure_publisher(ctx, "tcp://127.0.0.1:*", keys / "server.key_secret", keys / "authorized")
    try:
        assert server.authorized() == ["good.key"]
        (keys / "authorized" / "bad.key").write_bytes((keys / "bad.key").read_bytes())
        server.reload()
        assert server.authorized() == ["bad.key", "good.key"]
        sub = sub_socket(ctx, endpoint_of(pub), keys / "bad.key_secret", keys / "server.key")
        got = pump(pub, {"bad": sub}, seconds=5.0, stop_when=("bad",))
        assert got["bad"], "a client authorized by reload() received nothing"
        sub.close(0)
    finally:
        pub.close(0)
        server.stop()


def test_configuration_errors(ctx: zmq.Context, keys: Path, tmp_path: Path) -> None:
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    try:
        with pytest.raises(ConfigError, match="cannot read CURVE key file"):
            secure_publisher(pub, tmp_path / "missing.key_secret")
        with pytest.raises(ConfigError, match="holds no secret key"):
            secure_publisher(pub, keys / "server.key")  # the public file by mistake
        with pytest.raises(ConfigError, match="authorized clients directory not found"):
            secure_publisher(pub, keys / "server.key_secret", tmp_path / "nope")
        (tmp_path / "empty").mkdir()
        with pytest.raises(ConfigError, match="no public keys"):
            secure_publisher(pub, keys / "server.key_secret", tmp_path / "empty")
        pub.bind("tcp://127.0.0.1:*")
        with pytest.raises(ConfigError, match="before bind/connect"):
            secure_publisher(pub, keys / "server.key_secret")
    finally:
        pub.close(0)
    with pytest.raises(ConfigError, match="cannot bind"):
        bind_secure_publisher(ctx, "tcp://256.0.0.1:1", keys / "server.key_secret")
