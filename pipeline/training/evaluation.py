"""Held-out accuracy of a demo model: on rendered frames in memory, or through a video.

Scoring is ``pipeline.evaluate``'s (COCO mask / box AP for instances, IoU for semantic
maps), on predictions of ``Task.predict`` written as the pipeline's saved-results records.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engines.weights import file_tag
from pipeline.synthetic import SceneFrame
from pipeline.training.checkpoints import load_checkpoint
from pipeline.training.tasks import Task, get_task

__all__ = ["evaluate_frames", "evaluate_video", "predict", "prediction_record"]


def predict(model_name: str | Task, model: nn.Module, image: np.ndarray, score_thresh: float = 0.05):
    """Run a demo model on one HxWx3 uint8 RGB frame (see ``Task.predict``)."""
    return get_task(model_name).predict(model, image, score_thresh)


def prediction_record(
    model_name: str | Task, model_id: str, seq: int, image: np.ndarray, pred: Any
) -> dict[str, Any]:
    """The saved-results record (``pipeline.evaluate.frame_record``) of one prediction."""
    return get_task(model_name).record(model_id, seq, image, pred)


def evaluate_frames(
    model_name: str | Task, model: nn.Module, frames: Iterable[SceneFrame], model_id: str = "demo"
) -> dict[str, Any]:
    """Held-out accuracy of ``model`` on in-memory ground-truth frames."""
    task = get_task(model_name)
    frames = list(frames)
    records = [
        task.record(model_id, fr.index, fr.image, task.predict(model, fr.image)) for fr in frames
    ]
    return task.metrics(frames, records)


def evaluate_video(
    ckpt: str | Path,
    gt: str | Path,
    save_results: str | Path | None = None,
    max_frames: int | None = None,
    threads: int = 1,
) -> int:
    """Evaluate checkpoint ``ckpt`` on a ground-truth directory of ``python -m
    pipeline.synthetic``: decode its video with PyAV (as the pipeline would), write the
    results records, print the scores as JSON. Returns the exit code."""
    import av

    from pipeline.evaluate import _finite, evaluate_dir

    torch.set_num_threads(threads)
    ckpt = Path(ckpt)
    name, model, _meta = load_checkpoint(ckpt)
    task = get_task(name)
    gt = Path(gt)
    video = gt / "video.mp4"
    if not video.is_file():
        print(
            f"error: {video} not found (write it with python -m pipeline.synthetic)",
            file=sys.stderr,
        )
        return 2
    results = Path(save_results) if save_results else gt / f"{name}.jsonl"
    model_id = f"{name}@{file_tag(ckpt)}"
    t0 = time.time()
    n = 0
    with av.open(str(video)) as container, results.open("w", encoding="utf-8") as fh:
        for seq, frame in enumerate(container.decode(video=0)):
            if max_frames and seq >= max_frames:
                break
            image = frame.to_ndarray(format="rgb24")
            rec = task.record(model_id, seq, image, task.predict(model, image))
            fh.write(json.dumps(rec) + "\n")
            n += 1
    print(f"[eval] {n} frames in {time.time() - t0:.1f}s -> {results}", file=sys.stderr)
    res = evaluate_dir(gt, results, only_predicted=bool(max_frames))
    print(json.dumps(_finite(res), indent=2))
    return 0
