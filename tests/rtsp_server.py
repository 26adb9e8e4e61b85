"""A real RTSP server for the live-source tests: GStreamer's gst-rtsp-server.

Two halves in one file:

* run as a script by the **system** python (``/usr/bin/python3``, which has PyGObject and
  the GStreamer typelibs from ``scripts/install-test-deps.sh``), it serves a live H.264
  test pattern (videotestsrc -> x264enc -> rtph264pay) at ``rtsp://127.0.0.1:PORT/test``::

      /usr/bin/python3 tests/rtsp_server.py --port 8554 --width 320 --height 240 --fps 10

  and prints ``READY <port>`` once it listens;

* imported by the tests (any python, no GStreamer needed), :class:`RtspServer` starts that
  script as a child process on a free port, waits until it accepts TCP connections, can
  SIGKILL it and start it again on the same port, and :func:`rtsp_server_unavailable` says
  why the server cannot run here (so tests skip with that reason).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SYSTEM_PYTHON = os.environ.get("SEGSTREAM_GST_PYTHON", "/usr/bin/python3")
SCRIPT = Path(__file__).resolve()
MOUNT = "/test"

_CHECK = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("videotestsrc", "videoconvert", "x264enc", "rtph264pay")
           if Gst.ElementFactory.find(e) is None]
print("missing GStreamer elements: " + ", ".join(missing) if missing else "ok")
"""

_unavailable: str | None | bool = False  # False: not checked yet


def rtsp_server_unavailable() -> str | None:
    """``None`` when the server can run here, else the reason (for ``pytest.skip``)."""
    global _unavailable
    if _unavailable is not False:
        return _unavailable  # type: ignore[return-value]
    python = shutil.which(SYSTEM_PYTHON) if not os.path.isabs(SYSTEM_PYTHON) else SYSTEM_PYTHON
    if not python or not os.access(python, os.X_OK):
        _unavailable = f"no system python at {SYSTEM_PYTHON} to run GStreamer's RTSP server"
        return _unavailable
    try:
        out = subprocess.run(
            [python, "-c", _CHECK], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _unavailable = f"cannot run {python}: {exc}"
        return _unavailable
    last = (out.stdout.strip().splitlines() or [""])[-1]
    if out.returncode != 0 or last != "ok":
        why = last or (out.stderr.strip().splitlines() or ["unknown error"])[-1]
        _unavailable = (
            f"GStreamer RTSP server not usable with {python} ({why}); "
            "run scripts/install-test-deps.sh"
        )
    else:
        _unavailable = None
    return _unavailable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class RtspServer:
    """A gst-rtsp-server child process serving a live H.264 test pattern.

    ``start()`` launches it (on ``port``, picked free on first start) and returns once it
    accepts connections; ``kill()`` sends SIGKILL and reaps it; ``start()`` again reuses the
    same port. Use as a context manager to make sure the process is gone afterwards.
    """

    def __init__(
        self,
        port: int | None = None,
        width: int = 320,
        height: int = 240,
        fps: int = 10,
        keyint: int | None = None,
        log: str | os.PathLike[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.width, self.height, self.fps = width, height, fps
        self.keyint = keyint or fps  # one key frame a second: joins and rejoins are quick
        self.log = Path(log) if log else None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{MOUNT}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20.0) -> RtspServer:
        if self.running:
            return self
        reason = rtsp_server_unavailable()
        if reason:
            raise RuntimeError(reason)
        cmd = [
            SYSTEM_PYTHON, str(SCRIPT),
            "--port", str(self.port),
            "--width", str(self.width),
            "--height", str(self.height),
            "--fps", str(self.fps),
            "--keyint", str(self.keyint),
        ]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.setdefault("GST_DEBUG", "0")
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"RTSP server exited with status {self.proc.returncode} on port {self.port}"
                    + (f" (log: {self.log})" if self.log else "")
                )
            if port_accepts(self.port):
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"RTSP server did not listen on port {self.port} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL the server (no goodbye to clients) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not get ignored
            pass
        self.proc = None

    def restart(self, timeout: float = 20.0) -> RtspServer:
        self.kill()
        return self.start(timeout)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


# --------------------------------------------------------------------------------------------
# The server itself (system python + PyGObject only).


def serve(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Serve a live H.264 test pattern over RTSP.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--keyint", type=int, default=0, help="key frame interval (default: fps)")
    parser.add_argument("--pattern", default="ball", help="videotestsrc pattern")
    parser.add_argument("--mount", default=MOUNT)
    args = parser.parse_args(argv)

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    keyint = args.keyint or args.fps
    launch = (
        f"( videotestsrc is-live=true pattern={args.pattern} "
        f"! video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 "
        "! videoconvert ! video/x-raw,format=I420 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast threads=1 key-int-max={keyint} "
        "! video/x-h264,profile=baseline "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)  # one encoder for every client
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on {args.host}:{args.port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY {args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
