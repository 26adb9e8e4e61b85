"""Held-out accuracy of the demo segmentation models on rendered video clips.

``python -m pipeline.evaluation.model_study [--models M ...] [--seeds S ...] [--frames N] [--json OUT]
[--markdown OUT.md]`` renders held-out synthetic clips (``pipeline.synthetic``: H.264 video and ground
truth), runs each model over the decoded video in this process exactly as the pipeline computes it
(``pipeline.reference.segment_frames`` with ``run_reference``'s config and thread plan; a model's
backends are opened once for all its clips), saves the records as the publish stage does (JSON lines,
panoptic PNGs) and scores them with ``pipeline.evaluate.evaluate_dir``: instance models by COCO mask and
box AP, semantic models by the FCN paper's scores (per clip, and pooled over every frame of every clip
from one confusion matrix), panoptic pairs ``INSTANCE+SEMANTIC`` by PQ.

Held-out rule (fixed): scene seeds ``HELD_OUT_SEEDS`` = 7000-7009, never used for training (seeds
1000-1999) nor to pick a checkpoint (validation, if any, uses 6000-6999; both ranges are refused), each
at 640x480, 800x600 and 1280x720 (30 clips per model), ``--frames`` frames per clip (default 8) at 2 fps
(4 s of the scene). Scene kind ``panoptic`` (things in front of sky / wall / grass / road / water) for
every model, except a semantic model without the stuff classes (``fcn_demo``: shapes only), scored on
kind ``default`` (on panoptic scenes its stuff pixels would count against classes it cannot know);
``--kind`` picks another kind for instance models. Each model entry records its scene kind. Models
whose demo weights are missing are skipped with one line; ``--weights NAME=PATH`` scores a checkpoint
instead of NAME's demo weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from engines.models.demo_classes import DEMO_STUFF_NAMES
from engines.registry import get_model_entry
from engines.weights import demo_weights_path
from pipeline.bench import commit, machine
from pipeline.config import config_from_dict
from pipeline.errors import PipelineError
from pipeline.evaluate import evaluate_dir
from pipeline.evaluation.records import (
    _finite,
    load_ground_truth,
    load_predictions,
    load_semantic_maps,
)
from pipeline.evaluation.semantic import record_class_map
from pipeline.inference import open_backend, semantic_model_config
from pipeline.ops.metrics import confusion_matrix, semantic_scores
from pipeline.reference import panoptic_params_from_config, params_from_config, segment_frames
from pipeline.resources import plan_resources, usable_cores
from pipeline.sinks.panoptic_png import frame_png_name, panoptic_folder, write_id_png
from pipeline.sources import open_source
from pipeline.synthetic import KINDS
from pipeline.synthetic.__main__ import _size, write_scene

__all__ = ["HELD_OUT_SEEDS", "MODELS", "Clip", "main", "model_config", "study"]

HELD_OUT_SEEDS = range(7000, 7010)
TRAINING_SEEDS = range(1000, 2000)
VALIDATION_SEEDS = range(6000, 7000)
SIZES = ((640, 480), (800, 600), (1280, 720))
FPS = 2
FRAMES = 8
KIND = "panoptic"
BATCH_SIZE = 4
ABSENT_SHARE_GOAL = 0.001  # a class absent from a clip's ground truth gets at most 0.1 % of its pixels
MODELS = ("maskrcnn_demo", "fcn_demo", "unet_demo", "fcn32s_demo", "fcn16s_demo", "fcn8s_demo",
          "maskrcnn_demo+unet_demo", "maskrcnn_demo+fcn8s_demo")
SEMANTIC_ROWS = ("fcn32s_demo", "fcn16s_demo", "fcn8s_demo", "unet_demo", "fcn_demo")


@dataclass(frozen=True)
class Clip:
    """One held-out clip: scene kind and seed, frame size and frame count (at ``FPS``)."""

    kind: str
    seed: int
    width: int
    height: int
    frames: int = FRAMES

    @property
    def name(self) -> str:
        return f"{self.kind}/seed{self.seed}/{self.width}x{self.height}"

    @property
    def folder(self) -> str:
        return f"{self.kind}-{self.seed}-{self.width}x{self.height}-{self.frames}f"


def render_clip(clip: Clip, root: Path) -> Path:
    """``root/<clip.folder>``: the clip's video and ground truth, rendered once and reused
    (written to a temporary sibling and renamed, so a folder that exists is complete)."""
    out = root / clip.folder
    if out.is_dir():
        return out
    tmp = root / f".{clip.folder}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write_scene(tmp, clip.seed, clip.frames, (clip.width, clip.height), Fraction(FPS), progress=False, kind=clip.kind)
    tmp.rename(out)
    return out


def model_config(name: str, video: str | Path, weights: dict[str, str] | None = None) -> Any:
    """The pipeline config the study runs ``name`` (``A+B``: panoptic) with on ``video``;
    ``weights``: checkpoint per model name instead of its demo weights."""
    weights = weights or {}
    instance, _, semantic = name.partition("+")
    model = {"name": name, "weights": weights.get(instance, "demo"), "backend": "pytorch"}
    if semantic:
        model["semantic_weights"] = weights.get(semantic, "demo")
    return config_from_dict({"source": {"uri": str(video)}, "model": model, "batching": {"batch_size": BATCH_SIZE},
                             "tracking": {"enabled": False}, "output": {"video": None, "publish": None}})


class Runner:
    """A model's backends, opened once for all clips as ``run_reference`` opens them."""

    def __init__(self, config: Any) -> None:
        self.config, self.params = config, params_from_config(config)
        self.panoptic_params = panoptic_params_from_config(config)
        self.resources = plan_resources(usable_cores(), **config.resources.plan_options())
        threads = self.resources.budget("infer").threads
        self.backend = open_backend(config.model, threads=threads)
        semantic = semantic_model_config(config.model)
        try:
            self.semantic = open_backend(semantic, threads=threads) if semantic else None
        except BaseException:
            self.backend.close()
            raise

    def predict(self, video: Path, results: Path) -> set[str]:
        """Write the records of ``video`` to ``results`` (JSON lines; panoptic PNGs next to it,
        as the publish stage saves them); returns the model ids of the records."""
        results.parent.mkdir(parents=True, exist_ok=True)
        pngs, ids, source = panoptic_folder(results), set(), open_source(str(video))
        try:
            with results.open("w") as out:
                for _, result, _ in segment_frames(
                    self.backend, islice(source.frames(), self.config.source.max_frames), self.params,
                    self.config.batching.batch_size, resources=self.resources, semantic=self.semantic,
                    panoptic_params=self.panoptic_params,
                ):  # fmt: skip
                    record = result.to_json()
                    if result.panoptic is not None:
                        record["panoptic"]["file_name"] = name = frame_png_name(result.stream, result.seq)
                        write_id_png(pngs / name, result.panoptic)
                    ids.add(str(record.get("model")))
                    out.write(json.dumps(record, separators=(",", ":")) + "\n")
        finally:
            source.close()
        return ids

    def scene_kind(self, instance_kind: str) -> str:
        """``panoptic``; ``instance_kind`` for an instance model, ``default`` for a semantic
        model without the stuff classes."""
        spec = self.backend.spec
        if self.semantic is not None or spec.task == "instance":
            return KIND if self.semantic is not None else instance_kind
        return KIND if set(DEMO_STUFF_NAMES) <= set(spec.class_names) else "default"

    def close(self) -> None:
        self.backend.close()
        if self.semantic is not None:
            self.semantic.close()


