"""Model cards: ``<checkpoint>.md`` (architecture, training, held-out accuracy) written from
what a training run recorded in the checkpoint's ``meta``."""

from __future__ import annotations

from pathlib import Path

import torch

from engines.weights import file_tag
from pipeline.training.run import PROG
from pipeline.training.tasks import get_task

__all__ = ["ARCHITECTURE", "write_model_card"]

ARCHITECTURE = {
    "unet_demo": (
        "`engines.models.semantic_demo.UNet`: two 3x3 conv-BN-ReLU per level at 8/16/32/64/128/128 "
        "channels, 2x2 max-pool (ceil mode) between levels; 2x2 stride-2 transposed conv halving "
        "channels, concatenation with the matching encoder features, two 3x3 conv-BN-ReLU; 1x1 conv "
        "to the classes."
    ),
    "fcn32s_demo": ("`engines.models.semantic_demo.FCNSkip`: TinyResNet (32/48/96/128 channels at strides 4/8/16/32), fc6/fc7 as 3x3 and 1x1 conv-BN-ReLU with 256 channels, 1x1 scorer; fixed bilinear upsampling x32 (FCN-32s)."),
    "fcn16s_demo": ("`engines.models.semantic_demo.FCNSkip`: TinyResNet (32/48/96/128 channels at strides 4/8/16/32), fc6/fc7 as 3x3 and 1x1 conv-BN-ReLU with 256 channels, 1x1 scorer; a 2x transposed conv (bilinear init) of the stride-32 scores plus a "
                    "zero-initialised 1x1 score of the stride-16 stage, then bilinear x16 (FCN-16s)."),
    "fcn8s_demo": ("`engines.models.semantic_demo.FCNSkip`: TinyResNet (32/48/96/128 channels at strides 4/8/16/32), fc6/fc7 as 3x3 and 1x1 conv-BN-ReLU with 256 channels, 1x1 scorer; as FCN-16s, then the same once more with the stride-8 stage, then bilinear x8 "
                   "(FCN-8s)."),
    "maskrcnn_demo": (
        "torchvision `MaskRCNN` with a small ResNet-style backbone (`engines.models.demo.TinyResNet`: "
        "3x3 stride-2 stem with 24 channels, then BasicBlock stages of 32/48/96/128 channels "
        "at strides 4/8/16/32 with 1/2/2/1 blocks, BatchNorm) + FPN (64 channels, P2-P5 and a "
        "max-pool P6); standard RPN head with anchors 16/32/64/128/256 px x 3 aspect ratios; "
        "`TwoMLPHead` box head on [R, 64, 7, 7] RoIs (representation 128) + `FastRCNNPredictor`; "
        "standard mask head (4 x 3x3 conv, 64 channels, on [K, 64, 14, 14]) + `MaskRCNNPredictor` "
        "giving [K, 7, 28, 28] mask logits."
    ),
    "fcn_demo": (
        "torchvision `FCN` (aux head off) whose backbone is the same small ResNet + FPN "
        "(`engines.models.demo.FusedFPN`) plus a context module: P3, P4, P5 concatenated at "
        "stride 8, 1x1 conv to 64 channels, two dilated 3x3 convs (dilation 2, 4), upsampled to "
        "stride 4 and concatenated with P2 (128 channels); then the standard `FCNHead` (3x3 conv "
        "to 32 channels, BN, ReLU, dropout, 1x1 conv to 7 classes); logits are upsampled "
        "bilinearly to the input size."
    ),
}


