"""Markdown of a held-out model study (``pipeline.evaluation.model_study``'s JSON): the FCN
paper's Table 2 columns for the semantic models, COCO mask AP for instance models, PQ for
panoptic pairs, each with the command and machine it came from."""

from __future__ import annotations

from typing import Any

from pipeline.evaluation.model_study import (
    ABSENT_SHARE_GOAL,
    SEMANTIC_KEYS,
    SEMANTIC_ROWS,
    SUMMARY_KEYS,
    _num,
)

__all__ = ["render_markdown", "summary_table"]



def _pct(value: Any, digits: int = 1) -> str:
    return "–" if _num(value) is None else f"{100 * float(value):.{digits}f}"


def _provenance(study: dict[str, Any]) -> str:
    m, seeds = study.get("machine", {}), list(study.get("seeds", []))
    span = f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)) else (
        ", ".join(map(str, seeds)))
    return (f"Command: `{study.get('command')}`  \nCommit `{study.get('commit')}`, {study.get('date')}; "
            f"{m.get('cpu')} ({m.get('cores')} usable of {m.get('cpu_count')} cores), {m.get('platform')}, "
            f"torch {m.get('torch')}; clips: seeds {span} × {', '.join(study.get('sizes', []))}, "
            f"{study.get('frames')} frames at {study.get('fps')} fps{'' if study.get('held_out') else ' (subset)'}")


def _table(title: str, header: list[str], rows: list[list[str]], note: str, prov: str) -> list[str]:
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows] or ["| " + " | ".join(["–"] * len(header)) + " |"]
    return lines + ["", *([note, ""] if note else []), prov, ""]


def render_markdown(study: dict[str, Any]) -> str:
    """Markdown tables of a study's JSON: semantic (the FCN paper's Table 2 columns, pooled
    over all held-out frames), instance (mask AP) and panoptic (PQ), each with provenance."""
    models, prov = study["models"], _provenance(study)
    names = [n for n in SEMANTIC_ROWS if n in models and models[n]["task"] == "semantic"]
    names += [n for n, e in models.items() if e["task"] == "semantic" and n not in SEMANTIC_ROWS]
    semantic = [[n, models[n]["scene_kind"], *(_pct(models[n]["pooled"][k]) for k in SEMANTIC_KEYS),
                 _pct(models[n]["summary"]["mean_iou"]["worst"]),
                 _pct(models[n]["summary"]["absent_class_share"]["worst"], 3)] for n in names]
    instance = [[n, e["scene_kind"], _pct(e["summary"]["mask_AP"]["mean"]), _pct(e["summary"]["mask_AP"]["worst"]),
                 _pct(e["summary"]["mask_AP50"]["mean"]), _pct(e["summary"]["box_AP"]["mean"])]
                for n, e in models.items() if e["task"] == "instance"]
    panoptic = [[n, *(_pct(e["summary"][k][w]) for k in SUMMARY_KEYS["panoptic"] for w in ("mean", "worst"))]
                for n, e in models.items() if e["task"] == "panoptic"]
    lines = _table("### Semantic segmentation (FCN paper Table 2 layout, %)",
                   ["model", "scene", "pixel acc.", "mean acc.", "mean IU", "f.w. IU", "worst-clip mean IU",
                    "max absent-class share"], semantic,
                   "Pooled over every pixel of every held-out frame; worst clip: the lowest per-clip mean IU; "
                   "absent-class share: the most pixels of a clip given to one class not in its ground truth "
                   f"(goal ≤ {100 * ABSENT_SHARE_GOAL:.1f} %).", prov)
    lines += _table("### Instance segmentation (COCO AP, %)", ["model", "scene", "mask AP mean", "mask AP worst",
                                                              "mask AP50 mean", "box AP mean"], instance, "", prov)
    lines += _table("### Panoptic segmentation (PQ, %)", ["model", "PQ mean", "PQ worst", "PQ_th mean", "PQ_th worst",
                                                         "PQ_st mean", "PQ_st worst"], panoptic, "", prov)
    if study.get("skipped"):
        lines += ["Skipped: " + "; ".join(f"{s['model']} ({s['reason']})" for s in study["skipped"]) + ".", ""]
    return "\n".join(lines)


HEADLINE = {"instance": ("mask_AP", "mask AP"), "semantic": ("mean_iou", "mean IoU"), "panoptic": ("PQ", "PQ")}


def summary_table(study: dict[str, Any], sizes_mb: dict[str, float] | None = None) -> str:
    """One row per model: its headline score's mean and worst clip over the held-out clips
    (the README's short table; the full tables are ``render_markdown``'s)."""
    seeds = list(study.get("seeds", []))
    lines = [f"| model | scene | held-out {len(seeds)} seeds × {len(study.get('sizes', []))} sizes: mean | worst clip | "
             "weights |", "|---|---|---|---|---|"]
    for name, entry in study["models"].items():
        key, label = HEADLINE[entry["task"]]
        stat = entry["summary"][key]
        size = " + ".join(f"{sizes_mb[part]:.1f} MB" for part in name.split("+") if part in (sizes_mb or {}))
        lines.append(f"| `{name}` | {entry['scene_kind']} | {label} {_pct(stat['mean'])} % | {_pct(stat['worst'])} % "
                     f"| {size} |")
    return "\n".join(lines)