def clip_confusion(clip_dir: Path, results: Path, num_classes: int) -> np.ndarray:
    """Confusion matrix [K, K] (GT class row, predicted column) over all frames of a clip,
    counted as ``evaluate_dir`` counts semantic records (no record: all background; 255 as
    background); summed over clips it gives the pooled scores."""
    ids = [int(img["id"]) for img in load_ground_truth(clip_dir)["images"]]
    maps = load_semantic_maps(clip_dir, ids)
    by_seq = {int(r["seq"]): r for r in load_predictions(results)}
    conf = np.zeros((num_classes, num_classes), np.int64)
    for i in ids:
        pred = record_class_map(by_seq[i]) if i in by_seq else np.zeros_like(maps[i])
        conf += confusion_matrix(maps[i], np.where(pred == 255, 0, pred), num_classes)
    return conf


def absent_share(conf: np.ndarray) -> tuple[float, int | None]:
    """The largest share of all pixels predicted as one class absent from the ground truth,
    and that class (None when no pixel went to an absent class)."""
    predicted = np.where(conf.sum(axis=1) == 0, conf.sum(axis=0), 0)
    j = int(predicted.argmax())
    return float(predicted[j] / max(1, int(conf.sum()))), (j if predicted[j] else None)


def _num(value: Any) -> float | None:
    return _finite(float(value)) if value is not None else None


SEMANTIC_KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou")
SUMMARY_KEYS = {"instance": ("mask_AP", "mask_AP50", "box_AP"), "panoptic": ("PQ", "PQ_things", "PQ_stuff"),
                "semantic": ("mean_iou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou")}