# Long on purpose: one Markdown document written top to bottom; splitting it would scatter the card's layout.
def write_model_card(ckpt_path: str | Path, notes: str = "", study: dict | None = None) -> Path:
    """Write ``<ckpt>.md`` (architecture, training, held-out accuracy) from a checkpoint;
    ``study``: a held-out model study (``pipeline.evaluation.model_study`` JSON) whose figures
    for this model (mean and worst over its clips) are added."""
    ckpt_path = Path(ckpt_path)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    name, meta = ckpt["model"], ckpt["meta"]
    task = get_task(name)
    params = sum(v.numel() for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    acc = dict(meta.get("accuracy", {}))
    inp = meta.get("input", {})
    train_inp = meta.get("train_input", inp)
    kinds = meta.get("scene_kinds") or ["default"]
    kind_flag = "" if kinds[0] == "default" else f" --kind {kinds[0]}"
    module = "semantic_demo" if name in ("unet_demo", "fcn32s_demo", "fcn16s_demo", "fcn8s_demo") else "demo"
    const = {"unet_demo": "UNET", "maskrcnn_demo": "MASKRCNN", "fcn_demo": "FCN"}.get(name, "FCN_SKIP")
    lines = [
        f"# {name}",
        "",
        f"Demo {task.kind} segmentation model trained "
        "on the project's synthetic scenes (`pipeline.synthetic`) only; no downloaded or "
        "pretrained weights. Classes (id = index): "
        + ", ".join(f"{i} {c}" for i, c in enumerate(ckpt["class_names"]))
        + ".",
        "",
        "## Architecture",
        "",
        ARCHITECTURE[name],
        "",
        f"- parameters: {params:,} ({params * 4 / 1e6:.2f} MB as fp32; file {ckpt_path.stat().st_size / 1e6:.2f} MB, "
        f"stored as {meta.get('stored_as', 'float32')}; the model runs in float32)",
        f"- input at inference: RGB in [0, 1], ImageNet mean/std normalisation, resized so the "
        f"shorter side is {inp.get('min_size')} unless the longer would exceed "
        f"{inp.get('max_size')}, padded to a multiple of 32 (`{const}_DEMO_INPUT` "
        f"in `engines/models/{module}.py`)",
        f"- trained at: shorter side {train_inp.get('min_size')} (max {train_inp.get('max_size')})",
        f"- file: `{ckpt_path.name}`, SHA-256 prefix `{file_tag(ckpt_path)}`",
        "",
        "## Training",
        "",
        "```",
        meta.get("train_command", "?"),
        "```",
        "",
        "(`--state`/`--resume`/`--keep-state` only say where the resumable training state is "
        "kept; they do not change the result.)",
        "",
        (
            f"- initialisation: `--init-from {Path(meta['init_from']).name}` (a checkpoint of the "
            "same model: all weights; of maskrcnn_demo: its ResNet + FPN), see below"
            if meta.get("init_from")
            else "- initialisation: random (torch.manual_seed(seed)), no pretrained weights"
        ),
        f"- data: {meta.get('data_seed')}; render sizes {', '.join(meta.get('sizes', []))} "
        "(resized to the model input); no augmentation",
        (
            f"- loss: pixel cross-entropy, every class but background weighted {meta['fcn_fg_weight']} "
            "(background 1)"
            if meta.get("fcn_fg_weight")
            else "- loss: the standard torchvision Mask R-CNN losses (RPN + box + mask)"
        ),
        f"- schedule: {meta.get('steps')} AdamW steps, batch {meta.get('batch_size')}, peak lr {meta.get('lr')}, "
        "linear warm-up then cosine decay, weight decay 1e-4 (not on norms/biases), grad-norm clip 10",
        f"- time: {meta.get('train_time_s', 0) / 60:.1f} min wall on a shared 2-core CPU"
        + (f" ({meta['train_cpu_s'] / 60:.0f} CPU-min)" if meta.get("train_cpu_s") else "")
        + ", "
        f"{meta.get('threads')} torch thread(s), torch {meta.get('torch')}",
        "- reproducible: the same command (same seed and thread count) gives the same weights on CPU "
        "(`tests/test_demo_models.py::test_training_is_reproducible` checks a few steps)",
        "",
        "## Held-out accuracy",
        "",
        f"Scene seed {acc.get('eval_seed')} (never used in training), kind {acc.get('scene_kind', kinds[0])}, "
        f"{acc.get('eval_size')}, "
        f"{len(acc.get('eval_frames', []))} frames (every 30th of the first minute), rendered frames "
        "evaluated in-process by `pipeline.training.evaluate_frames` with `pipeline.evaluate`:",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {acc[k]:{task.card_format}} |" for k in task.card_metrics if k in acc),
        "",
        f"{task.card_per_class[1]}: "
        + ", ".join(f"{c} {v:.3f}" for c, v in acc.get(task.card_per_class[0], {}).items()),
        *task.card_notes(meta),
        "",
        "Through an encoded video (H.264, decoded with PyAV) and the saved-results format:",
        "",
        "```",
        f"python -m pipeline.synthetic --seed 7{kind_flag} --frames 300 --size 640x480 --out /tmp/eval7",
        f"{PROG} --evaluate engines/weights/{name}.pt --gt /tmp/eval7 "
        f"--save-results /tmp/eval7/{name}.jsonl",
        f"python -m pipeline.evaluate --gt /tmp/eval7 --pred /tmp/eval7/{name}.jsonl",
        "```",
    ]
    entry = (study or {}).get("models", {}).get(name)
    if entry:
        lines += ["", *_study_lines(study, entry)]
    if notes:
        lines += ["", notes.rstrip()]
    out = ckpt_path.with_suffix(".md")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _study_lines(study: dict, entry: dict) -> list[str]:
    """The held-out study's figures for one model: mean and worst over its clips."""
    seeds = study.get("seeds", [])
    lines = ["## Held-out study (many seeds and sizes)", "",
             f"`{study.get('command')}` (commit `{study.get('commit')}`, {str(study.get('date', ''))[:10]}): scene "
             f"kind {entry.get('scene_kind')}, seeds {seeds[0] if seeds else '?'}-{seeds[-1] if seeds else '?'} "
             f"(never used in training or to pick a checkpoint) × {', '.join(study.get('sizes', []))}, "
             f"{study.get('frames')} frames per clip at {study.get('fps')} fps, through H.264 video:", "",
             "| metric | mean | worst clip |", "|---|---|---|"]
    for key, stat in entry.get("summary", {}).items():
        lines.append(f"| {key} | {stat.get('mean', float('nan')):.4f} | {stat.get('worst', float('nan')):.4f} |")
    pooled = entry.get("pooled")
    if pooled:
        lines += ["", "Pooled over every held-out pixel: " + ", ".join(
            f"{k} {pooled[k]:.4f}" for k in ("pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou")
            if k in pooled) + "."]
    return lines
