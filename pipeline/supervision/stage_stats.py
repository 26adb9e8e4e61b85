"""The statistics each stage sends with ``done``, typed.

A stage keeps its counters in ``self.stats`` (a plain dict: it travels as JSON) and sends
them with every ``done`` event. The supervisor reads them here, once: every field the report
uses is declared with its type, so a field a stage forgot or sent with the wrong type is an
error in :meth:`StageStats.parse`, not a silent zero somewhere in the report. Keys not
declared here are ignored (the report does not read them). A stage that never reported
(its ``done`` did not arrive) reads as all defaults.

Fields marked :func:`optional` may be absent from a report: capture has link counters only
for sources with a link status (network streams, cameras), publish has latencies only once
a frame was published.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

from pipeline.plan import STAGES

NO_LATENCY: dict[str, float | None] = {"p50": None, "p95": None, "p99": None}


class StatsError(ValueError):
    """A stage's ``done`` stats lack a declared field or carry it with the wrong type."""


def optional(default: Any = None, factory: Any = None) -> Any:
    """A field the stage may leave out of its stats (then ``default``, or ``factory()``)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"optional": True})
    return field(default=default, metadata={"optional": True})


def _checked(stage: str, name: str, value: Any, kind: Any) -> Any:
    """``value`` as ``kind`` (int, float, str, dict[...], or a union of them with None)."""
    if get_origin(kind) in (Union, types.UnionType):
        if value is None and type(None) in get_args(kind):
            return None
        kinds = [k for k in get_args(kind) if k is not type(None)]
        kind = kinds[0] if len(kinds) == 1 else kind
    origin = get_origin(kind) or kind
    if origin is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(origin, type) and isinstance(value, origin) and not (isinstance(value, bool) and origin is int):
        return value
    raise StatsError(f"stage '{stage}' stats: '{name}' is {value!r} ({type(value).__name__}), expected {kind}")


@dataclass(frozen=True)
class StageStats:
    """What every stage reports (:class:`pipeline.stages.base.Stage`); preprocess reports
    only these."""

    busy_s: float = 0.0  # time spent on frames
    stale_dropped: int = 0  # frames whose ring slot was rewritten before or while used
    cpu_s: float = 0.0  # CPU time of every thread of the process since ready

    @classmethod
    def parse(cls, stage: str, raw: Mapping[str, Any]) -> StageStats:
        """The typed stats of ``stage`` from a ``done`` event's ``stats`` (all defaults if
        the stage never reported). Raises :class:`StatsError` on a missing or mistyped field."""
        if not raw:
            return cls()
        hints = get_type_hints(cls)
        values = {}
        for item in fields(cls):
            if item.name not in raw:
                if item.metadata.get("optional"):
                    continue
                raise StatsError(f"stage '{stage}' stats: no '{item.name}'")
            values[item.name] = _checked(stage, item.name, raw[item.name], hints[item.name])
        return cls(**values)


@dataclass(frozen=True)
class CaptureStats(StageStats):
    frames_read: int = 0  # frames the sources delivered (sent or dropped)
    frames_dropped: int = 0  # by the live delivery policy
    decode_errors: int = 0
    replays: int = 0  # replays of the frames in flight after a downstream restart
    resumed_at: int = 0  # a restarted capture: the seq it carried on at
    reconnects: int = optional(0)  # sources with a link status only
    offline_s: float = optional(0.0)


@dataclass(frozen=True)
class InferStats(StageStats):
    frames_processed: int = 0
    batches: int = 0
    batch_s_max: float = 0.0  # the longest batch
    backend: str | None = None


@dataclass(frozen=True)
class PostprocessStats(StageStats):
    instances: int = 0


@dataclass(frozen=True)
class PublishStats(StageStats):
    frames_written: int = 0  # into the overlay video
    frames_published: int = 0  # on PUB
    frames_dropped: int = 0  # as the frames' ``dropped_since_last`` say
    frames_done: int = 0  # every frame publish finished with
    status_events: dict[str, int] = field(default_factory=dict)  # event -> count
    streams: dict[str, Any] = field(default_factory=dict)  # stream id -> {"frames", "dropped"}
    duplicates_dropped: int = 0
    early_dropped: int = 0
    latency_ms: dict[str, float | None] = optional(factory=lambda: dict(NO_LATENCY))


STATS_TYPES: dict[str, type[StageStats]] = {
    "capture": CaptureStats,
    "preprocess": StageStats,
    "infer": InferStats,
    "postprocess": PostprocessStats,
    "publish": PublishStats,
}


@dataclass(frozen=True)
class RunStats:
    """Every stage's typed stats of one run."""

    capture: CaptureStats
    preprocess: StageStats
    infer: InferStats
    postprocess: PostprocessStats
    publish: PublishStats

    @classmethod
    def parse(cls, raw: Mapping[str, Mapping[str, Any]]) -> RunStats:
        """From stage name -> the ``stats`` of its last ``done`` (absent: never reported)."""
        return cls(**{name: STATS_TYPES[name].parse(name, raw.get(name) or {}) for name in STAGES})

    def by_stage(self) -> dict[str, StageStats]:
        """Stage name -> stats, in pipeline order."""
        return {name: getattr(self, name) for name in STAGES}
