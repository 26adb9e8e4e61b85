"""The run plan: everything a stage process needs, written by the supervisor as JSON.

A stage is started as ``python -m pipeline.stages NAME PLAN.json``; the plan names the
sockets, the shared-memory ring, the model spec and the source, so stages never guess.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from engines.backends.base import ModelSpec
from pipeline.config import PipelineConfig
from pipeline.panoptic import PanopticLabels
from pipeline.resources import ResourcePlan, StageBudget
from pipeline.sources.base import SourceInfo

STAGES = ("capture", "preprocess", "infer", "postprocess", "publish")


@dataclass
class RunPlan:
    """Shared facts of one run (serialisable)."""

    run_id: str
    run_dir: str
    config: dict[str, Any]
    # "<stage>_in" (bound by that stage), "release", "admissions" (both bound by capture), "events", "control"
    endpoints: dict[str, str]
    inline_hops: list[str]  # senders whose hop is tcp: pixel data travels inside the message
    ring_name: str
    ring_slots: int
    spec: dict[str, Any]
    source: dict[str, Any]  # combined: the largest frame size over all streams
    streams: list[dict[str, Any]] = field(default_factory=list)  # [{"id", "uri", "info"}]
    stream_id: str = "0"
    extra: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)  # ResourcePlan.to_dict(): budget per stage
    # the planner's decisions (pipeline/planner.py): batching, commit_every, delivery, admissions
    decisions: dict[str, Any] = field(default_factory=dict)
    semantic_spec: dict[str, Any] = field(default_factory=dict)  # panoptic mode: the semantic model's spec

    # -- typed views ---------------------------------------------------------------------
    def pipeline_config(self) -> PipelineConfig:
        return PipelineConfig.model_validate(self.config)

    def model_spec(self) -> ModelSpec:
        """The (instance, in panoptic mode) model's spec, as infer loaded it."""
        return _spec_from_dict(self.spec)

    def panoptic_labels(self) -> PanopticLabels | None:
        """Panoptic mode: the published classes of both models (None: one model runs)."""
        if not self.semantic_spec:
            return None
        return PanopticLabels.of(self.model_spec(), _spec_from_dict(self.semantic_spec))

    def stage_budget(self, stage: str) -> StageBudget:
        """The threads (and cores) the resource plan gives ``stage`` (one thread if unplanned)."""
        if not self.resources:
            return StageBudget(threads=1)
        return ResourcePlan.from_dict(self.resources).budget(stage)

    def source_info(self, stream: str | None = None) -> SourceInfo:
        """The combined source info, or one stream's."""
        data = dict(self.source)
        if stream is not None:
            data = dict(next(s["info"] for s in self.streams if s["id"] == stream))
        for key in ("fps", "time_base"):
            if data.get(key) is not None:
                data[key] = Fraction(*data[key])
        return SourceInfo(**data)

    def fixed_batch_size(self) -> int | None:
        """Files (one stream, lossless) are batched by seq: frames ``k*n .. (k+1)*n - 1`` form
        batch ``k`` (``n`` the batch size, returned here). A frame's numbers can depend on its
        batch mates (kernel choice varies with batch size), so fixed batches keep results
        independent of timing, and a replay after a restart reproduces them bit for bit.
        None for live feeds and several streams, which batch whatever is waiting."""
        if self.decisions:
            return int(self.decisions["batch_size"]) if self.decisions["batching"] == "fixed" else None
        if self.source.get("live") or len(self.streams) > 1:
            return None
        return int(self.config["batching"]["batch_size"])

    def admissions(self) -> bool:
        """Live feeds: capture admits at most one batch ahead of the model (decided once)."""
        return bool(self.decisions["admissions"]) if self.decisions else bool(self.source.get("live"))

    def tracking(self) -> bool:
        """Instance models are tracked when ``tracking.enabled`` (semantic ones have no
        instances): postprocess then sends the masks along and publish tracks and draws."""
        return bool(self.config.get("tracking", {}).get("enabled", False)) and self.spec.get("task") == "instance"

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> RunPlan:
        return cls(**json.loads(Path(path).read_text()))


def _spec_from_dict(spec: dict[str, Any]) -> ModelSpec:
    data = dict(spec)
    for key in ("class_names", "image_mean", "image_std"):
        data[key] = tuple(data[key])
    return ModelSpec(**data)


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    data = asdict(spec)
    data["class_names"] = list(spec.class_names)
    return data


def source_info_to_dict(info: SourceInfo) -> dict[str, Any]:
    data = asdict(info)
    for key in ("fps", "time_base"):
        value = getattr(info, key)
        data[key] = None if value is None else [value.numerator, value.denominator]
    return data
