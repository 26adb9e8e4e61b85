"""ZeroMQ CURVE security for the results socket (PUB over tcp://).

CURVE encrypts the connection and authenticates the server to its clients; with a directory
of authorized client public keys the publisher also rejects every client whose key is not
there (ZAP, handled by pyzmq's :class:`~zmq.auth.thread.ThreadAuthenticator`). ipc:// and
loopback tcp:// hops between stages do not need it.

Usage (paste into the README)
-----------------------------

1. Make a key pair for the publisher and one per consumer::

       python -m pipeline.keys generate --dir keys --name server
       python -m pipeline.keys generate --dir keys --name robot1   # on (or for) the consumer

   ``NAME.key`` is the public key (share it), ``NAME.key_secret`` the secret key (keep it:
   it is written mode 0600).

2. Authorize consumers: copy each consumer's **public** ``robot1.key`` into a directory,
   e.g. ``keys/authorized/``. Only clients whose key is there get any message; without a
   directory every client that knows the server's public key may connect (encrypted, but
   not authenticated).

3. Publisher side (before ``bind``)::

       ctx = zmq.Context.instance()
       pub = ctx.socket(zmq.PUB)
       auth = secure_publisher(pub, "keys/server.key_secret", "keys/authorized")
       pub.bind("tcp://0.0.0.0:5560")
       ...
       pub.close(); auth.stop()

   or ``pub, auth = bind_secure_publisher(ctx, "tcp://0.0.0.0:5560", "keys/server.key_secret",
   "keys/authorized")``.

4. Consumer side (before ``connect``)::

       sub = ctx.socket(zmq.SUB)
       secure_subscriber(sub, "keys/robot1.key_secret", "keys/server.key")
       sub.connect("tcp://server:5560")
       sub.setsockopt(zmq.SUBSCRIBE, b"")

   A consumer in another language sets the same three socket options (``CURVE_SERVERKEY``,
   ``CURVE_PUBLICKEY``, ``CURVE_SECRETKEY``; the key files are ZPL text holding Z85 keys).

A consumer with a wrong key, or none, is refused during the handshake and receives nothing;
the publisher keeps running. New files in the authorized directory take effect after
:meth:`CurveServer.reload`.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from pipeline.errors import ConfigError

__all__ = [
    "CurveServer",
    "generate_keypair",
    "load_public_key",
    "load_secret_key",
    "secure_publisher",
    "secure_subscriber",
    "bind_secure_publisher",
    "ZAP_DOMAIN",
]

ZAP_DOMAIN = "segstream"


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise ConfigError("this libzmq was built without CURVE security (zmq.has('curve') is False)")


def generate_keypair(directory: str | os.PathLike[str], name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``DIR/NAME.key`` (public) and ``DIR/NAME.key_secret`` (secret, mode 0600).

    Returns ``(public_file, secret_file)``. Refuses to replace existing files unless
    ``overwrite``: a replaced server key locks every consumer out.
    """
    _require_curve()
    if not name or os.sep in name or name.startswith("."):
        raise ConfigError(f"invalid key name {name!r}: use a plain file name such as 'server'")
    directory = Path(directory)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if not overwrite:
        existing = [str(p) for p in (public, secret) if p.exists()]
        if existing:
            raise ConfigError(f"key file(s) already exist: {', '.join(existing)} (use overwrite to replace)")
    directory.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o077)  # the secret is never readable by others, not even briefly
    try:
        public_file, secret_file = zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old_umask)
    os.chmod(secret_file, stat.S_IRUSR | stat.S_IWUSR)
    os.chmod(public_file, 0o644)
    return Path(public_file), Path(secret_file)


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """The Z85 public key in a ``.key`` or ``.key_secret`` file."""
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CURVE key file '{path}': {exc}") from None
    return public


