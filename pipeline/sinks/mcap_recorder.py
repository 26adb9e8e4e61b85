"""Every frame's results as an MCAP file with ROS 2 message schemas (``--mcap PATH``),
readable by Foxglove Studio, ``ros2 bag`` and the ``mcap`` libraries.

Topics, per stream ``S`` (``frame_id`` = ``S``; only those the run's task produces):

- ``/segstream/S/overlay`` (an overlay is drawn) or ``/segstream/S/image`` (the source
  frame): ``sensor_msgs/msg/CompressedImage``, format ``jpeg``;
- ``/segstream/S/detections`` (instance and panoptic models):
  ``vision_msgs/msg/Detection2DArray``, one detection per instance in the frame's instance
  order; ``results[0].hypothesis`` = class id (as a string) and score, ``bbox`` = box centre
  and size in pixels (corners at pixel edges, as in docs/PROTOCOL.md), ``id`` = track id (a
  string; empty when the instance has none);
- ``/segstream/S/instance_masks``: ``sensor_msgs/msg/Image`` ``mono16``, pixel = index of the
  instance in ``detections`` + 1, 0 = none; where masks overlap, the better-scoring instance
  (the lower index) holds the pixel;
- ``/segstream/S/class_map`` (semantic models): ``sensor_msgs/msg/Image`` ``mono8``, the
  class id per pixel (255: unlabeled);
- ``/segstream/S/panoptic`` (panoptic mode): ``sensor_msgs/msg/Image`` ``mono16``, the
  segment id per pixel (0 = void), and ``/segstream/S/panoptic_segments``
  (``Detection2DArray``): one detection per segment, ``id`` = its segment id, class id,
  score (stuff: 1.0) and box.

``header.stamp`` is the frame's media time (``pts * time_base``; without a pts, the capture
time); a message's log time is the capture time (Unix ns) and its MCAP ``sequence`` the
frame's ``seq``. A ``segstream`` metadata record holds the run id and ``class_names`` (JSON).

The file is written as ``PATH.partial`` and renamed to ``PATH`` by :meth:`McapRecorder.close`,
so a run that dies never leaves half a file at ``PATH``. Exactly once: :meth:`commit` (called
at publish's commit points) closes the chunk in progress and flushes it to the file, and a
recorder created with ``resume`` (a restarted publish stage) copies the messages of the
committed frames out of the dead process's ``.partial`` into a new one and drops the rest:
those frames come again. Each commit is one chunk, with about 1 KB of index kept in memory
until the end.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pipeline.ops.rle import decode
from pipeline.results import FrameResult

SEPARATOR = "=" * 80
#: Each message's own ROS 2 Humble definition (comments left out), by full name: what
#: :func:`schema_text` concatenates into the ros2msg schemas.
DEFINITIONS: dict[str, str] = {
    "builtin_interfaces/msg/Time": "int32 sec\nuint32 nanosec",
    "std_msgs/msg/Header": "builtin_interfaces/Time stamp\nstring frame_id",
    "sensor_msgs/msg/CompressedImage": "std_msgs/Header header\nstring format\nuint8[] data",
    "sensor_msgs/msg/Image": "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n"
                             "uint8 is_bigendian\nuint32 step\nuint8[] data",
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections",
    "vision_msgs/msg/Detection2D": "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
                                   "vision_msgs/BoundingBox2D bbox\nstring id",
    "vision_msgs/msg/ObjectHypothesisWithPose": "vision_msgs/ObjectHypothesis hypothesis\n"
                                                "geometry_msgs/PoseWithCovariance pose",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta",
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y",
    "geometry_msgs/msg/PoseWithCovariance": "geometry_msgs/Pose pose\nfloat64[36] covariance",
    "geometry_msgs/msg/Pose": "geometry_msgs/Point position\ngeometry_msgs/Quaternion orientation",
    "geometry_msgs/msg/Point": "float64 x\nfloat64 y\nfloat64 z",
    "geometry_msgs/msg/Quaternion": "float64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1",
}
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE = "sensor_msgs/msg/Image"
DETECTIONS = "vision_msgs/msg/Detection2DArray"
SCHEMAS = (COMPRESSED_IMAGE, IMAGE, DETECTIONS)
METADATA_NAME = "segstream"
JPEG_QUALITY = 90
_TYPE = re.compile(r"^(\w+)/(\w+)(\[\d*\])?\s")


def _full_name(type_name: str) -> str:
    package, name = type_name.split("/")
    return f"{package}/msg/{name}"


def schema_text(name: str) -> str:
    """The ros2msg schema of ``name``: its definition, then every definition it depends
    on (depth first, each once), each after a line of 80 ``=`` and ``MSG: pkg/msg/Name``."""
    order: list[str] = []

    def visit(full: str) -> None:
        if full in order:
            return
        order.append(full)
        for line in DEFINITIONS[full].splitlines():
            found = _TYPE.match(line)
            if found:
                visit(_full_name(f"{found[1]}/{found[2]}"))

    visit(name)
    parts = [DEFINITIONS[name]] + [f"{SEPARATOR}\nMSG: {dep}\n{DEFINITIONS[dep]}" for dep in order[1:]]
    return "\n".join(parts) + "\n"


def topic(stream: str, name: str) -> str:
    return f"/segstream/{stream}/{name}"


def stamp_ns(result: FrameResult) -> int:
    """The frame's media time in ns (``pts * time_base``), else its capture time."""
    if result.pts is not None and result.time_base is not None:
        return int(Fraction(result.pts) * Fraction(result.time_base) * 1_000_000_000)
    return int(result.capture_ns)


