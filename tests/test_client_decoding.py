"""Consumers survive malformed messages: the client decoder rejects anything off-protocol
with one error type before allocating what a header declares, and a subscriber (the Python
API and ``python -m pipeline.subscribe``) skips, counts and logs once, then goes on.
Exact topics: a subscriber to stream "1" does not receive stream "10"."""

from __future__ import annotations

import logging
import select
import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest
import zmq
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import messages
from pipeline.client import MalformedMessageError, ResultSubscriber, decode_frame
from pipeline.messages import ProtocolVersionError
from pipeline.ops.rle import encode_mask

H, W = 3, 4


def _header(seq: int = 0, run: str = "r", stream: str = "0", semantic: bool = False) -> dict:
    mask = np.zeros((H, W), bool)
    mask[1:, 2:] = True
    header = {
        "schema": messages.SCHEMA_FRAME, "version": messages.version_header(), "run": run, "stream": stream,
        "seq": seq, "dropped_since_last": 0, "pts": None, "time_base": None, "capture_ns": 1, "publish_ns": 2,
        "width": W, "height": H, "model": "m@0", "task": "instance", "untrained": True,
        "class_names": ["background", "thing"],
        "instances": [{"id": 0, "class_id": 1, "class_name": "thing", "score": 0.5, "box": [2.0, 1.0, 4.0, 3.0],
                       "mask": encode_mask(mask)}],
        "semantic": None,
    }
    if semantic:
        header["instances"] = []
        header["semantic"] = {"buffer": 0, "encoding": "mono8", "height": H, "width": W, "step": W, "unlabeled": 255}
    return header


def _message(header: dict, buffers: list[bytes] = (), topic: bytes = b"0\x00") -> list[bytes]:
    return [topic, msgpack.packb(header, use_bin_type=True), *buffers]


def _frame(**changes) -> list[bytes]:
    header = _header(semantic="semantic" in changes)
    header.update(changes)
    return _message(header, [bytes(H * W)] if header.get("semantic") else [])


def _instance(**changes) -> list[bytes]:
    header = _header()
    header["instances"][0].update(changes)
    return _message(header)


CLASS_MAP = {"buffer": 0, "encoding": "mono8", "height": H, "width": W, "step": W, "unlabeled": 255}
MALFORMED = {
    "one part": [b"0\x00"],
    "header not MessagePack": [b"0\x00", b"\xc1"],
    "trailing bytes after the header": [b"0\x00", msgpack.packb(_header()) + b"\x01"],
    "header not a map": [b"0\x00", msgpack.packb([1, 2, 3])],
    "header with integer keys": [b"0\x00", msgpack.packb({1: 2}, strict_types=False)],
    "topic not UTF-8": _message(_header(), topic=b"\xff\xfe\x00"),
    "no schema": _message({"version": messages.version_header()}),
    "seq missing": _message({k: v for k, v in _header().items() if k != "seq"}),
    "seq a string": _frame(seq="7"),
    "seq negative": _frame(seq=-1),
    "run a list": _frame(run=[1]),
    "instances missing": _message({k: v for k, v in _header().items() if k != "instances"}),
    "instances a map": _frame(instances={}),
    "instance a string": _frame(instances=["x"]),
    "instance without mask": _instance(mask=None),
    "box of three": _instance(box=[0, 0, 1]),
    "score a string": _instance(score="high"),
    "mask size not the frame's": _instance(mask=encode_mask(np.zeros((5, 5), bool))),
    "mask runs short": _instance(mask={"size": [H, W], "counts": "1"}),
    "mask counts not ASCII": _instance(mask={"size": [H, W], "counts": "é"}),
    "mask counts huge": _instance(mask={"size": [H, W], "counts": "o" * 40}),
    "frame too large": _frame(width=1 << 20, height=1 << 20, instances=[]),
    "width a float": _frame(width=4.0),
    "semantic buffer missing": _message({**_header(semantic=True)}),
    "semantic buffer index out of range": _frame(semantic={**CLASS_MAP, "buffer": 3}),
    "class map larger than its buffer": _frame(height=3000, width=3000, instances=[],
                                               semantic={**CLASS_MAP, "height": 3000, "width": 3000, "step": 3000}),
    "semantic size not the frame's": _frame(semantic={**CLASS_MAP, "height": 1}),
    "semantic step below width": _frame(semantic={**CLASS_MAP, "step": 1}),
    "semantic encoding unknown": _frame(semantic={**CLASS_MAP, "encoding": "rgb8"}),
    "status without event": _message({"schema": messages.SCHEMA_STATUS, "version": messages.version_header()}),
}


@pytest.mark.parametrize("frames", MALFORMED.values(), ids=MALFORMED.keys())
def test_decoder_rejects_malformed_messages_with_one_error_type(frames):
    with pytest.raises(MalformedMessageError):
        decode_frame(frames)


def test_decoder_accepts_valid_frames():
    frame = decode_frame(_frame())
    assert frame.topic == "0" and frame.seq == 0 and frame.masks().shape == (1, H, W)
    semantic = decode_frame(_message(_header(semantic=True), [bytes(range(H * W))]))
    np.testing.assert_array_equal(semantic.class_map, np.arange(H * W, dtype=np.uint8).reshape(H, W))
    # a 1.1 publisher's topic has no terminator: still decoded
    assert decode_frame(_message(_header(), topic=b"0")).topic == "0"


def _check_decodes_safely(frames: list[bytes]) -> None:
    """The property: decoding raises only the two documented errors, and a frame that
    decodes can be used whole (masks, class map) without further errors."""
    try:
        frame = decode_frame(frames)
    except (MalformedMessageError, ProtocolVersionError):
        return
    if frame.header["schema"] == messages.SCHEMA_FRAME:
        frame.masks()
        assert frame.class_map is None or frame.class_map.shape == (frame.height, frame.width)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(st.binary(max_size=64), min_size=0, max_size=4))