def load_secret_key(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """``(public, secret)`` Z85 keys from a ``.key_secret`` file."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CURVE key file '{path}': {exc}") from None
    if not secret:
        raise ConfigError(f"'{path}' holds no secret key (expected the NAME.key_secret file)")
    return public, secret


def _check_unattached(sock: zmq.Socket, what: str) -> None:
    try:
        endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
    except zmq.ZMQError:
        return
    if endpoint:
        raise ConfigError(f"configure {what} security before bind/connect (socket already at {endpoint!r})")


# One ZAP handler per context (it binds inproc://zeromq.zap.01): shared, reference counted.
_authenticators: dict[int, tuple[zmq.Context, ThreadAuthenticator, int]] = {}
_auth_lock = threading.Lock()


def _acquire_authenticator(ctx: zmq.Context) -> ThreadAuthenticator:
    with _auth_lock:
        entry = _authenticators.get(id(ctx))
        if entry is not None and entry[0] is ctx:
            _authenticators[id(ctx)] = (ctx, entry[1], entry[2] + 1)
            return entry[1]
        authenticator = ThreadAuthenticator(ctx)
        authenticator.start()
        _authenticators[id(ctx)] = (ctx, authenticator, 1)
        return authenticator


def _release_authenticator(ctx: zmq.Context) -> None:
    with _auth_lock:
        entry = _authenticators.get(id(ctx))
        if entry is None or entry[0] is not ctx:
            return
        if entry[2] > 1:
            _authenticators[id(ctx)] = (ctx, entry[1], entry[2] - 1)
            return
        del _authenticators[id(ctx)]
    entry[1].stop()


def _domain_for(clients: Path) -> str:
    digest = hashlib.sha1(str(clients.resolve()).encode()).hexdigest()[:12]
    return f"{ZAP_DOMAIN}-{digest}"


@dataclass
class CurveServer:
    """The authentication side of a secured publisher; :meth:`stop` it after closing the socket."""

    authenticator: ThreadAuthenticator | None
    clients_dir: Path | None
    domain: str = ""
    context: zmq.Context | None = None

    def authorized(self) -> list[str]:
        """Names of the public key files currently trusted (empty: any client allowed)."""
        if self.clients_dir is None:
            return []
        return sorted(p.name for p in self.clients_dir.glob("*.key"))

    def reload(self) -> None:
        """Re-read the authorized clients' directory (after adding or removing a key)."""
        if self.authenticator is not None and self.clients_dir is not None:
            self.authenticator.configure_curve(domain=self.domain, location=str(self.clients_dir))

    def stop(self) -> None:
        """Release the authenticator (its thread ends with the last secured socket's stop)."""
        if self.authenticator is not None and self.context is not None:
            _release_authenticator(self.context)
        self.authenticator = None

    def __enter__(self) -> CurveServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def secure_publisher(
    sock: zmq.Socket,
    server_secret_file: str | os.PathLike[str],
    authorized_clients_dir: str | os.PathLike[str] | None = None,
    domain: str | None = None,
) -> CurveServer:
    """Make ``sock`` a CURVE server (call before ``bind``).

    A ZAP authenticator thread (one per context, shared by the secured sockets of that
    context, each with its own ZAP ``domain``: by default one derived from the directory)
    checks every client: with ``authorized_clients_dir`` only clients whose public key is a
    ``*.key`` file in that directory get in; without it, any client that has the server's
    public key may connect (encrypted, not authenticated).

    Raises:
        ConfigError: missing/unreadable keys or directory, no CURVE in libzmq, socket
            already bound.
    """
    _require_curve()
    _check_unattached(sock, "publisher")
    public, secret = load_secret_key(server_secret_file)
    clients: Path | None = None
    if authorized_clients_dir is not None:
        clients = Path(authorized_clients_dir)
        if not clients.is_dir():
            raise ConfigError(f"authorized clients directory not found: {clients}")
        if not any(clients.glob("*.key")):
            raise ConfigError(
                f"no public keys (*.key) in {clients}: no consumer could connect; "
                "copy each consumer's NAME.key there"
            )
    # Always through the context's ZAP handler, even to allow any client: once a context has
    # a handler, libzmq asks it about every CURVE handshake of every socket.
    domain = domain or (_domain_for(clients) if clients is not None else f"{ZAP_DOMAIN}-any")
    authenticator = _acquire_authenticator(sock.context)
    try:
        location = str(clients) if clients is not None else zmq.auth.CURVE_ALLOW_ANY
        authenticator.configure_curve(domain=domain, location=location)
    except BaseException:
        _release_authenticator(sock.context)
        raise
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    return CurveServer(authenticator, clients, domain, sock.context)


def secure_subscriber(
    sock: zmq.Socket,
    client_secret_file: str | os.PathLike[str],
    server_public_file: str | os.PathLike[str],
) -> None:
    """Make ``sock`` a CURVE client of the server whose public key is in ``server_public_file``
    (call before ``connect``)."""
    _require_curve()
    _check_unattached(sock, "subscriber")
    public, secret = load_secret_key(client_secret_file)
    server_public = load_public_key(server_public_file)
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)


def bind_secure_publisher(
    ctx: zmq.Context,
    endpoint: str,
    server_secret_file: str | os.PathLike[str],
    authorized_clients_dir: str | os.PathLike[str] | None = None,
    hwm: int = 64,
) -> tuple[zmq.Socket, CurveServer]:
    """A bound CURVE PUB socket with the same policies as ``sockets.publisher`` (LINGER 0,
    small high-water mark, never blocks), and its :class:`CurveServer`."""
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    server: CurveServer | None = None
    try:
        server = secure_publisher(sock, server_secret_file, authorized_clients_dir)
        sock.bind(endpoint)
    except zmq.ZMQError as err:
        sock.close(0)
        if server is not None:
            server.stop()
        raise ConfigError(f"cannot bind ZeroMQ endpoint '{endpoint}': {err}") from None
    except BaseException:
        sock.close(0)
        if server is not None:
            server.stop()
        raise
    return sock, server
