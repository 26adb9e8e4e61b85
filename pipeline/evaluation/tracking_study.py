"""Held-out tracking accuracy of our tracker and a peer tracker on the same detections.

``python -m pipeline.evaluation.tracking_study [--json OUT]`` renders held-out synthetic
clips, runs the instance model over them once, then tracks the *same* detections twice:
with segstream's tracker (``pipeline/tracking``, the config's ``tracking:`` settings) and
with a peer, Roboflow's ``trackers`` ByteTrack (box IoU, Kalman filter), given the same
thresholds where they mean the same thing. Both are scored against the ground truth with
:func:`pipeline.evaluation.tracks.evaluate_tracking` (HOTA, IDF1, MOTA, ... on mask IoU).

Held-out rule (fixed, never used to tune the tracker or pick a checkpoint): seeds
``HELD_OUT_SEEDS`` (5000-5004), the scene kinds ``default`` and ``tracking`` (crossings,
occlusions, exits, varying speed), at 640x480, 800x600 and 1280x720, 150 frames at 30 fps.
Tuning, if any, uses seeds 4000-4999. The peer is evaluation tooling only: the runtime
never imports it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.tracks import evaluate_tracking

__all__ = ["HELD_OUT_SEEDS", "Clip", "clip_detections", "main", "study"]

HELD_OUT_SEEDS = (5000, 5001, 5002, 5003, 5004)
SIZES = ((640, 480), (800, 600), (1280, 720))
KINDS = ("default", "tracking")
FPS = 30
FRAMES = 150
KEYS = ("HOTA", "DetA", "AssA", "IDF1", "MOTA", "IDSW", "Frag")


@dataclass(frozen=True)
class Clip:
    kind: str
    seed: int
    width: int
    height: int
    frames: int = FRAMES

    @property
    def name(self) -> str:
        return f"{self.kind}/seed{self.seed}/{self.width}x{self.height}"


def clip_detections(backend: Any, clip: Clip, params: Any) -> tuple[dict[str, Any], list[Any], list[Any]]:
    """Ground truth (COCO dict), per-frame results and instance details of ``clip``."""
    from pipeline.reference import segment_frames
    from pipeline.sources.base import Frame
    from pipeline.synthetic import SyntheticScene
    from pipeline.synthetic.coco import coco_dataset

    scene = SyntheticScene(clip.seed, clip.width, clip.height, FPS, kind=clip.kind)
    truth = [scene.truth(i) for i in range(clip.frames)]
    frames = (Frame(scene.image(i), i, i, Fraction(1, FPS)) for i in range(clip.frames))
    results, details = [], []
    for _, result, detail in segment_frames(backend, frames, params, batch_size=4):
        results.append(result)
        details.append(detail)
    return coco_dataset(truth), results, details


def _ours(results: list[Any], details: list[Any], tracking_params: Any) -> tuple[list[dict], float]:
    from pipeline.reference import track_frame
    from pipeline.sources.base import Frame
    from pipeline.tracking import RunTracking

    tracking = RunTracking(tracking_params)
    spent = 0.0
    records = []
    for result, detail in zip(results, details, strict=True):
        frame = Frame(np.zeros((0, 0, 3), np.uint8), result.seq, result.seq, Fraction(1, FPS))
        t0 = time.perf_counter()
        track_frame(tracking, frame, result, detail, float(FPS))
        spent += time.perf_counter() - t0
        records.append(json.loads(json.dumps(result.to_json())))
    return records, spent / max(1, len(results))


def _peer(results: list[Any], details: list[Any], tracking_params: Any) -> list[dict]:
    """The same detections through ``trackers``' ByteTrack, its ids written as track_id."""
    import supervision as sv
    from trackers import ByteTrackTracker

    peer = ByteTrackTracker(
        lost_track_buffer=int(round(tracking_params.max_lost_s * FPS)), frame_rate=float(FPS),
        track_activation_threshold=tracking_params.high_score,
        minimum_consecutive_frames=tracking_params.min_hits,
        high_conf_det_threshold=tracking_params.high_score,
    )
    records = []
    for result, detail in zip(results, details, strict=True):
        n = len(detail.instances)
        detections = sv.Detections(
            xyxy=detail.boxes.reshape(n, 4).astype(np.float32), confidence=detail.scores.astype(np.float32),
            class_id=detail.labels.astype(int), data={"index": np.arange(n)},
        ) if n else sv.Detections.empty()
        tracked = peer.update(detections, timestamp=result.seq / FPS)
        ids: list[int | None] = [None] * n
        if n:
            for index, tracker_id in zip(tracked.data["index"], tracked.tracker_id, strict=True):
                ids[int(index)] = int(tracker_id) + 1 if int(tracker_id) >= 0 else None  # ids from 1
        record = json.loads(json.dumps(result.to_json()))
        for instance, track_id in zip(record["instances"], ids, strict=True):
            instance["track_id"] = track_id
        records.append(record)
    return records


