"""Typed stage messages: round trips over the wire codec, the same bytes as the plain dicts
the stages always sent, zero-copy buffers, and clear errors for malformed headers."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq

from pipeline import messages
from pipeline.stage_messages import (
    Admission,
    Control,
    ControlKind,
    EndOfStream,
    Event,
    EventKind,
    FrameHandle,
    InlinePixels,
    MessageError,
    PostprocessedFrame,
    PreparedFrame,
    RawClassMap,
    RawInstances,
    SlotRelease,
    Status,
    decode,
    raw_output_from_parts,
)
from pipeline.transport import sockets

H, W = 4, 6
HANDLE = FrameHandle(stream="1", seq=5, slot=2, gen=7, h=H, w=W, pts=500, tb=(1, 100), capture_ns=123, dropped=1)
LEGACY_HANDLE = {"type": "frame", "stream": "1", "seq": 5, "slot": 2, "gen": 7, "h": H, "w": W, "pts": 500,
                 "tb": [1, 100], "capture_ns": 123, "dropped": 1}
PREPARED = PreparedFrame(HANDLE, (3, 8, 12))
LEGACY_PREPARED = {**LEGACY_HANDLE, "in_shape": [3, 8, 12]}
INSTANCE = {"id": 0, "class_id": 1, "score": 0.5, "box": [0.0, 1.0, 2.0, 3.0], "mask": {"size": [4, 6], "counts": "05"}}


def _instances(n: int = 2, m: int = 14) -> RawInstances:
    rng = np.random.default_rng(0)
    return RawInstances(
        PREPARED, (8, 12),
        rng.random((n, 4), dtype=np.float32), rng.random(n, dtype=np.float32),
        np.arange(1, n + 1, dtype=np.int64), rng.random((n, m, m), dtype=np.float32),
    )


def _class_map() -> RawClassMap:
    return RawClassMap(PreparedFrame(HANDLE), (8, 12), np.arange(96, dtype=np.uint8).reshape(8, 12))


def _semantic() -> PostprocessedFrame:
    return PostprocessedFrame(PREPARED, class_map=np.arange(H * W, dtype=np.uint8).reshape(H, W))


def _pixels(in_shape=None, overlay=False) -> InlinePixels:
    frame = np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3)
    model_input = None if in_shape is None else np.ones(in_shape, np.float32)
    return InlinePixels(frame=frame, input=model_input, overlay=frame[::-1].copy() if overlay else None)


# every message, and the header the stages sent before there were types (the wire format)
CASES = {
    "handle": (HANDLE, LEGACY_HANDLE),
    "prepared": (PREPARED, LEGACY_PREPARED),
    "prepared_on_gpu": (PreparedFrame(HANDLE), LEGACY_HANDLE),
    "no_timestamps": (FrameHandle("0", 0, 0, 1, H, W), {**LEGACY_HANDLE, "stream": "0", "seq": 0, "slot": 0,
                                                         "gen": 1, "pts": None, "tb": None, "capture_ns": 0,
                                                         "dropped": 0}),
    "raw_instances": (_instances(), {**LEGACY_PREPARED, "in_size": [8, 12], "n": 2, "mask_size": 14}),
    "raw_instances_empty": (_instances(0, 28), {**LEGACY_PREPARED, "in_size": [8, 12], "n": 0, "mask_size": 28}),
    "raw_class_map": (_class_map(), {**LEGACY_HANDLE, "in_size": [8, 12], "map_shape": [8, 12]}),
    "instances": (PostprocessedFrame(PREPARED, instances=[INSTANCE]), {**LEGACY_PREPARED, "instances": [INSTANCE]}),
    "no_instances": (PostprocessedFrame(PreparedFrame(HANDLE), instances=[]), {**LEGACY_HANDLE, "instances": []}),
    "semantic": (_semantic(), {**LEGACY_PREPARED, "semantic": True}),
    "instances_with_masks": (PostprocessedFrame(PREPARED, instances=[INSTANCE, INSTANCE],
                                                crop_rects=np.array([[1, 2, 3, 5], [0, 0, 2, 2]], np.int32),
                                                crop_bits=np.array([0b10101010, 0b1, 0b11110000], np.uint8)),
                             {**LEGACY_PREPARED, "instances": [INSTANCE, INSTANCE], "crops": True}),
    "eos": (EndOfStream(7, {"0": 4, "1": 3}), {"type": "eos", "frames": 7, "totals": {"0": 4, "1": 3}}),
    "status": (Status({"schema": "segstream.status", "event": "eos", "stream": "0"}),
               {"type": "status", "status": {"schema": "segstream.status", "event": "eos", "stream": "0"}}),
    "release": (SlotRelease(3, 9), {"slot": 3, "gen": 9}),
    "admission": (Admission(4, 0.25), {"type": "taken", "count": 4, "batch_s": 0.25}),
    "control": (Control(ControlKind.REPLAY), {"type": "replay"}),
    "event": (Event("infer", EventKind.DONE, {"stats": {"busy_s": 1.5}}),
              {"stage": "infer", "type": "done", "stats": {"busy_s": 1.5}}),
}


def _over_the_wire(header: dict, buffers: list) -> tuple[dict, list[memoryview]]:
    """Encode as a stage sends, turn every part into bytes, decode as a stage receives."""
    parts = messages.encode(header, buffers)
    return messages.decode([p.tobytes() if isinstance(p, np.ndarray) else bytes(p) for p in parts])


@pytest.mark.parametrize("name", CASES)
def test_round_trip_and_same_bytes_as_before(name):
    message, legacy = CASES[name]
    header, buffers = message.to_parts()
    assert messages.pack_header(header) == messages.pack_header(legacy)  # same keys, order, values
    received = type(message).from_parts(*_over_the_wire(header, buffers))
    assert received == message
    for sent, got in zip(buffers, received.to_parts()[1], strict=True):
        assert bytes(np.ascontiguousarray(sent).data) == bytes(np.ascontiguousarray(got).data)


def test_inequality_is_detected_in_arrays_and_fields():
    assert _instances() != _instances(2, 28)
    changed = _instances()
    changed.mask_probs[0, 0, 0] += 1
    assert changed != _instances()
    assert FrameHandle("0", 1, 0, 1, H, W) != FrameHandle("0", 2, 0, 1, H, W)
    assert HANDLE != PreparedFrame(HANDLE)


def test_sent_buffers_are_the_arrays_themselves():
    message = _instances()
    _, buffers = message.to_parts()
    assert [b is a for b, a in zip(buffers, (message.boxes, message.scores, message.labels, message.mask_probs),
                                   strict=True)] == [True] * 4


@pytest.mark.parametrize("name", ["raw_instances", "raw_class_map", "semantic"])
def test_received_arrays_are_views_of_the_buffers(name):
    message, _ = CASES[name]
    header, buffers = _over_the_wire(*message.to_parts())
    received = type(message).from_parts(header, buffers)
    arrays = [v for v in vars(received).values() if isinstance(v, np.ndarray)]
    assert arrays
    for array in arrays:
        assert not array.flags.owndata
        assert any(np.shares_memory(array, np.frombuffer(b, np.uint8)) for b in buffers)


def test_views_of_zmq_frames_through_the_sockets():
    ctx = zmq.Context()
    try:
        pull = sockets.pull(ctx, "inproc://stage-messages", hwm=10)
        push = sockets.push(ctx, "inproc://stage-messages", hwm=10)
        message = _instances(3, 28)
        sockets.send(push, *message.to_parts())
        assert pull.poll(5000)
        header, buffers = sockets.recv(pull)
        received = raw_output_from_parts(header, buffers)
        assert received == message
        assert np.shares_memory(received.mask_probs, np.frombuffer(buffers[3], np.uint8))
    finally:
        ctx.destroy(linger=0)


@pytest.mark.parametrize(("message", "pixels"), [
    (HANDLE, _pixels()),
    (PREPARED, _pixels((3, 8, 12))),
    (_instances(), _pixels((3, 8, 12))),
    (_class_map(), _pixels()),
    (_semantic(), _pixels((3, 8, 12), overlay=True)),
])
def test_inline_pixels_lead_the_buffers(message, pixels):
    sent = message.with_inline(pixels)
    header, buffers = sent.to_parts()
    plain_header, plain_buffers = message.to_parts()
    names, arrays = pixels.parts()
    # the tcp hop layout: the header gains ``inline`` last, the pixels lead the buffers
    assert messages.pack_header(header) == messages.pack_header({**plain_header, "inline": names})
    assert len(buffers) == len(arrays) + len(plain_buffers)
    received = type(message).from_parts(*_over_the_wire(header, buffers))
    assert received == sent
    assert received.with_inline(None) == message
    assert received.inline.frame.shape == (H, W, 3)


def test_no_inline_key_without_pixels():
    header, _ = HANDLE.with_inline(InlinePixels()).to_parts()
    assert "inline" not in header


def test_mask_size_comes_from_the_array():
    header, _ = _instances(1, 21).to_parts()
    assert header["mask_size"] == 21
    with pytest.raises(MessageError, match="mask_probs must be float32"):
        RawInstances(PREPARED, (8, 12), np.zeros((1, 4), np.float32), np.zeros(1, np.float32),
                     np.zeros(1, np.int64), np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(MessageError, match="square"):
        RawInstances(PREPARED, (8, 12), np.zeros((1, 4), np.float32), np.zeros(1, np.float32),
                     np.zeros(1, np.int64), np.zeros((1, 28, 14), np.float32))
    with pytest.raises(MessageError, match="labels must be int64"):
        RawInstances(PREPARED, (8, 12), np.zeros((1, 4), np.float32), np.zeros(1, np.float32),
                     np.zeros(1, np.int32), np.zeros((1, 28, 28), np.float32))


@pytest.mark.parametrize("name", CASES)
def test_missing_and_unknown_keys_are_named(name):
    message, _ = CASES[name]
    header, buffers = message.to_parts()
    parse = type(message).from_parts
    key = next((k for k in header if k != "type"), "type")  # a control message has only its type
    with pytest.raises(MessageError, match=rf"{type(message).__name__}: missing keys \['{key}'\]"):
        parse({k: v for k, v in header.items() if k != key}, buffers)
    if not isinstance(message, Event):  # an event's fields are free-form
        with pytest.raises(MessageError, match=r"unknown keys \['bogus'\]"):
            parse({**header, "bogus": 1}, buffers)


def test_wrong_type_buffer_count_and_sizes():
    with pytest.raises(MessageError, match="FrameHandle: expected type 'frame', got 'eos'"):
        FrameHandle.from_parts({"type": "eos", "frames": 1, "totals": {}}, [])
    with pytest.raises(MessageError, match="FrameHandle: unknown keys \\['in_shape'\\]"):
        FrameHandle.from_parts(LEGACY_PREPARED, [])
    header, buffers = _instances().to_parts()
    with pytest.raises(MessageError, match="expected 4 buffer"):
        RawInstances.from_parts(header, buffers[:3])
    with pytest.raises(MessageError, match="buffer 'mask_probs' is not float32"):
        RawInstances.from_parts({**header, "mask_size": 28}, buffers)
    with pytest.raises(MessageError, match="header must be a dict"):
        EndOfStream.from_parts(["eos"], [])
    with pytest.raises(MessageError, match="inline 'input' needs 'in_shape'"):
        FrameHandle.from_parts({**LEGACY_HANDLE, "inline": ["input"]}, [np.zeros(3, np.float32)])
    with pytest.raises(MessageError, match="unknown inline region 'depth'"):
        FrameHandle.from_parts({**LEGACY_HANDLE, "inline": ["depth"]}, [b""])
    with pytest.raises(MessageError, match="exactly one of 'instances' and 'semantic'"):
        PostprocessedFrame.from_parts({**LEGACY_HANDLE, "instances": [], "semantic": True}, [])
    with pytest.raises(MessageError, match="exactly one of instances and class_map"):
        PostprocessedFrame(PREPARED)


def test_dispatch_on_the_data_hops():
    for message in (HANDLE, EndOfStream(3), Status({"event": "online"})):
        assert decode(*message.to_parts(), FrameHandle.from_parts) == message
    with pytest.raises(MessageError, match="unknown message type 'taken'"):
        decode(*Admission(1).to_parts(), FrameHandle.from_parts)
    assert isinstance(raw_output_from_parts(*_instances().to_parts()), RawInstances)
    assert isinstance(raw_output_from_parts(*_class_map().to_parts()), RawClassMap)
    with pytest.raises(MessageError, match="neither 'n'"):
        raw_output_from_parts(LEGACY_PREPARED, [])
    assert EndOfStream(7, {"0": 4}).total("0") == 4 and EndOfStream(7).total("0") == 7


def test_control_and_event_kinds():
    assert [k.value for k in ControlKind] == ["start", "drain", "replay", "exit", "abort"]
    assert [k.value for k in EventKind] == ["ready", "started", "heartbeat", "progress", "done", "error"]
    for kind in ControlKind:
        assert Control.from_parts(*Control(kind).to_parts()).kind is kind
    assert Control.from_parts({"type": "drain"}, []).kind == "drain"  # StrEnum: equal to the literal
    with pytest.raises(MessageError, match="Control: unknown kind 'pause'"):
        Control.from_parts({"type": "pause"}, [])
    with pytest.raises(MessageError, match="Event: unknown kind 'bored'"):
        Event.from_parts({"stage": "capture", "type": "bored"}, [])
    header, _ = Event("publish", EventKind.PROGRESS, {"frames": 3}).to_parts()
    assert type(header["type"]) is str and msgpack.unpackb(messages.pack_header(header)) == header


def test_instance_masks_pack_and_unpack_exactly():
    from pipeline.ops.paste import MaskCrop

    rng = np.random.default_rng(3)
    crops = [MaskCrop(4, 7, rng.random((5, 9)) > 0.5), MaskCrop(0, 0, np.zeros((0, 3), bool)),
             MaskCrop(11, 2, rng.random((13, 1)) > 0.5)]
    rects, bits = PostprocessedFrame.pack_crops(crops)
    message = PostprocessedFrame(PREPARED, instances=[INSTANCE] * 3, crop_rects=rects, crop_bits=bits)
    received = PostprocessedFrame.from_parts(*_over_the_wire(*message.to_parts()))
    for crop, (x0, y0, mask) in zip(crops, received.crops(), strict=True):
        assert (x0, y0) == (crop.x0, crop.y0) and mask.dtype == bool and np.array_equal(mask, crop.mask)
    with pytest.raises(MessageError, match="crop_bits"):
        PostprocessedFrame(PREPARED, instances=[INSTANCE] * 3, crop_rects=rects, crop_bits=bits[:-1])
    header, buffers = message.to_parts()
    with pytest.raises(MessageError):
        PostprocessedFrame.from_parts(header, [buffers[0], buffers[1][:-1]])
