"""Train (and evaluate) the demo models on synthetic scenes, reproducibly on the CPU.

    python -m pipeline.training --model maskrcnn_demo --seed 0 --out engines/weights/maskrcnn_demo.pt
    python -m pipeline.training --model fcn_demo --seed 0 --out engines/weights/fcn_demo.pt

Training needs both layers (``engines`` models, weights and transform; ``pipeline``'s
synthetic scenes and evaluation), so it lives here, above them. Modules:

- ``data``: batches rendered from the synthetic scenes (``TRAIN_SEEDS``, batches drawn with
  ``numpy.random.default_rng([seed, step])``) and held-out frames (``EVAL_SEED``);
- ``tasks``: ``InstanceTask`` (Mask R-CNN) and ``SemanticTask`` (FCN): building, loss,
  prediction and scoring of a demo model;
- ``loop``: schedule, optimiser, initialisation, ``train_steps``;
- ``checkpoints``: the final checkpoint (``engines.weights``' format) and resumable state;
- ``evaluation``: held-out accuracy in memory or through an encoded video;
- ``run``: one training run; ``cards``: model cards; ``__main__``: the command line.

The same ``--seed`` and thread count give the same weights (``torch.manual_seed`` for
initialisation and the RoI samplers). Evaluate a checkpoint on a ground-truth directory
written by ``python -m pipeline.synthetic`` (decodes the video with PyAV, like the pipeline
would, and writes ``--save-results`` records):

    python -m pipeline.training --evaluate engines/weights/maskrcnn_demo.pt --gt DIR \\
        --save-results DIR/maskrcnn_demo.jsonl
"""

from pipeline.training.checkpoints import load_checkpoint, save_trained
from pipeline.training.data import (
    EVAL_FRAMES,
    EVAL_SIZE,
    TRAIN_FRAMES,
    batch_plan,
    held_out_frames,
    parse_input,
    parse_size,
    parse_sizes,
)
from pipeline.training.evaluation import evaluate_frames, predict, prediction_record
from pipeline.training.loop import (
    build,
    init_backbone_from,
    init_from_checkpoint,
    lr_at,
    make_optimizer,
    train_steps,
)
from pipeline.training.tasks import FG_WEIGHT, MODELS, InstanceTask, SemanticTask, Task, get_task

__all__ = [
    "EVAL_FRAMES",
    "EVAL_SIZE",
    "FG_WEIGHT",
    "MODELS",
    "TRAIN_FRAMES",
    "InstanceTask",
    "SemanticTask",
    "Task",
    "batch_plan",
    "build",
    "evaluate_frames",
    "get_task",
    "held_out_frames",
    "init_backbone_from",
    "init_from_checkpoint",
    "load_checkpoint",
    "lr_at",
    "make_optimizer",
    "parse_input",
    "parse_size",
    "parse_sizes",
    "predict",
    "prediction_record",
    "save_trained",
    "train_steps",
]