def test_fuzz_arbitrary_parts(parts):
    _check_decodes_safely(parts)


@FUZZ
@given(st.data())
def test_fuzz_corrupted_valid_header_bytes(data):
    semantic = data.draw(st.booleans())
    raw = bytearray(msgpack.packb(_header(semantic=semantic)))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    buffers = [data.draw(st.binary(max_size=2 * H * W))] if semantic else []
    _check_decodes_safely([b"0\x00", bytes(raw[: len(raw) - cut]) if cut else bytes(raw), *buffers])


@FUZZ
@given(st.data())
def test_fuzz_wrong_typed_or_missing_keys(data):
    semantic = data.draw(st.booleans())
    header = _header(semantic=semantic)
    targets = [header, header["semantic"] if semantic else header["instances"][0]]
    for _ in range(data.draw(st.integers(1, 3))):
        target = data.draw(st.sampled_from(targets))
        key = data.draw(st.sampled_from(sorted(target)))
        if data.draw(st.booleans()):
            del target[key]
        else:
            target[key] = data.draw(msgpack_values)
        if key in target and target is header and key in ("instances", "semantic"):
            targets = [header]  # the nested map was replaced: only the top level is left to change
    buffers = data.draw(st.lists(st.binary(max_size=2 * H * W), max_size=2))
    _check_decodes_safely(_message(header, buffers))


# -- over real sockets -----------------------------------------------------------------


@pytest.fixture
def pub(tmp_path):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path}/pub.sock"
    sock.bind(endpoint)
    yield sock, endpoint
    sock.close(0)
    ctx.term()


def _probe_until_connected(sock: zmq.Socket, sub: ResultSubscriber) -> None:
    """PUB/SUB joins asynchronously: send probe frames (run "probe") until one arrives."""
    for seq in range(200):
        sock.send_multipart(_message(_header(seq=seq, run="probe")))
        if sub.recv(timeout_s=0.05) is not None:
            return
    pytest.fail("subscriber never connected")


def _interleaved(count: int) -> tuple[list[list[bytes]], int]:
    """Valid frames seq 0..count-1 of run "real" with every malformed message between them."""
    garbage = list(MALFORMED.values())
    sent, bad = [], 0
    for seq in range(count):
        sent.append(garbage[seq % len(garbage)])
        bad += 1
        sent.append(_message(_header(seq=seq, run="real")))
    return sent, bad


def test_subscriber_skips_counts_and_logs_garbage_once_between_valid_frames(pub, caplog):
    sock, endpoint = pub
    with ResultSubscriber(endpoint) as sub:
        _probe_until_connected(sock, sub)
        sent, bad = _interleaved(2 * len(MALFORMED))
        with caplog.at_level(logging.WARNING, logger="segstream.client"):
            for message in sent:
                sock.send_multipart(message)
            got = [f.seq for f in sub.frames(timeout_s=2.0) if f.run == "real"]
        assert got == list(range(2 * len(MALFORMED)))
        assert sub.malformed == bad
        warnings = [r for r in caplog.records if r.name == "segstream.client"]
        assert len(warnings) == 1 and "malformed" in warnings[0].getMessage()


def test_subscribe_command_skips_garbage_and_reports_the_count(pub):
    import json

    sock, endpoint = pub
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.subscribe", endpoint, "--timeout", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        seq = 0
        while not select.select([proc.stdout], [], [], 0.05)[0]:  # first probe line: connected
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            sock.send_multipart(_message(_header(seq=seq, run="probe")))
            seq += 1
        sent, bad = _interleaved(len(MALFORMED))
        for message in sent:
            sock.send_multipart(message)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, stderr
    records = [json.loads(line) for line in stdout.splitlines()]
    assert [r["seq"] for r in records if r["run"] == "real"] == list(range(len(MALFORMED)))
    assert f"skipped {bad} malformed" in stderr
    assert sum("malformed message" in line for line in stderr.splitlines()) == 1, stderr
    assert "Traceback" not in stderr


def test_topic_subscription_is_exact_not_a_prefix(pub):
    sock, endpoint = pub
    with ResultSubscriber(endpoint, topics=["1"]) as one, ResultSubscriber(endpoint) as every:
        ctx = zmq.Context()
        legacy = ctx.socket(zmq.SUB)  # a 1.1 consumer: raw prefix subscription, no terminator
        legacy.setsockopt(zmq.SUBSCRIBE, b"1")
        legacy.connect(endpoint)
        try:
            for seq in range(200):  # until all three are connected
                for stream in ("1", "10"):
                    sock.send_multipart(messages.encode_envelope(stream, _header(seq=seq, run="probe", stream=stream)))
                time.sleep(0.02)
                if one.recv(0) and every.recv(0) and legacy.poll(0):
                    break
            for stream in ("1", "10", "1", "10"):
                sock.send_multipart(messages.encode_envelope(stream, _header(seq=1000, run=stream, stream=stream)))
            assert {f.stream for f in one.frames(timeout_s=1.0)} == {"1"}
            assert {f.stream for f in every.frames(timeout_s=1.0) if f.run != "probe"} == {"1", "10"}
            topics = set()
            while legacy.poll(200):
                topics.add(legacy.recv_multipart()[0])
            assert topics == {b"1\x00", b"10\x00"}  # old consumers: prefix match, as before
        finally:
            legacy.close(0)
            ctx.term()
    with pytest.raises(ValueError):
        messages.topic_bytes("a\x00b")
