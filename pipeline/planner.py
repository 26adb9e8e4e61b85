"""The planner: config + what the sources say + the machine -> every decision of a run.

A pure function (:func:`decide`): no sockets, files or processes, so each rule is tested
directly (tests/test_planner.py). The supervisor calls it once and writes the result into
the run plan; stages read the decisions instead of working the mode out again.

Decisions:

- **batching**: ``fixed`` for one finite stream (batch ``k`` = frames ``k*n..(k+1)*n-1``,
  results never depend on timing, replays re-form the same batches), ``timed`` for live
  feeds and several streams (whatever waits, up to ``batch_size`` or ``max_wait_ms``);
- **commit granularity**: with video, a commit at every closed overlay segment
  (``segment_frames``, whole batches); without, every fixed batch (or every frame);
- **delivery** per stream: ``lossless`` for files and folders, else the live policy;
- **admissions**: live feeds admit at most one batch ahead of the model;
- **ring**: how many slots, and the bytes of a frame, a model input and an overlay;
- **resources**: the thread budget of every stage (:mod:`pipeline.resources`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from engines.registry import get_model_entry
from engines.transform import target_size
from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError
from pipeline.resources import ResourcePlan, plan_resources
from pipeline.sources.base import SourceInfo


@dataclass(frozen=True)
class RunDecisions:
    """Everything decided once for a run (see the module docs)."""

    batching: Literal["fixed", "timed"]
    batch_size: int
    commit_every: int  # without video: frames per commit point
    segment_frames: int | None  # with video: frames per overlay segment (a commit point)
    delivery: dict[str, str]  # stream id -> "lossless" | "latest" | "drop_oldest" | "block"
    admissions: bool
    ring_slots: int
    frame_bytes: int
    input_bytes: int
    overlay_bytes: int
    resources: ResourcePlan

    @property
    def fixed_batch_size(self) -> int | None:
        return self.batch_size if self.batching == "fixed" else None


def held_by_publish(config: PipelineConfig, live: bool) -> int:
    """Frames publish keeps until they are committed: the overlay segment it is writing, per
    stream (a restarted publish encodes them again); a file without video, its current batch
    (a replay re-forms whole batches)."""
    streams = len(config.source.uris)
    if config.output.video:
        return config.segment_frames() * streams
    return config.batching.batch_size if streams == 1 and not live else 0


def ring_slots(config: PipelineConfig, live: bool) -> int:
    """Slots in the ring: enough that capture, the model and publish never wait on each other
    for want of one; an explicit ``transport.ring_slots`` below that is an error."""
    held = held_by_publish(config, live)
    if config.transport.ring_slots is not None:
        needed = max(held, config.batching.batch_size) + 1
        if config.transport.ring_slots < needed:
            # fewer slots would wait forever: publish cannot commit, capture cannot read
            raise ConfigError(
                f"transport.ring_slots: {config.transport.ring_slots} is too few for batch_size "
                f"{config.batching.batch_size} with {held} frame(s) held by publish; needs at least {needed}"
            )
        return config.transport.ring_slots
    if live:
        # one batch in the model, one waiting (capture admits no more, so a frame waits at
        # most two inference times plus one frame interval), the next few in post-stages
        return max(2, 2 * config.batching.batch_size) + 2 + held
    # enough for a full batch in the model, the next batch waiting, and the queues between
    return 2 * config.batching.batch_size + 2 * config.transport.queue_depth + 2 + held


def input_bytes(config: PipelineConfig, info: SourceInfo) -> int:
    """Largest float32 model input any frame of this source can produce (0 on a GPU: the
    transform runs inside the infer stage there)."""
    if config.model.device != "cpu":
        return 0
    entry = get_model_entry(config.model.name)
    min_size = config.model.min_size or entry.min_size
    max_size = config.model.max_size or entry.max_size
    sizes = info.extra.get("sizes") or [(info.height, info.width)]
    largest = max(math.prod(target_size(h, w, min_size, max_size)) for h, w in sizes)
    return 3 * 4 * largest


def combined(infos: list[SourceInfo]) -> SourceInfo:
    """One description covering every stream: the ring must hold the largest frame."""
    if len(infos) == 1:
        return infos[0]
    counts = [i.frame_count for i in infos]
    sizes = [size for i in infos for size in (i.extra.get("sizes") or [(i.height, i.width)])]
    return SourceInfo(
        width=max(i.width for i in infos),
        height=max(i.height for i in infos),
        fps=infos[0].fps,
        frame_count=None if None in counts else sum(counts),
        time_base=infos[0].time_base,
        live=any(i.live for i in infos),
        extra={"sizes": sizes},
    )


def decide(config: PipelineConfig, infos: list[SourceInfo], cores: int) -> RunDecisions:
    """Every decision of a run with these streams (``infos``, one per ``source.uris``) on a
    machine with ``cores`` usable cores."""
    if len(infos) != len(config.source.uris):
        raise ValueError(f"{len(infos)} source infos for {len(config.source.uris)} streams")
    info = combined(infos)
    live = info.live
    fixed = not live and len(infos) == 1
    frame_bytes = info.width * info.height * 3
    return RunDecisions(
        batching="fixed" if fixed else "timed",
        batch_size=config.batching.batch_size,
        commit_every=config.batching.batch_size if fixed else 1,
        segment_frames=config.segment_frames() if config.output.video else None,
        delivery={str(i): (config.source.live_policy if stream.live else "lossless")
                  for i, stream in enumerate(infos)},
        admissions=live,
        ring_slots=ring_slots(config, live),
        frame_bytes=frame_bytes,
        input_bytes=input_bytes(config, info),
        overlay_bytes=frame_bytes if config.output.video else 0,
        resources=plan_resources(cores, **config.resources.plan_options(), live=live),
    )