def header(result: FrameResult) -> dict[str, Any]:
    sec, nanosec = divmod(stamp_ns(result), 1_000_000_000)
    return {"stamp": {"sec": sec, "nanosec": nanosec}, "frame_id": str(result.stream)}


def jpeg_bytes(image: np.ndarray) -> bytes:
    """An [H, W, 3] uint8 RGB image as JPEG (Pillow)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def image_msg(head: dict[str, Any], pixels: np.ndarray, encoding: str) -> dict[str, Any]:
    """``sensor_msgs/Image`` of a one-channel map (``mono8``: uint8; ``mono16``: little-endian uint16)."""
    dtype = {"mono8": np.uint8, "mono16": np.dtype("<u2")}[encoding]
    data = np.ascontiguousarray(pixels, dtype=dtype)
    height, width = data.shape
    return {"header": head, "height": height, "width": width, "encoding": encoding, "is_bigendian": 0,
            "step": width * data.itemsize, "data": data.tobytes()}


def _detection(head: dict[str, Any], class_id: int, score: float, box: Any, ident: str) -> dict[str, Any]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return {
        "header": head,
        "results": [{"hypothesis": {"class_id": str(int(class_id)), "score": float(score)}, "pose": {}}],
        "bbox": {"center": {"position": {"x": (x0 + x1) / 2, "y": (y0 + y1) / 2}, "theta": 0.0},
                 "size_x": x1 - x0, "size_y": y1 - y0},
        "id": ident,
    }


def detections_msg(result: FrameResult) -> dict[str, Any]:
    """``vision_msgs/Detection2DArray`` of the frame's instances, in their order."""
    head = header(result)
    return {"header": head, "detections": [
        _detection(head, inst.class_id, inst.score, inst.box, "" if inst.track_id is None else str(inst.track_id))
        for inst in result.instances]}


def instance_id_image(result: FrameResult) -> np.ndarray:
    """[H, W] uint16: instance index + 1 per pixel, 0 = none; the lower index wins overlaps."""
    ids = np.zeros((result.height, result.width), np.uint16)
    if len(result.instances) > np.iinfo(np.uint16).max:
        raise ValueError(f"{len(result.instances)} instances do not fit a mono16 image")
    for k in range(len(result.instances) - 1, -1, -1):
        ids[decode(result.instances[k].rle)] = k + 1
    return ids