def score_clip(clip_dir: Path, results: Path) -> tuple[dict[str, Any], np.ndarray | None]:
    """``evaluate_dir``'s scores of one clip, condensed; for semantic results also its
    confusion matrix (checked against ``evaluate_dir``'s mean IoU)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = evaluate_dir(clip_dir, results)
    conf, segm, bbox = None, s.get("segm", {}), s.get("bbox", {})
    if s["task"] == "instance":
        m = {"mask_AP": segm["AP"], "mask_AP50": segm["AP50"], "mask_AP75": segm["AP75"], "box_AP": bbox["AP"],
             "box_AP50": bbox["AP50"], "gt_instances": s["gt_instances"], "pred_instances": s["pred_instances"],
             "per_class_mask_AP": segm["per_class_AP"]}
    elif s["task"] == "semantic":
        names = list(s["per_class_iou"])
        conf = clip_confusion(clip_dir, results, len(names))
        if not np.isclose(semantic_scores(conf)["mean_iou"], s["mean_iou"], equal_nan=True):
            raise RuntimeError(f"{results}: the confusion matrix disagrees with evaluate_dir")
        share, cls = absent_share(conf)
        m = {key: s[key] for key in SEMANTIC_KEYS}
        m.update(absent_class_share=share, absent_class=None if cls is None else names[cls],
                 per_class_iou=s["per_class_iou"])
    else:
        m = {"PQ": s["pq"], "SQ": s["sq"], "RQ": s["rq"], "PQ_things": s["things"]["pq"],
             "PQ_stuff": s["stuff"]["pq"], "per_class_PQ": {k: v["pq"] for k, v in s["per_class"].items()}}
    m["frames"] = s["frames"]
    if caught:
        m["warnings"] = list(dict.fromkeys(str(w.message) for w in caught))
    return {"task": s["task"], **m}, conf


def _stat(values: Iterable[Any], worst: Callable[[list[float]], float] = min) -> dict[str, Any]:
    """Mean and worst of the finite values (a clip where a score is undefined is left out)."""
    vals = [v for v in map(_num, values) if v is not None]
    return {"mean": float(np.mean(vals)) if vals else None, "worst": worst(vals) if vals else None,
            "clips": len(vals)}


def pooled_scores(confs: Sequence[np.ndarray], names: list[str]) -> dict[str, Any]:
    """FCN-paper scores of the clips' confusion matrices summed (every pixel of every frame of
    every clip weighs the same)."""
    k = max(c.shape[0] for c in confs)
    total = np.zeros((k, k), np.int64)
    for c in confs:
        total[: c.shape[0], : c.shape[1]] += c
    s = semantic_scores(total)
    per_class = dict(zip(names, s["per_class_iou"], strict=False))
    return {**{k: s[k] for k in SEMANTIC_KEYS}, "per_class_iou": per_class, "clips": len(confs),
            "pixels": int(total.sum())}


def summarize(task: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and worst (min over clips; for the absent-class share: max) of the headline scores."""
    out = {key: _stat(r["metrics"][key] for r in rows) for key in SUMMARY_KEYS[task]}
    if task == "semantic":
        share = out["absent_class_share"] = _stat((r["metrics"]["absent_class_share"] for r in rows), max)
        share.update(goal=ABSENT_SHARE_GOAL, meets_goal=None if share["worst"] is None
                     else share["worst"] <= ABSENT_SHARE_GOAL)
    return out


def missing_weights(name: str, weights: dict[str, str]) -> str | None:
    """Why ``name`` cannot be scored (no demo weights and no ``--weights``), else None."""
    for part in name.split("+"):
        get_model_entry(part)  # an unknown name is an error, not a skip
        if part not in weights and not demo_weights_path(part).is_file():
            return f"no demo weights at {demo_weights_path(part)}"
    return None


