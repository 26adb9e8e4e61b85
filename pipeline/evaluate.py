"""Accuracy of saved pipeline results against synthetic (or any COCO-style) ground truth.

``python -m pipeline.evaluate --gt DIR --pred RESULTS.jsonl`` prints one JSON object.

* ``DIR`` is what ``python -m pipeline.synthetic`` writes: ``instances.json`` (COCO, image
  id = frame index, annotations with ``track_id``) and ``semantic/<frame:06d>.png`` (uint8
  class ids).
* ``RESULTS.jsonl`` is the pipeline's ``--save-results`` file: one ``segstream.frame``
  record per line; its ``seq`` is the frame index, i.e. the COCO image id.
* Panoptic results (``"task": "panoptic"``) are scored against ``DIR/panoptic.json`` +
  ``DIR/panoptic/`` (``python -m pipeline.synthetic --kind panoptic``); each record's
  ``panoptic.file_name`` is a PNG in ``RESULTS.panoptic/`` (see
  ``pipeline.sinks.panoptic_png``).

Instance results are scored with pycocotools' ``COCOeval`` (mask and box AP, AP50, AP75,
AP small/medium/large, AR@100 and per-class AP). Semantic results are scored from one
dataset-level confusion matrix with the FCN paper's pixel accuracy, mean accuracy, mean IoU
and frequency-weighted IoU (``pipeline.ops.metrics``), per class too. When the instances
carry ``track_id``, a ``"tracking"`` object adds HOTA, DetA, AssA, LocA, IDF1, IDP, IDR,
MOTA, MOTP, IDSW, Frag (mask IoU; combined, class-averaged, class-agnostic and per class:
see ``pipeline.evaluation.tracks``). Panoptic results get COCO's Panoptic Quality (PQ, SQ,
RQ for all, things and stuff, per class: ``pipeline.evaluation.panoptic``), one stream per
file; ``--save-coco-panoptic X.json`` also writes them as a COCO panoptic prediction
(``X.json`` + PNGs in ``X/``, panopticapi's layout). ``--save-mots DIR`` also writes the
tracked instances in the MOTS text format, ``DIR/<stream>.txt`` with one line per object
per frame ``frame class_id*1000+track_id class_id height width rle_counts``, masks made
non-overlapping first (see ``pipeline.evaluation.mots``).

By default every ground-truth frame counts: a frame without a prediction record counts as
"nothing detected" / "all background" (``frames_missing`` says how many);
``--only-predicted`` scores just the frames that have records. Records whose frame is not in
the ground truth are counted (``unknown_frames``) and skipped with a warning. ``--shift K``
moves the ground truth by K frames (GT frame i is compared with record seq i + K): a
pipeline that is off by one frame shows up as a drop in every score.

The scoring lives in ``pipeline.evaluation``; its public names are re-exported here.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.evaluation.instances import evaluate_instances
from pipeline.evaluation.records import (
    SCHEMA,
    SUPPORTED_MAJOR,
    EvaluationError,
    frame_record,
    has_track_ids,
    load_ground_truth,
    load_predictions,
    load_semantic_maps,
)
from pipeline.evaluation.records import _check_record as _check_record
from pipeline.evaluation.records import _finite as _finite
from pipeline.evaluation.records import _index_records as _index_records
from pipeline.evaluation.semantic import evaluate_semantic, record_class_map

__all__ = [
    "SCHEMA",
    "SUPPORTED_MAJOR",
    "EvaluationError",
    "evaluate_dir",
    "evaluate_instances",
    "evaluate_semantic",
    "frame_record",
    "load_ground_truth",
    "load_predictions",
    "load_semantic_maps",
    "main",
    "record_class_map",
]

_COCO_PANOPTIC_HELP = (
    "panoptic results only: also write them as a COCO panoptic prediction, PATH (.json) "
    "plus the PNGs copied to PATH without .json (panopticapi's layout)"
)
_MOTS_HELP = (
    "also write the tracked instances as MOTS text, DIR/<stream>.txt: one line per object "
    "per frame, 'frame class_id*1000+track_id class_id height width rle_counts' (COCO RLE "
    "counts; masks made non-overlapping first, the higher score wins each pixel)"
)


def _task_of(records: list[dict[str, Any]], pred_path: str | Path) -> str:
    def task(r: dict[str, Any]) -> str:
        if r.get("task"):
            return str(r["task"])
        return "panoptic" if r.get("panoptic") else "semantic" if r.get("semantic") else "instance"

    tasks = {task(r) for r in records}
    if len(tasks) > 1:
        raise EvaluationError(f"{pred_path}: mixed tasks {sorted(tasks)}; pass --task")
    return tasks.pop()


def _semantic(gt_dir, coco, records, shift: int, only_predicted: bool) -> dict[str, Any]:
    cats = sorted(coco["categories"], key=lambda c: int(c["id"]))
    names = ["background"] * (max(int(c["id"]) for c in cats) + 1)
    for c in cats:
        names[int(c["id"])] = str(c["name"])
    maps = load_semantic_maps(gt_dir, [int(img["id"]) for img in coco["images"]])
    return evaluate_semantic(
        maps, records, class_names=names, shift=shift, only_predicted=only_predicted
    )


def evaluate_dir(
    gt_dir: str | Path,
    pred_path: str | Path,
    *,
    task: str = "auto",
    shift: int = 0,
    only_predicted: bool = False,
    save_mots: str | Path | None = None,
    save_coco_panoptic: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a results file against a ground-truth directory (what the CLI prints).

    Tracking metrics (``"tracking"``) are added when the instances carry ``track_id``;
    ``save_mots``: directory for the MOTS text files (needs ``track_id`` on every instance);
    ``save_coco_panoptic``: JSON path for the panoptic predictions in COCO panoptic form.
    """
    if not Path(gt_dir).is_dir():
        raise EvaluationError(f"ground-truth directory not found: {gt_dir}")
    records = load_predictions(pred_path)
    if not records:
        raise EvaluationError(f"{pred_path}: no prediction records")
    if task == "auto":
        task = _task_of(records, pred_path)
    models = sorted({str(r.get("model")) for r in records if r.get("model") is not None})
    out: dict[str, Any] = {"gt": str(gt_dir), "pred": str(pred_path), "model": models}
    if save_mots is not None:  # first: it fails fast on predictions without track ids
        from pipeline.evaluation.mots import write_mots

        if task != "instance":
            raise EvaluationError(f"{pred_path}: --save-mots needs instance results, not {task}")
        paths = write_mots(records, save_mots, source=str(pred_path))
        out["mots_files"] = [str(p) for p in paths]
    if save_coco_panoptic is not None and task != "panoptic":
        raise EvaluationError(
            f"{pred_path}: --save-coco-panoptic needs panoptic results, not {task}"
        )
    if task == "panoptic":
        from pipeline.evaluation.panoptic_records import evaluate_panoptic_records

        scores = evaluate_panoptic_records(
            gt_dir, records, pred_path, shift=shift, only_predicted=only_predicted,
            save_coco=save_coco_panoptic,
        )  # fmt: skip
        out.update(scores)
        return out
    coco = load_ground_truth(gt_dir)
    if task == "instance":
        out.update(evaluate_instances(coco, records, shift=shift, only_predicted=only_predicted))
        if has_track_ids(records):  # scipy is loaded only here
            from pipeline.evaluation.tracks import evaluate_tracking

            out["tracking"] = evaluate_tracking(
                coco, records, shift=shift, only_predicted=only_predicted,
                gt_source=str(Path(gt_dir) / "instances.json"), pred_source=str(pred_path),
            )  # fmt: skip
    elif task == "semantic":
        out.update(_semantic(gt_dir, coco, records, shift, only_predicted))
    else:
        raise EvaluationError(f"unknown task {task!r} (instance, semantic, panoptic or auto)")
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.evaluate",
        description="Score saved pipeline results (--save-results JSON lines) against ground "
        "truth. Tracking metrics (HOTA, IDF1, MOTA, ...) are added when the instances carry "
        "track_id.",
    )
    parser.add_argument(
        "--gt",
        required=True,
        help="ground-truth directory (instances.json, semantic/; panoptic.json, panoptic/)",
    )
    parser.add_argument(
        "--pred", required=True, help="results file (JSON lines, one record per frame)"
    )
    parser.add_argument(
        "--task", default="auto", choices=("auto", "instance", "semantic", "panoptic")
    )
    parser.add_argument(
        "--shift", type=int, default=0, help="compare GT frame i with record seq i + SHIFT"
    )
    parser.add_argument(
        "--only-predicted", action="store_true", help="score only frames that have a record"
    )
    parser.add_argument("--save-mots", metavar="DIR", help=_MOTS_HELP)
    parser.add_argument("--save-coco-panoptic", metavar="PATH", help=_COCO_PANOPTIC_HELP)
    parser.add_argument("--indent", type=int, default=2, help="JSON indent (0 = one line)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line: print the scores as JSON; 2 with one ``error:`` line on bad input."""
    args = _parser().parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = evaluate_dir(
                args.gt,
                args.pred,
                task=args.task,
                shift=args.shift,
                only_predicted=args.only_predicted,
                save_mots=args.save_mots,
                save_coco_panoptic=args.save_coco_panoptic,
            )
        for message in dict.fromkeys(str(w.message) for w in caught):  # each once
            print(f"warning: {message}", file=sys.stderr)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(_finite(result), indent=args.indent or None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
