"""In-process reference: the same model and the same ops as the pipeline, in one loop.

Tests compare the multi-process pipeline's published results with this path (they must be
identical: the pipeline only moves data around), and the benchmark uses it as the plain
sequential baseline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice

import torch

from engines.backends.base import Backend
from engines.outputs import InstanceOutput, SemanticOutput
from engines.transform import prepare_image
from pipeline.config import PipelineConfig
from pipeline.inference import infer_images, open_backend, same_transform, semantic_model_config
from pipeline.panoptic import PanopticLabels, PanopticParams, segment_record
from pipeline.postprocess import (
    InstanceFrame,
    PostprocessParams,
    class_map_from_output,
    instances_from_output,
    panoptic_from_output,
)
from pipeline.resources import ResourcePlan, plan_resources, usable_cores
from pipeline.results import FrameResult
from pipeline.sources import open_source
from pipeline.sources.base import Frame
from pipeline.tracking import Detections, RunTracking


def params_from_config(config: PipelineConfig) -> PostprocessParams:
    m = config.model
    return PostprocessParams(m.score_threshold, m.nms_iou, m.mask_threshold, m.max_detections)


def panoptic_params_from_config(config: PipelineConfig) -> PanopticParams:
    m = config.model
    return PanopticParams(m.score_threshold, m.panoptic_overlap, m.stuff_min_area)


def _batches(frames: Iterator[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@contextmanager
def _threads(count: int | None):
    """torch's intra-op threads set to ``count`` inside the block (None: unchanged)."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def segment_frames(
    backend: Backend,
    frames: Iterator[Frame],
    params: PostprocessParams,
    batch_size: int = 1,
    stream: str = "0",
    resources: ResourcePlan | None = None,
    semantic: Backend | None = None,
    panoptic_params: PanopticParams | None = None,
) -> Iterator[tuple[Frame, FrameResult, InstanceFrame | None]]:
    """Yield (frame, result, instance details) for every frame, in order.

    ``resources``: run the transform and the model with the thread counts the pipeline's
    preprocess and infer stages get, so results match theirs bit for bit (some CPU kernels
    split work by thread). None: this process's threads throughout. ``semantic``: panoptic
    mode, the semantic model fused with ``backend``'s instances (``panoptic_params``).
    """
    spec = backend.spec
    labels = PanopticLabels.of(spec, semantic.spec) if semantic is not None else None
    seq = 0
    prepare_threads = resources.budget("preprocess").threads if resources else None
    model_threads = resources.budget("infer").threads if resources else None
    for batch in _batches(frames, batch_size):
        with _threads(prepare_threads):
            images = [prepare_image(f.image, spec, device=backend.device) for f in batch]
        with _threads(model_threads):
            outputs, sizes = infer_images(backend, images)
            class_maps = [None] * len(batch)
            if semantic is not None:  # as the infer stage: its own transform there, if it needs one
                if not same_transform(spec, semantic.spec):
                    images = [prepare_image(f.image, semantic.spec, device=semantic.device) for f in batch]
                class_maps, _ = infer_images(semantic, images)
        for frame, size, output, semantic_output in zip(batch, sizes, outputs, class_maps, strict=True):
            frame_size = frame.image.shape[:2]
            result = FrameResult(
                stream=stream, seq=seq, width=frame_size[1], height=frame_size[0],
                model_id=labels.model_id if labels else spec.model_id, task="panoptic" if labels else spec.task,
                class_names=list(labels.class_names if labels else spec.class_names),
                untrained=labels.untrained if labels else spec.untrained,
                pts=frame.pts, time_base=frame.time_base, capture_ns=frame.capture_ns,
            )  # fmt: skip
            details = None
            if isinstance(output, InstanceOutput):
                details = instances_from_output(
                    output.boxes, output.scores, output.labels, output.mask_probs, size, frame_size, params
                )
                if labels is not None:
                    details = _fuse(result, details, semantic_output, labels, panoptic_params or PanopticParams())
                result.instances = details.instances
            else:
                result.class_map = class_map_from_output(output.class_map, frame_size)
            seq += 1
            yield frame, result, details


def _fuse(result: FrameResult, details: InstanceFrame, semantic_output: SemanticOutput, labels: PanopticLabels,
          params: PanopticParams) -> InstanceFrame:
    """Panoptic mode: fuse into ``result`` as the postprocess stage does; the instances with
    their published class ids."""
    class_map = class_map_from_output(semantic_output.class_map, (result.height, result.width))
    fused = panoptic_from_output(details, class_map, labels, params)
    result.panoptic = fused.segment_map
    result.segments = [segment_record(s) for s in fused.segments]
    return fused.details


def track_frame(tracking: RunTracking, frame: Frame, result: FrameResult, details: InstanceFrame,
                fps: float | None) -> None:
    """Give ``result``'s instances their track ids and classes, as the publish stage does."""
    detections = Detections.of(details.boxes, details.scores, details.labels,
                               [(c.x0, c.y0, c.mask) for c in details.crops])
    assignment = tracking.track(result.stream, result.seq, frame.pts, frame.time_base, frame.capture_ns, fps,
                                (result.height, result.width), detections)
    for instance, track_id, class_id in zip(result.instances, assignment.track_ids, assignment.classes, strict=True):
        instance.track_id, instance.class_id = track_id, class_id


def run_reference(config: PipelineConfig, batch_size: int | None = None) -> list[FrameResult]:
    """Results of ``config``'s first stream computed in this process (no video, no sockets);
    with tracking on, tracked as the pipeline tracks them."""
    resources = plan_resources(usable_cores(), **config.resources.plan_options())
    backend = open_backend(config.model, threads=resources.budget("infer").threads)
    semantic_config = semantic_model_config(config.model)
    semantic = open_backend(semantic_config, threads=resources.budget("infer").threads) if semantic_config else None
    source = open_source(config.source.uris[0])
    tracking = RunTracking(config.tracking.params()) if config.tracking.enabled else None
    fps = source.info().fps
    try:
        results = []
        for frame, result, details in segment_frames(
            backend,
            islice(source.frames(), config.source.max_frames),
            params_from_config(config),
            batch_size or config.batching.batch_size,
            resources=resources,
            semantic=semantic,
            panoptic_params=panoptic_params_from_config(config),
        ):
            if tracking is not None and details is not None:
                track_frame(tracking, frame, result, details, None if fps is None else float(fps))
            results.append(result)
        return results
    finally:
        source.close()
        backend.close()
        if semantic is not None:
            semantic.close()
