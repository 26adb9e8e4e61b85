"""CURVE on the pipeline's tcp publish socket: authorized consumers get results, a consumer
with the wrong key gets nothing; protocol version skew is rejected and counted."""

from __future__ import annotations

import socket
import threading

from conftest import make_video, small_config

from pipeline import messages
from pipeline.client import ResultSubscriber
from pipeline.supervisor import Supervisor
from pipeline.transport.security import generate_keypair


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_curve_publish_only_reaches_authorized_consumers(tmp_path):
    keys, authorized = tmp_path / "keys", tmp_path / "keys" / "authorized"
    authorized.mkdir(parents=True)
    _, server_secret = generate_keypair(keys, "server")
    robot_public, robot_secret = generate_keypair(keys, "robot")
    _, intruder_secret = generate_keypair(keys, "intruder")  # a valid key pair, not authorized
    (authorized / "robot.key").write_bytes(robot_public.read_bytes())
    endpoint = f"tcp://127.0.0.1:{_port()}"
    video = make_video(tmp_path / "v.mp4", 5, 160, 120, "libx264", 25)
    config = small_config(video, tmp_path, output={
        "publish": endpoint, "curve_secret_key": str(server_secret), "curve_authorized_dir": str(authorized)})
    robot = ResultSubscriber(endpoint, curve_secret_key=str(robot_secret), curve_server_key=str(keys / "server.key"))
    intruder = ResultSubscriber(endpoint, curve_secret_key=str(intruder_secret),
                                curve_server_key=str(keys / "server.key"))
    plain = ResultSubscriber(endpoint)  # no CURVE at all
    got: dict[str, list] = {"robot": [], "intruder": [], "plain": []}
    threads = [threading.Thread(target=lambda n=n, s=s: got[n].extend(s.frames(count=5, timeout_s=60 if n == "robot" else 20)))
               for n, s in (("robot", robot), ("intruder", intruder), ("plain", plain))]
    for t in threads:
        t.start()
    try:
        report = Supervisor(config).run()
        for t in threads:
            t.join(timeout=90)
    finally:
        for sub in (robot, intruder, plain):
            sub.close()
    assert report["frames_published"] == 5
    assert [f.seq for f in got["robot"]] == list(range(5))
    assert got["intruder"] == [] and got["plain"] == []


def test_consumer_rejects_unknown_major_version_and_counts_it(tmp_path):
    import zmq

    endpoint = f"ipc://{tmp_path}/skew.sock"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind(endpoint)
    sub = ResultSubscriber(endpoint)
    try:
        future = {"schema": messages.SCHEMA_FRAME, "version": {"major": messages.PROTOCOL_MAJOR + 1, "minor": 0},
                  "seq": 0}
        newer_minor = {"schema": messages.SCHEMA_FRAME, "stream": "0", "seq": 1, "width": 2, "height": 2,
                       "version": {"major": messages.PROTOCOL_MAJOR, "minor": 7}, "instances": [], "semantic": None,
                       "a_field_from_the_future": True}
        received = None
        for _ in range(50):  # PUB/SUB joins asynchronously: resend until the subscriber is there
            pub.send_multipart(messages.encode_envelope("0", future))
            pub.send_multipart(messages.encode_envelope("0", newer_minor))
            received = sub.recv(timeout_s=0.1)
            if received is not None:
                break
        assert received is not None and received.seq == 1
        assert sub.rejected >= 1
    finally:
        sub.close()
        pub.close(0)
        ctx.term()


def test_consumer_yields_each_frame_once_per_run(tmp_path):
    """A restarted publish stage sends the frames since its last commit again: the client
    skips a seq it already had from the same run and stream, and counts it; a new run (seq
    from 0 again) and another stream are not mistaken for repeats."""
    import zmq

    endpoint = f"ipc://{tmp_path}/dupes.sock"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind(endpoint)
    sub = ResultSubscriber(endpoint)

    def frame(run: str, stream: str, seq: int) -> list:
        header = {"schema": messages.SCHEMA_FRAME, "version": messages.version_header(), "run": run,
                  "stream": stream, "seq": seq, "width": 2, "height": 2, "instances": [], "semantic": None}
        return messages.encode_envelope(stream, header)

    try:
        for _ in range(100):  # PUB/SUB joins asynchronously: wait until a probe gets through
            pub.send_multipart(frame("probe", "0", 0))
            if sub.recv(timeout_s=0.05) is not None:
                break
        before = sub.duplicates
        sent = [("a", "0", 0), ("a", "0", 1), ("a", "0", 2), ("a", "0", 1), ("a", "0", 2), ("a", "1", 0),
                ("a", "0", 3), ("b", "0", 0), ("b", "0", 1)]
        for message in sent:
            pub.send_multipart(frame(*message))
        got = [(f.run, f.stream, f.seq) for f in sub.frames(timeout_s=2.0) if f.run != "probe"]
        assert got == [("a", "0", 0), ("a", "0", 1), ("a", "0", 2), ("a", "1", 0), ("a", "0", 3), ("b", "0", 0), ("b", "0", 1)]
        assert sub.duplicates - before == 2
    finally:
        sub.close()
        pub.close(0)
        ctx.term()
