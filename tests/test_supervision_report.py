"""The run report from typed stage stats (pipeline/supervision/): each stage's ``done``
stats are parsed in one place (a missing or mistyped field is an error there), and the
report's keys and arithmetic are those the run tests and README rely on."""

from __future__ import annotations

import pytest

from pipeline.resources import ResourcePlan, StageBudget
from pipeline.supervision.report import RunFacts, build_report
from pipeline.supervision.stage_stats import (
    CaptureStats,
    InferStats,
    PublishStats,
    RunStats,
    StageStats,
    StatsError,
)

STAGES = ("capture", "preprocess", "infer", "postprocess", "publish")
REPORT_KEYS = [
    "run_id", "source", "streams", "model", "backend", "backend_selection", "device", "batch_size",
    "frames_read", "frames_processed", "frames_written", "frames_published", "frames_dropped",
    "decode_errors", "reconnects", "offline_s", "status_events", "batches", "batch_s_max", "wall_s",
    "startup_s", "processing_s", "fps", "latency_ms", "stages", "resources", "interrupted", "restarts",
    "duplicates_dropped",
]  # fmt: skip


def _base(**extra):
    return {"busy_s": 1.5, "stale_dropped": 0, "cpu_s": 2.0, **extra}


def _raw() -> dict[str, dict]:
    """What the stages send with ``done`` (as in pipeline/stages/*.py ``self.stats``)."""
    return {
        "capture": _base(frames_read=12, frames_dropped=2, decode_errors=1, replays=0, resumed_at=0,
                         reconnects=3, offline_s=1.25),
        "preprocess": _base(),
        "infer": _base(frames_processed=10, batches=5, batch_s_max=0.123456, backend="torch"),
        "postprocess": _base(instances=30),
        "publish": _base(frames_written=10, frames_published=10, frames_dropped=2, frames_done=10,
                         status_events={"eos": 1}, streams={"0": {"frames": 10, "dropped": 2}},
                         duplicates_dropped=1, early_dropped=0, tracks={"0": 4},
                         latency_ms={"p50": 10.0, "p95": 20.0, "p99": 30.0}),
    }


def _resources() -> ResourcePlan:
    return ResourcePlan(4, {name: StageBudget(threads=2 if name == "infer" else 1) for name in STAGES})


def _facts(**overrides) -> RunFacts:
    values = dict(run_id="abc", source="in.mp4", model="m", backend_selection="configured", device="cpu",
                  batch_size=2, resources=_resources(), wall_s=6.0, processing_s=4.0)
    return RunFacts(**{**values, **overrides})


def test_report_keys_and_values_from_typed_stats():
    report = build_report(RunStats.parse(_raw()), _facts(interrupted=True, restarts=[{"stage": "infer"}]))
    assert list(report) == REPORT_KEYS
    assert report["frames_read"] == 12 and report["frames_dropped"] == 2 and report["decode_errors"] == 1
    assert report["reconnects"] == 3 and report["offline_s"] == 1.25
    assert report["frames_processed"] == 10 and report["batches"] == 5 and report["backend"] == "torch"
    assert report["batch_s_max"] == 0.1235
    assert report["frames_written"] == report["frames_published"] == 10
    assert report["streams"] == {"0": {"frames": 10, "dropped": 2}} and report["status_events"] == {"eos": 1}
    assert report["latency_ms"] == {"p50": 10.0, "p95": 20.0, "p99": 30.0}
    assert report["duplicates_dropped"] == 1
    assert report["wall_s"] == 6.0 and report["processing_s"] == 4.0 and report["startup_s"] == 2.0
    assert report["fps"] == 2.5
    assert report["stages"]["infer"] == {"busy_s": 1.5, "busy_fraction": 0.375, "core_ms_per_frame": 200.0,
                                         "threads": 2}
    assert list(report["stages"]) == list(STAGES)
    assert report["resources"] == _resources().to_dict()
    assert report["interrupted"] is True and report["restarts"] == [{"stage": "infer"}]
    assert (report["run_id"], report["source"], report["model"], report["device"], report["batch_size"]) == (
        "abc", "in.mp4", "m", "cpu", 2)


def test_stages_that_never_reported_read_as_defaults():
    report = build_report(RunStats.parse({}), _facts(processing_s=0.0))
    assert report["frames_read"] == report["frames_published"] == report["batches"] == 0
    assert report["backend"] is None and report["offline_s"] == 0.0 and report["streams"] == {}
    assert report["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    assert report["fps"] == 0.0
    assert report["stages"]["capture"] == {"busy_s": 0.0, "busy_fraction": 0.0, "core_ms_per_frame": None,
                                           "threads": 1}


def test_optional_fields_may_be_absent_and_unknown_keys_are_ignored():
    raw = _raw()
    del raw["capture"]["reconnects"], raw["capture"]["offline_s"], raw["publish"]["latency_ms"]
    raw["postprocess"]["something_new"] = "x"
    stats = RunStats.parse(raw)
    assert stats.capture.reconnects == 0 and stats.capture.offline_s == 0.0
    assert stats.publish.latency_ms == {"p50": None, "p95": None, "p99": None}
    assert not hasattr(stats.postprocess, "something_new")


@pytest.mark.parametrize(("stage", "field"), [("capture", "frames_read"), ("infer", "backend"),
                                             ("publish", "frames_done"), ("preprocess", "busy_s")])
def test_a_missing_field_is_an_error_naming_stage_and_field(stage, field):
    raw = _raw()
    del raw[stage][field]
    with pytest.raises(StatsError, match=rf"stage '{stage}' stats: no '{field}'"):
        RunStats.parse(raw)


@pytest.mark.parametrize(("stage", "field", "value"), [
    ("capture", "frames_read", "12"), ("capture", "frames_read", 12.0), ("capture", "frames_read", True),
    ("infer", "batch_s_max", "0.1"), ("infer", "backend", 3), ("publish", "status_events", [1]),
    ("publish", "latency_ms", None),
])  # fmt: skip
def test_a_mistyped_field_is_an_error(stage, field, value):
    raw = _raw()
    raw[stage][field] = value
    with pytest.raises(StatsError, match=rf"stage '{stage}' stats: '{field}'"):
        RunStats.parse(raw)


def test_whole_numbers_are_taken_for_seconds():
    stats = CaptureStats.parse("capture", _raw()["capture"] | {"busy_s": 2, "offline_s": 0})
    assert stats.busy_s == 2.0 and isinstance(stats.busy_s, float) and isinstance(stats.offline_s, float)
    assert InferStats.parse("infer", _raw()["infer"] | {"backend": None}).backend is None


def test_each_stage_has_its_own_type():
    stats = RunStats.parse(_raw())
    assert isinstance(stats.capture, CaptureStats) and isinstance(stats.publish, PublishStats)
    assert type(stats.preprocess) is StageStats
    assert stats.postprocess.instances == 30
