"""Wire codec: MessagePack header + raw buffers, versioned envelope, no pickle."""

from fractions import Fraction

import msgpack
import numpy as np
import pytest

from pipeline import messages
from pipeline.messages import ProtocolVersionError
from pipeline.results import FrameResult, Instance


def _result(class_map=None):
    return FrameResult(
        stream="cam0", seq=7, width=5, height=4, model_id="m@1", task="instance",
        class_names=["background", "circle"], pts=700, time_base=Fraction(1, 100),
        capture_ns=123, dropped_since_last=2,
        instances=[Instance(0, 1, 0.9, (0.0, 1.0, 3.0, 4.0), {"size": [4, 5], "counts": "05"})],
        class_map=class_map,
    )


def test_envelope_roundtrip_with_buffers():
    class_map = np.arange(20, dtype=np.uint8).reshape(4, 5)
    header, buffers = _result(class_map).to_wire()
    frames = messages.encode_envelope("cam0", header, buffers)
    frames = [bytes(f) if not isinstance(f, np.ndarray) else f.tobytes() for f in frames]
    topic, decoded, bufs = messages.decode_envelope(frames)
    assert topic == "cam0"
    assert decoded["seq"] == 7 and decoded["dropped_since_last"] == 2
    assert decoded["time_base"] == [1, 100]
    assert decoded["instances"][0]["class_name"] == "circle"
    assert decoded["semantic"]["encoding"] == "mono8"
    got = np.frombuffer(bufs[decoded["semantic"]["buffer"]], np.uint8).reshape(4, 5)
    np.testing.assert_array_equal(got, class_map)


def test_header_is_plain_msgpack_not_pickle():
    header, _ = _result().to_wire()
    raw = messages.pack_header(header)
    assert not raw.startswith(b"\x80")  # pickle protocol marker
    assert msgpack.unpackb(raw)["schema"] == messages.SCHEMA_FRAME


def test_unknown_major_rejected_newer_minor_accepted():
    header, _ = _result().to_wire()
    header["version"] = {"major": messages.PROTOCOL_MAJOR, "minor": 99}
    header["field_from_the_future"] = {"x": 1}
    messages.decode_envelope([b"t", messages.pack_header(header)])
    header["version"] = {"major": messages.PROTOCOL_MAJOR + 1, "minor": 0}
    with pytest.raises(ProtocolVersionError, match="unsupported protocol major"):
        messages.decode_envelope([b"t", messages.pack_header(header)])
    del header["version"]
    with pytest.raises(ProtocolVersionError):
        messages.decode_envelope([b"t", messages.pack_header(header)])


def test_json_form_carries_class_map_as_rle_per_class():
    from pipeline.ops.rle import decode

    class_map = np.zeros((4, 5), np.uint8)
    class_map[1:3, 1:4] = 1
    class_map[3, :] = 2
    record = _result(class_map).to_json()
    by_class = {c["class_id"]: decode(c["mask"]) for c in record["semantic"]["classes"]}
    assert sorted(by_class) == [1, 2]
    np.testing.assert_array_equal(by_class[1], class_map == 1)
    np.testing.assert_array_equal(by_class[2], class_map == 2)