def panoptic_segments_msg(result: FrameResult) -> dict[str, Any]:
    """``Detection2DArray`` of the panoptic segments: ``id`` = segment id (its pixel value)."""
    head = header(result)
    detections = []
    for seg in result.segments_info():
        x, y, w, h = seg["bbox"]
        score = 1.0 if seg["score"] is None else seg["score"]
        detections.append(_detection(head, seg["category_id"], score, (x, y, x + w, y + h), str(seg["id"])))
    return {"header": head, "detections": detections}


class MessagePart(NamedTuple):
    """One message of a frame, not built yet: ``build()`` makes it (None: no message)."""

    topic: str
    schema: str
    build: Callable[[], dict[str, Any] | None]


ImageSource = np.ndarray | Callable[[], np.ndarray | None] | None


def frame_parts(result: FrameResult, image: ImageSource, overlay: bool) -> list[MessagePart]:
    """The messages of one frame, each built only when asked for (a live sink builds only
    those someone subscribed to). ``image``: the frame's RGB pixels (the drawn overlay when
    ``overlay``, else the source frame), or a function that fetches them; None: no image."""
    head = header(result)
    out: list[MessagePart] = []
    if image is not None:
        def compressed() -> dict[str, Any] | None:
            pixels = image() if callable(image) else image
            return None if pixels is None else {"header": head, "format": "jpeg", "data": jpeg_bytes(pixels)}

        out.append(MessagePart(topic(result.stream, "overlay" if overlay else "image"), COMPRESSED_IMAGE, compressed))
    if result.task in ("instance", "panoptic"):
        out.append(MessagePart(topic(result.stream, "detections"), DETECTIONS, lambda: detections_msg(result)))
        out.append(MessagePart(topic(result.stream, "instance_masks"), IMAGE,
                               lambda: image_msg(head, instance_id_image(result), "mono16")))
    if result.class_map is not None:
        out.append(MessagePart(topic(result.stream, "class_map"), IMAGE,
                               lambda: image_msg(head, result.class_map, "mono8")))
    if result.panoptic is not None:
        if result.panoptic.size and int(result.panoptic.max()) > np.iinfo(np.uint16).max:
            raise ValueError(f"panoptic segment id {int(result.panoptic.max())} does not fit a mono16 image")
        out.append(MessagePart(topic(result.stream, "panoptic"), IMAGE,
                               lambda: image_msg(head, result.panoptic, "mono16")))
        out.append(MessagePart(topic(result.stream, "panoptic_segments"), DETECTIONS,
                               lambda: panoptic_segments_msg(result)))
    return out


def frame_messages(result: FrameResult, image: np.ndarray | None, overlay: bool) -> list[tuple[str, str, dict]]:
    """The (topic, schema name, message) of one frame (:func:`frame_parts`, all built)."""
    built = ((part.topic, part.schema, part.build()) for part in frame_parts(result, image, overlay))
    return [(name, schema, message) for name, schema, message in built if message is not None]


def log_time_ns(result: FrameResult) -> int:
    """A message's log time: the capture time (Unix ns), else the media time."""
    return int(result.capture_ns) or max(stamp_ns(result), 0)


def partial_path(path: str | Path) -> Path:
    """Where the file is written until :meth:`McapRecorder.close` renames it to ``path``."""
    return Path(f"{path}.partial")