def study(models: Sequence[str], seeds: Sequence[int], sizes: Sequence[tuple[int, int]], frames: int,
          root: Path, weights: dict[str, str] | None = None, instance_kind: str = KIND,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Score ``models`` on the clips ``seeds`` x ``sizes`` (rendered under ``root``, results
    in ``root/results``); returns ``{"models": {name: entry}, "skipped": [...]}``."""
    weights, runnable, skipped, entries = weights or {}, [], [], {}
    for name in models:
        if reason := missing_weights(name, weights):
            log(f"skip {name}: {reason}")
            skipped.append({"model": name, "reason": reason})
        else:
            runnable.append(name)
    total, done, start = len(runnable) * len(seeds) * len(sizes), 0, time.perf_counter()
    for name in runnable:
        runner = Runner(model_config(name, root / "video.mp4", weights))
        kind, rows, confs, ids = runner.scene_kind(instance_kind), [], [], set()
        try:
            for seed in seeds:
                for width, height in sizes:
                    t0, done, clip = time.perf_counter(), done + 1, Clip(kind, seed, width, height, frames)
                    clip_dir = render_clip(clip, root)
                    results = root / "results" / name / f"{clip.folder}.jsonl"
                    ids |= runner.predict(clip_dir / "video.mp4", results)
                    metrics, conf = score_clip(clip_dir, results)
                    confs += [] if conf is None else [conf]
                    rows.append({"clip": clip.name, "seed": seed, "size": f"{width}x{height}", "frames": frames,
                                 "seconds": time.perf_counter() - t0, "metrics": metrics})
                    head = SUMMARY_KEYS[metrics["task"]][0]
                    log(f"[{done}/{total}] {name} {clip.name}: {head} {_num(metrics[head]) or 0:.3f} "
                        f"({time.perf_counter() - t0:.1f} s, elapsed {time.perf_counter() - start:.0f} s)")
        finally:
            runner.close()
        task, (instance, _, semantic) = rows[0]["metrics"]["task"], name.partition("+")
        entries[name] = {"task": task, "scene_kind": kind, "model_ids": sorted(ids),
                         "weights": {p: weights.get(p, "demo") for p in (instance, semantic) if p},
                         "clips": rows, "summary": summarize(task, rows),
                         "seconds": sum(r["seconds"] for r in rows)}
        if confs:
            entries[name]["pooled"] = pooled_scores(confs, list(rows[0]["metrics"]["per_class_iou"]))
    return {"models": entries, "skipped": skipped}


# ------------------------------------------------------------------------------ command line

def _weights(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def _seed_error(seeds: Sequence[int]) -> str | None:
    for seed in seeds:
        for used, why in ((TRAINING_SEEDS, "a training seed"), (VALIDATION_SEEDS, "a validation seed")):
            if seed in used:
                return (f"seed {seed} is {why} ({used.start}-{used.stop - 1}); held-out seeds are "
                        f"{HELD_OUT_SEEDS.start}-{HELD_OUT_SEEDS.stop - 1}")
    return None


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); 2 with one ``error:`` line on bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluation.model_study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="M",
                        help="models; A+B = instance A fused with semantic B (default: %(default)s)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(HELD_OUT_SEEDS), metavar="S",
                        help="scene seeds (default: the held-out 7000-7009)")
    parser.add_argument("--sizes", nargs="+", type=_size, default=list(SIZES), help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=FRAMES, help=f"frames per clip at {FPS} fps (default 8)")
    parser.add_argument("--kind", choices=KINDS, default=KIND, help="scene kind of instance models (default panoptic)")
    parser.add_argument("--weights", type=_weights, action="append", default=[], metavar="NAME=PATH",
                        help="score checkpoint PATH for model NAME instead of its demo weights (repeatable)")
    parser.add_argument("--clips", metavar="DIR", help="render (and keep) clips and results here (default: a temp dir)")
    parser.add_argument("--json", metavar="OUT", help="write the study as JSON")
    parser.add_argument("--markdown", metavar="OUT", help="write the Markdown tables")
    args = parser.parse_args(argv)
    weights, parts = dict(args.weights), {p for name in args.models for p in name.split("+")}
    problem = _seed_error(args.seeds) or (f"--frames must be >= 1, not {args.frames}" if args.frames < 1 else None)
    problem = problem or next((f"--weights {n}: {n} is not among the models" for n in weights if n not in parts), None)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    temp = None if args.clips else tempfile.TemporaryDirectory(prefix="model_study-")
    root = Path(args.clips or temp.name)
    try:
        root.mkdir(parents=True, exist_ok=True)
        result = study(args.models, args.seeds, args.sizes, args.frames, root, weights, args.kind,
                       log=lambda line: print(line, file=sys.stderr, flush=True))
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        if temp is not None:
            temp.cleanup()
    sizes = [f"{w}x{h}" for w, h in args.sizes]
    out = {"command": "python -m pipeline.evaluation.model_study " + shlex.join(argv),
           "commit": commit(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "machine": {**machine(), "platform": platform.platform(), "cpu_count": os.cpu_count()},
           "seeds": list(args.seeds), "sizes": sizes, "frames": args.frames, "fps": FPS,
           "held_out": list(args.seeds) == list(HELD_OUT_SEEDS) and sizes == [f"{w}x{h}" for w, h in SIZES],
           **_finite(result)}
    from pipeline.evaluation.model_study_report import render_markdown  # it imports this module

    for path, text in ((args.json, json.dumps(out, indent=1) + "\n"), (args.markdown, render_markdown(out))):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
    print(json.dumps({name: e["summary"] for name, e in out["models"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
