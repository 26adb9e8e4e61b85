"""Typed messages between the stage processes, and the kinds of control and event messages.

Every message is ``[header, *buffers]`` over the codec of :mod:`pipeline.transport.sockets`
(a MessagePack header, raw buffers sent zero-copy). Each class here is a frozen dataclass
with ``to_parts() -> (header, buffers)`` and ``from_parts(header, buffers)``. The headers
are the very dicts the stages always sent (same keys in the same order, so the same bytes),
and the arrays ``from_parts`` returns are ``np.frombuffer`` views of the received buffers,
never copies. A header with missing or unknown keys raises :class:`MessageError` naming them.

=====================  ===============================================================
hop                    message
=====================  ===============================================================
capture → preprocess   :class:`FrameHandle`: where the frame lies in the ring
preprocess → infer     :class:`PreparedFrame`: + the model-input shape (host transform)
infer → postprocess    :class:`RawInstances`, :class:`RawClassMap` or (panoptic mode, both
                       models) :class:`RawPanoptic`: raw model outputs
postprocess → publish  :class:`PostprocessedFrame`: instances (+ the segment-id map in
                       panoptic mode), or the full-size class map
every data hop         :class:`EndOfStream`, :class:`Status` (in order with the frames)
publish → capture      :class:`SlotRelease` (endpoint ``release``)
infer → capture        :class:`Admission` (endpoint ``admissions``, live feeds only)
supervisor → stages    :class:`Control` (:class:`ControlKind`)
stages → supervisor    :class:`Event` (:class:`EventKind`)
=====================  ===============================================================

A tcp hop cannot share the ring, so a frame message on it also carries its slot's pixels
(:class:`InlinePixels`, the ``inline`` field): the header's ``inline`` lists the regions and
their buffers lead the message's own.
"""

from pipeline.stage_messages._codec import Header, MessageError, Parts
from pipeline.stage_messages.channels import (
    Admission,
    Control,
    ControlKind,
    DataMessage,
    EndOfStream,
    Event,
    EventKind,
    SlotRelease,
    Status,
    decode,
)
from pipeline.stage_messages.frames import (
    HANDLE_KEYS,
    FrameHandle,
    FrameMessage,
    InlinePixels,
    PreparedFrame,
)
from pipeline.stage_messages.outputs import (
    PostprocessedFrame,
    RawClassMap,
    RawInstances,
    RawPanoptic,
    raw_output_from_parts,
)

__all__ = [
    "HANDLE_KEYS",
    "Admission",
    "Control",
    "ControlKind",
    "DataMessage",
    "EndOfStream",
    "Event",
    "EventKind",
    "FrameHandle",
    "FrameMessage",
    "Header",
    "InlinePixels",
    "MessageError",
    "Parts",
    "PostprocessedFrame",
    "PreparedFrame",
    "RawClassMap",
    "RawInstances",
    "RawPanoptic",
    "SlotRelease",
    "Status",
    "decode",
    "raw_output_from_parts",
]
