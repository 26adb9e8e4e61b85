"""Command line of ``pipeline.training`` (see the package docstring for examples)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.synthetic import EVAL_SEED, TRAIN_SEEDS
from pipeline.training.data import EVAL_FRAMES, parse_input, parse_sizes
from pipeline.training.tasks import FG_WEIGHT, MODELS

__all__ = ["build_parser", "main"]


# Long on purpose: the CLI's flags, one add_argument each.
def build_parser() -> argparse.ArgumentParser:
    """The argument parser (flags as the former ``python -m engines.train``)."""
    from pipeline import training
    from pipeline.training.run import PROG

    p = argparse.ArgumentParser(prog=PROG, description=training.__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=MODELS)
    p.add_argument("--seed", type=int, default=0, help="training seed (init + batch order)")
    p.add_argument("--out", help="checkpoint to write (e.g. engines/weights/maskrcnn_demo.pt)")
    p.add_argument("--steps", type=int, default=0, help="optimiser steps (default per model)")
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--size", default="", help="render size(s) WxH[,WxH...] drawn per batch")
    p.add_argument("--lr", type=float, default=0.0, help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument(
        "--input",
        default="",
        metavar="MIN:MAX",
        help="model-input resize while training (default: the demo's *_DEMO_TRAIN_INPUT)",
    )
    p.add_argument(
        "--fg-weight",
        type=float,
        default=FG_WEIGHT,
        help=f"semantic models: cross-entropy weight of the shape classes (default {FG_WEIGHT})",
    )
    p.add_argument(
        "--init-from",
        metavar="CKPT",
        help="initialise from a checkpoint: the same model's (fine-tune) or the ResNet + FPN of "
        "a maskrcnn_demo checkpoint; fcn16s_demo / fcn8s_demo: an fcn32s_demo / fcn16s_demo "
        "checkpoint (the FCN paper's stages; new skip scorers start at zero), fcn32s_demo: "
        "also the ResNet of maskrcnn_demo / fcn_demo (default: random)",
    )
    p.add_argument(
        "--scenes",
        type=_scene_kinds,
        default=None,
        metavar="KIND[,KIND]",
        help="synthetic scene kinds the batches are drawn from, e.g. default,panoptic (a fixed "
        "rule alternates them per image); the first is the held-out headline (default: the "
        "model's own: panoptic for the U-Net and FCN-32s/16s/8s, else default)",
    )
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is fastest on a shared, busy machine)",
    )
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--state", default="", help="training-state file (default <out>.state)")
    p.add_argument("--resume", action="store_true", help="continue from the state file")
    p.add_argument("--keep-state", action="store_true")
    p.add_argument("--eval-seed", type=int, default=EVAL_SEED)
    p.add_argument(
        "--eval-frames",
        type=int,
        default=None,
        help=f"held-out frames to evaluate after training (default {len(EVAL_FRAMES)}, 0 = skip); "
        "with --evaluate: only the first N frames of the video (default all)",
    )
    p.add_argument("--evaluate", metavar="CKPT", help="evaluate a checkpoint instead of training")
    p.add_argument("--card", metavar="CKPT", help="write the model card <CKPT>.md and exit")
    p.add_argument("--store-half", metavar="CKPT", help="rewrite a checkpoint's weights as float16 (half the "
                   "file; the model still runs in float32) and exit")
    p.add_argument("--card-notes", default="", help="with --card: a markdown file appended to it")
    p.add_argument("--card-study", default="", help="with --card: a held-out study JSON "
                   "(python -m pipeline.evaluation.model_study --json) whose figures for the model are added")
    p.add_argument(
        "--gt", help="with --evaluate: ground-truth dir from python -m pipeline.synthetic"
    )
    p.add_argument("--save-results", help="with --evaluate: where to write the results JSON lines")
    return p


def _scene_kinds(text: str) -> list[str]:
    from pipeline.synthetic import KINDS

    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        raise argparse.ArgumentTypeError(f"scene kinds must be among {', '.join(KINDS)}, got {text!r}")
    return kinds


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = build_parser()
    args = p.parse_args(argv)
    if args.card:
        from pipeline.training.cards import write_model_card

        notes = Path(args.card_notes).read_text(encoding="utf-8") if args.card_notes else ""
        study = json.loads(Path(args.card_study).read_text(encoding="utf-8")) if args.card_study else None
        print(write_model_card(args.card, notes, study))
        return 0
    if args.store_half:
        from pipeline.training.checkpoints import store_half

        print(f"wrote {store_half(args.store_half)} (float16 weights)")
        return 0
    if args.evaluate:
        if not args.gt:
            p.error("--evaluate needs --gt DIR")
        from pipeline.training.evaluation import evaluate_video

        return evaluate_video(
            args.evaluate, args.gt, args.save_results, args.eval_frames, threads=args.threads
        )
    if not args.model or not args.out:
        p.error("training needs --model and --out")
    if args.eval_seed in TRAIN_SEEDS:
        p.error(f"--eval-seed {args.eval_seed} is a training seed ({TRAIN_SEEDS})")
    try:
        if args.size:
            parse_sizes(args.size)
        if args.input:
            parse_input(args.input)
    except ValueError as exc:
        p.error(str(exc))
    from pipeline.training.run import run_training

    return run_training(args, argv)


if __name__ == "__main__":
    sys.exit(main())