class McapRecorder:
    """Writes frames to ``PATH.partial``; ``close`` finishes it and renames it to ``PATH``.

    Args:
        path: the MCAP file.
        run: the run id (in the metadata; a restarted recorder salvages only its own run's file).
        class_names: index = class id (in the metadata, as JSON).
        resume: a restarted publish stage: per stream, the first seq not committed. The
            messages of earlier frames are copied from the previous ``.partial``, later ones
            dropped (they are published again); None: a new file.
    """

    def __init__(self, path: str | Path, run: str, class_names: list[str],
                 resume: dict[str, int] | None = None) -> None:
        from mcap_ros2.writer import Writer as Ros2Writer

        self.path = Path(path)
        self.partial = partial_path(path)
        self.run = run
        self.path.parent.mkdir(parents=True, exist_ok=True)
        salvage = self._set_aside_previous() if resume is not None else None
        self._file = open(self.partial, "wb")  # noqa: SIM115 - closed in close()
        self._writer = Ros2Writer(self._file)
        self._schemas = {name: self._writer.register_msgdef(name, schema_text(name)) for name in SCHEMAS}
        self._writer.add_metadata(METADATA_NAME, {"run": run, "class_names": json.dumps(list(class_names)),
                                                  "topics": topic("<stream>", "<name>")})
        self._next: dict[str, int] = dict(resume or {})  # per stream: the first seq not yet recorded
        if salvage is not None:
            try:
                self._copy_committed(salvage, resume or {})
            finally:
                salvage.unlink(missing_ok=True)
        self.commit()

    def write(self, result: FrameResult, image: np.ndarray | None, overlay: bool) -> bool:
        """Record one frame (see :func:`frame_messages`); False, recording nothing, for a
        seq this file already holds."""
        if result.seq < self._next.get(result.stream, 0):
            return False
        log_time = log_time_ns(result)
        for name, schema, message in frame_messages(result, image, overlay):
            self._writer.write_message(name, self._schemas[schema], message, log_time=log_time,
                                       publish_time=log_time, sequence=result.seq & 0xFFFFFFFF)
        self._next[result.stream] = result.seq + 1
        return True

    def commit(self) -> None:
        """Close the chunk in progress and flush the file: what was written survives a crash."""
        # mcap_ros2's Writer has no flush; the mcap Writer it wraps (``_writer``) has
        self._writer._writer.flush()
        self._file.flush()

    def close(self) -> None:
        """Finish the file (summary, indexes) and rename it from ``PATH.partial`` to ``PATH``."""
        if self._file.closed:
            return
        self._writer.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.path)

    def _set_aside_previous(self) -> Path | None:
        """The file a previous publish process of this run wrote (its ``.partial``, or the
        finished file if it got that far), moved aside to be copied from."""
        for candidate in (self.partial, self.path):
            if candidate.is_file() and _run_of(candidate) == self.run:
                aside = candidate.with_name(f".{self.path.name}.{self.run}.salvage")
                os.replace(candidate, aside)
                return aside
        return None

    def _copy_committed(self, source: Path, resume: dict[str, int]) -> None:
        """Copy the messages of committed frames (seq below ``resume``) from ``source``."""
        from mcap_ros2.decoder import DecoderFactory

        decoders = DecoderFactory()
        for schema, channel, message in _complete_messages(source):
            stream = channel.topic.split("/")[2]
            if message.sequence >= resume.get(stream, 0):
                continue  # not committed: published again
            decoded = decoders.decoder_for(channel.message_encoding, schema)(message.data)
            self._writer.write_message(channel.topic, self._schemas[schema.name], decoded, log_time=message.log_time,
                                       publish_time=message.publish_time, sequence=message.sequence)


def _records(path: Path) -> Iterator[Any]:
    """The records of an MCAP file, up to where a killed writer left it torn."""
    from mcap.stream_reader import StreamReader

    with open(path, "rb") as f:
        records = StreamReader(f).records
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except Exception:  # noqa: BLE001 - a torn tail: a truncated record or chunk
                return
            yield record


def _run_of(path: Path) -> str | None:
    """The run id in a file's metadata (written before any message), or None."""
    from mcap.records import Message, Metadata

    for record in _records(path):
        if isinstance(record, Metadata) and record.name == METADATA_NAME:
            return record.metadata.get("run")
        if isinstance(record, Message):
            return None
    return None


def _complete_messages(path: Path) -> Iterator[tuple[Any, Any, Any]]:
    """(schema, channel, message) of every message a file holds whole."""
    from mcap.records import Channel, Message, Schema

    schemas: dict[int, Any] = {}
    channels: dict[int, Any] = {}
    for record in _records(path):
        if isinstance(record, Schema):
            schemas[record.id] = record
        elif isinstance(record, Channel):
            channels[record.id] = record
        elif isinstance(record, Message) and record.channel_id in channels:
            channel = channels[record.channel_id]
            yield schemas[channel.schema_id], channel, record