def _scores(gt: dict[str, Any], records: list[dict]) -> dict[str, float]:
    scored = evaluate_tracking(gt, records)
    return {key: float(scored[key]) for key in KEYS}


def _summary(rows: list[dict[str, Any]], who: str) -> dict[str, dict[str, float]]:
    return {
        key: {"mean": float(np.mean([r[who][key] for r in rows])),
              "worst": float(min(r[who][key] for r in rows) if key not in ("IDSW", "Frag")
                             else max(r[who][key] for r in rows))}
        for key in KEYS
    }


def study(config: Any, clips: list[Clip], peer: bool = True, log=print) -> dict[str, Any]:
    """Score our tracker (and the peer) on ``clips``; returns per-clip rows and summaries."""
    from pipeline.inference import open_backend
    from pipeline.reference import params_from_config

    backend = open_backend(config.model)
    params = params_from_config(config)
    tracking_params = config.tracking.params()
    rows = []
    try:
        for k, clip in enumerate(clips, 1):
            t0 = time.perf_counter()
            gt, results, details = clip_detections(backend, clip, params)
            ours, cost_s = _ours(results, details, tracking_params)
            row = {"clip": clip.name, "ours": _scores(gt, ours), "tracker_ms_per_frame": cost_s * 1e3}
            if peer:
                row["peer"] = _scores(gt, _peer(results, details, tracking_params))
            rows.append(row)
            peer_text = f" | peer HOTA {row['peer']['HOTA']:.3f}" if peer else ""
            log(f"[{k}/{len(clips)}] {clip.name}: HOTA {row['ours']['HOTA']:.3f} IDF1 {row['ours']['IDF1']:.3f} "
                f"MOTA {row['ours']['MOTA']:.3f}{peer_text} ({time.perf_counter() - t0:.0f} s)")
    finally:
        backend.close()
    out: dict[str, Any] = {"model": backend.spec.model_id, "rows": rows, "ours": _summary(rows, "ours")}
    if peer:
        out["peer"] = _summary(rows, "peer")
    return out


def held_out_clips(frames: int = FRAMES) -> list[Clip]:
    """Every held-out clip: kinds × seeds × sizes (the fixed rule in the module docstring)."""
    return [Clip(kind, seed, w, h, frames) for kind in KINDS for seed in HELD_OUT_SEEDS for w, h in SIZES]


def main(argv: list[str] | None = None) -> int:
    from pipeline.config import load_config
    from pipeline.errors import PipelineError

    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluation.tracking_study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="pipeline config (model and tracking: sections); default: built-in")
    parser.add_argument("--json", help="write the figures here as JSON")
    parser.add_argument("--frames", type=int, default=FRAMES, help=f"frames per clip (default {FRAMES})")
    parser.add_argument("--limit", type=int, help="only the first N clips (a quick look, not the held-out figure)")
    parser.add_argument("--no-peer", action="store_true", help="skip the peer tracker")
    args = parser.parse_args(argv)
    if args.frames < 2:
        print("error: --frames must be at least 2", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        clips = held_out_clips(args.frames)[: args.limit]
        result = study(config, clips, peer=not args.no_peer, log=lambda line: print(line, file=sys.stderr))
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    from datetime import UTC, datetime

    from pipeline.bench import commit, machine

    result["command"] = "python -m pipeline.evaluation.tracking_study " + " ".join(argv or sys.argv[1:])
    result.update(date=datetime.now(UTC).isoformat(timespec="seconds"), commit=commit(), machine=machine())
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    print(json.dumps({"ours": result["ours"], **({"peer": result["peer"]} if "peer" in result else {})}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
