"""One training run from the command line's arguments: train, evaluate, write the checkpoint.

Training state (model, optimiser, RNG, step) is saved every ``--checkpoint-every`` steps to
``<out>.state``; ``--resume`` continues from it. The final file is the project's checkpoint
format (``engines.weights`` loads it), with the training command, seeds, time and held-out
accuracy in ``meta``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from engines.errors import ModelError
from pipeline.synthetic import TRAIN_SEEDS
from pipeline.training.checkpoints import atomic_save, save_trained
from pipeline.training.data import (
    EVAL_FRAMES,
    EVAL_SIZE,
    TRAIN_FRAMES,
    held_out_frames,
    parse_input,
    parse_sizes,
)
from pipeline.training.evaluation import evaluate_frames
from pipeline.training.loop import lr_at, make_optimizer, train_steps
from pipeline.training.tasks import get_task

__all__ = ["PROG", "run_training"]

PROG = "python -m pipeline.training"


def _fmt_time(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _resume(model: Any, optimizer: Any, state_path: Path, name: str) -> tuple[int, float]:
    """(step, elapsed seconds) of a saved training state loaded into ``model`` and
    ``optimizer``; (0, 0.0) when there is none."""
    if not state_path.is_file():
        return 0, 0.0
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    print(f"[train] resumed {name} from {state_path} at step {int(state['step'])}", flush=True)
    return int(state["step"]), float(state["elapsed"])


def _held_out_accuracy(task: Any, model: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Accuracy on the held-out frames the CLI asks for ({} with ``--eval-frames 0``)."""
    n_eval = len(EVAL_FRAMES) if args.eval_frames is None else args.eval_frames
    if not n_eval:
        return {}
    t0 = time.time()
    accuracy: dict[str, Any] = {}
    for kind in reversed(task.scene_kinds):  # the first kind's figures are the headline ones
        frames = held_out_frames(args.eval_seed, EVAL_SIZE, EVAL_FRAMES[:n_eval], kind)
        scores = evaluate_frames(task, model, frames)
        scores.update({"eval_seed": args.eval_seed, "eval_size": f"{EVAL_SIZE[0]}x{EVAL_SIZE[1]}",
                       "eval_frames": [fr.index for fr in frames], "scene_kind": kind})
        if len(task.scene_kinds) > 1:
            accuracy.setdefault("by_scene_kind", {})[kind] = dict(scores)
        accuracy.update(scores)
    print(f"[train] held-out accuracy ({time.time() - t0:.0f}s): {json.dumps(accuracy)}", flush=True)
    return accuracy


# Long on purpose: the training run in order (settings, init, resume, steps with progress and
# checkpoints, held-out evaluation, the checkpoint's metadata); each step is a call or a few lines.
def run_training(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Train ``args.model`` as the CLI describes (see ``__main__``); returns the exit code."""
    name = args.model
    task = get_task(name)
    if args.scenes:
        task.scene_kinds = tuple(args.scenes)
    d = task.defaults
    steps = args.steps or d.steps
    batch_size = args.batch_size or d.batch_size
    lr = args.lr or d.lr
    warmup = args.warmup if args.warmup is not None else min(300, steps // 10)
    sizes = parse_sizes(args.size or d.sizes)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    state_path = Path(args.state) if args.state else out.with_name(out.name + ".state")

    torch.manual_seed(args.seed)
    model = task.build()
    if args.init_from:
        try:  # the task decides what a checkpoint initialises (FCN-16s/8s: the paper's stages)
            note = task.init_from(model, args.init_from)
        except (OSError, ValueError, ModelError) as exc:
            print(f"{PROG}: error: --init-from: {exc}", file=sys.stderr)
            return 2
        print(f"[train] initialised {note}", flush=True)
    train_input = parse_input(args.input) if args.input else dict(task.train_input)
    optimizer = make_optimizer(model, lr, args.weight_decay)
    start, elapsed = _resume(model, optimizer, state_path, name) if args.resume else (0, 0.0)

    command = f"{PROG} " + " ".join(shlex.quote(a) for a in argv)
    print(
        f"[train] {name}: steps={steps} batch={batch_size} lr={lr} sizes={[f'{w}x{h}' for w, h in sizes]} "
        f"seed={args.seed} threads={args.threads}",
        flush=True,
    )
    t_start = time.time() - elapsed
    cpu_start = time.process_time()
    ema: dict[str, float] = {}

    def save_state(step_done: int) -> None:
        atomic_save(
            {
                "step": step_done,
                "elapsed": time.time() - t_start,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
            state_path,
        )

    def on_step(step: int, loss: float, parts: dict[str, float]) -> None:
        for k, v in {"loss": loss, **parts}.items():
            ema[k] = v if k not in ema else 0.95 * ema[k] + 0.05 * v
        done = step + 1
        if done % args.log_every == 0 or done == steps:
            spent = time.time() - t_start
            rate = spent / max(1, done - start) if start else spent / done
            eta = rate * (steps - done)
            parts_s = " ".join(f"{k}={v:.4f}" for k, v in ema.items())
            print(
                f"[train] step {done}/{steps} {parts_s} lr={lr_at(step, steps, lr, warmup):.2e} "
                f"{rate:.2f}s/step elapsed {_fmt_time(spent)} eta {_fmt_time(eta)}",
                flush=True,
            )
        if args.checkpoint_every and done % args.checkpoint_every == 0 and done < steps:
            save_state(done)

    train_steps(
        task, model, optimizer, seed=args.seed, start=start, stop=steps, steps=steps,
        batch_size=batch_size, sizes=sizes, lr=lr, warmup=warmup, on_step=on_step,
        input_size=train_input, fg_weight=args.fg_weight,
    )  # fmt: skip
    train_time = time.time() - t_start
    task.prepare_inference(model)  # evaluate at the inference size
    print(f"[train] done in {_fmt_time(train_time)}", flush=True)

    accuracy = _held_out_accuracy(task, model, args)
    meta = {
        "train_command": command,
        "seed": args.seed,
        "scene_kinds": list(task.scene_kinds),
        "data_seed": f"{'+'.join(task.scene_kinds)} scene seeds {TRAIN_SEEDS.start}..{TRAIN_SEEDS.stop - 1}, frames 0..{TRAIN_FRAMES - 1}, "
        f"batches drawn with numpy default_rng([{args.seed}, step])",
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "sizes": [f"{w}x{h}" for w, h in sizes],
        "train_input": train_input,
        "input": task.inference_input,
        "train_time_s": round(train_time, 1),
        "train_cpu_s": round(time.process_time() - cpu_start, 1),  # this process (not resumed parts)
        "threads": args.threads,
        "init_from": args.init_from or None,
        "fcn_fg_weight": args.fg_weight if task.kind == "semantic" else None,
        "torch": str(torch.__version__),  # a plain str: loadable with weights_only=True
        "accuracy": accuracy,
    }
    save_trained(out, name, model, meta, task.class_names)
    print(f"[train] wrote {out} ({out.stat().st_size / 1e6:.2f} MB)", flush=True)
    if not args.keep_state and state_path.is_file():
        state_path.unlink()
    return 0
