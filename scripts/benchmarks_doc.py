#!/usr/bin/env python3
"""Write docs/BENCHMARKS.md and the README's speed table from the benchmark's JSON.

    python -m pipeline.bench --suite full --json docs/bench/cpu.json     # measure (minutes)
    python scripts/benchmarks_doc.py docs/bench/cpu.json [--gpu gpu_check.json]

Every figure in the docs comes from that JSON, and every table names the command, the
machine, the date and the commit that produced it: a figure cannot silently go stale.
The README's table sits between ``<!-- bench:begin -->`` and ``<!-- bench:end -->``.
``--check`` exits 1 when the files on disk differ from what the JSON gives (for CI).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the model study's renderer lives in the package, installed or not
    sys.path.insert(0, str(REPO))
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
TRACK_BEGIN, TRACK_END = "<!-- tracking:begin -->", "<!-- tracking:end -->"
MODELS_BEGIN, MODELS_END = "<!-- models:begin -->", "<!-- models:end -->"
OBS_BEGIN, OBS_END = "<!-- observability:begin -->", "<!-- observability:end -->"
BENCH_DIR = REPO / "docs" / "bench"
TRACKING_GOALS = {"IDF1": 0.90, "HOTA": 0.80, "MOTA": 0.85}
STAGES = ("capture", "preprocess", "infer", "postprocess", "publish")

# the goals of the speed work (issue "Speed"), shown next to each measured figure
GOALS = {
    "default": ("pipeline_vs_sequential", 1.5, "pipeline / sequential loop"),
    "h264-720p-video": ("pipeline_vs_sequential", 1.3, "pipeline / sequential loop"),
    "model-bound": ("pipeline_vs_inference", 0.9, "pipeline / inference alone"),
}
EFFICIENCY_GOAL = 0.9


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def provenance(figures: dict) -> str:
    m = figures["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (f"Command: `{figures['command']}`  \nMachine: {m['cpu']}, {m['cores']} usable cores{gpu}, "
            f"Python {m['python']}, torch {m['torch']}  \nDate: {figures['date']}, commit `{figures['commit']}`")


def case_table(cases: list[dict]) -> str:
    rows = ["| case | backend | (a) sequential fps | (b) inference alone fps | (c) pipeline fps | c/a | c/b "
            "| CPU-work bound fps | efficiency c/bound |",
            "|---|---|---|---|---|---|---|---|---|"]
    for case in cases:
        if "pipeline_fps" not in case:
            continue
        bound = case.get("costs", {}).get("cpu_bound_fps")
        rows.append(f"| {case['label']} | {case['backend']} | {_fmt(case.get('sequential_fps'))} "
                    f"| {_fmt(case.get('inference_fps'))} | {_fmt(case['pipeline_fps'])} "
                    f"| {_fmt(case.get('pipeline_vs_sequential'))} | {_fmt(case.get('pipeline_vs_inference'))} "
                    f"| {_fmt(bound)} | {_fmt(case.get('efficiency'))} |")
    return "\n".join(rows)


def goal_table(cases: list[dict]) -> str:
    rows = ["| goal | measured | met | ceiling on this machine |", "|---|---|---|---|"]
    by_label = {c["label"]: c for c in cases}
    for label, (key, goal, what) in GOALS.items():
        case = by_label.get(label)
        if case is None or key not in case:
            continue
        # the best any scheduling could do: the CPU-work bound over the baseline
        bound = (case.get("costs") or {}).get("cpu_bound_fps")
        base = case.get("sequential_fps") if key == "pipeline_vs_sequential" else case.get("inference_fps")
        ceiling = f"{bound / base:.2f}" if bound and base else "–"
        rows.append(f"| {label}: {what} ≥ {goal} | {case[key]:.2f} | {'yes' if case[key] >= goal else '**no**'} "
                    f"| {ceiling} |")
    for label in ("default", "h264-720p-video"):
        case = by_label.get(label)
        if case and "efficiency" in case:
            ok = case["efficiency"] >= EFFICIENCY_GOAL
            rows.append(f"| {label}: pipeline / CPU-work bound ≥ {EFFICIENCY_GOAL} | {case['efficiency']:.2f} "
                        f"| {'yes' if ok else '**no**'} | 1.00 |")
    live, default = by_label.get("live"), by_label.get("default")
    if live and default and default.get("pipeline_fps"):
        ratio = live_throughput(live) / default["pipeline_fps"]
        rows.append(f"| live: frames processed per second of feed / file-mode fps ≥ 0.9 | {ratio:.2f} "
                    f"| {'yes' if ratio >= 0.9 else '**no**'} | – |")
        p95 = (live.get("pipeline_latency_ms") or {}).get("p95")
        if p95 is not None:
            batch_ms = 1000 * default["batch_size"] / default["pipeline_fps"]
            goal = 2 * batch_ms + 1000 / 30
            rows.append(f"| live: frame age at publish p95 ≤ 2 batch times + 1 frame interval (≈ {goal:.0f} ms) "
                        f"| {p95:.0f} ms | {'yes' if p95 <= goal else '**no**'} | – |")
    return "\n".join(rows)


def live_throughput(case: dict) -> float:
    """Frames processed per second of feed: a live run's report counts its drain after the
    feed ended too; the feed lasted ``frames_read / fps`` seconds (fps from the synthetic
    URI; other feeds fall back to the report's figure)."""
    match = re.search(r"[?&]fps=([0-9.]+)", case.get("source", ""))
    if not match or not case.get("frames_read"):
        return case["pipeline_fps"]
    return case["pipeline_frames"] / (case["frames_read"] / float(match.group(1)))


def cost_table(cases: list[dict]) -> str:
    rows = ["| input | video | " + " | ".join(STAGES) + " | non-model | total | CPU-work bound fps |",
            "|---|---|" + "---|" * (len(STAGES) + 3)]
    for case in cases:
        costs = case.get("costs")
        if not costs:
            continue
        cells = " | ".join(_fmt(costs["core_ms"][s], 1) for s in STAGES)
        rows.append(f"| {case['label']} ({costs['size']}) | {'on' if costs['video'] else 'off'} | {cells} "
                    f"| {_fmt(costs['non_model_core_ms'], 1)} | {_fmt(costs['total_core_ms'], 1)} "
                    f"| {_fmt(costs['cpu_bound_fps'])} |")
    return "\n".join(rows)


def gpu_section(gpu: dict | None) -> str:
    if not gpu:
        return ("## GPU\n\nNo GPU figures recorded yet: no GPU machine was available to this work. On a "
                "machine with a CUDA GPU, `bash scripts/gpu_check.sh` runs the GPU tests and benchmarks and "
                "writes `gpu_check.json`; pass it here with `--gpu`.\n")
    lines = ["## GPU", "", f"From `{gpu.get('command', 'scripts/gpu_check.sh')}` on {gpu.get('machine', {})}", "",
             "```json", json.dumps(gpu.get("summary", gpu), indent=1)[:6000], "```", ""]
    return "\n".join(lines)


def tracking_section(study: dict | None, cost: dict | None, compare: dict | None) -> str:
    """The tracking figures (held-out study, tracker cost) and the supervision comparison."""
    lines: list[str] = []
    if study:
        lines += ["## Tracking accuracy (held-out)", "", f"Command: `{study['command']}`, model `{study['model']}`, "
                  f"commit `{study.get('commit')}`, {study.get('date', '')[:10]}; "
                  f"{len(study['rows'])} clips: seeds 5000-5004 × kinds default and tracking × 640x480, 800x600, "
                  "1280x720 (150 frames each). Peer: `trackers` ByteTrack on the same detections.", "",
                  "| metric | ours mean | ours worst | peer mean | peer worst | goal (ours mean) |", "|---|---|---|---|---|---|"]
        for key, ours in study["ours"].items():
            peer = study.get("peer", {}).get(key, {})
            goal = TRACKING_GOALS.get(key)
            lines.append(f"| {key} | {_fmt(ours['mean'], 3)} | {_fmt(ours['worst'], 3)} | {_fmt(peer.get('mean'), 3)} "
                         f"| {_fmt(peer.get('worst'), 3)} | {'≥ ' + _fmt(goal) if goal else ''} |")
        if "peer" in study:
            gain = study["ours"]["HOTA"]["mean"] - study["peer"]["HOTA"]["mean"]
            lines += ["", f"HOTA over the peer: {gain * 100:+.1f} points (goal ≥ +3)."]
        lines.append("")
    if cost:
        ms = cost["tracker_ms_per_frame_1280x720"]
        m = cost["machine"]
        lines += ["## Tracking cost", "", f"Command: `{cost['command']}` on {m['cpu']} ({m['cores']} cores), "
                  f"commit `{cost.get('commit')}`, {cost.get('date', '')[:10]}.", "",
                  "Tracker per frame at 1280x720: " + ", ".join(f"{n} instances {v:.2f} ms" for n, v in ms.items())
                  + " (goal ≤ 2 ms at 20)."]
        if "pipeline" in cost:
            p = cost["pipeline"]
            lines += ["", f"Default pipeline, tracking on {p['fps_on']:.2f} fps against off {p['fps_off']:.2f} fps: "
                      f"{p['on_over_off']:.3f} (goal ≥ 0.95; best of {len(p['runs']['on'])} alternating runs each)."]
        lines.append("")
    if compare:
        lines += ["## Against a plain loop written with `supervision`", "", f"Command: `{compare['command']}` "
                  f"({compare['clip']}): supervision loop {compare['supervision_loop_fps']:.2f} fps, segstream "
                  f"{compare['pipeline_fps']:.2f} fps = {compare['pipeline_over_supervision']:.2f}x (goal ≥ 1.5x).", ""]
    return "\n".join(lines)


def segmentation_section(panoptic: dict | None, study: dict | None) -> str:
    """Panoptic mode's cost, and the held-out accuracy of the demo models (FCN Table 2)."""
    lines: list[str] = []
    if panoptic:
        p, m = panoptic["pipeline"], panoptic["machine"]
        lines += ["## Panoptic mode", "", f"Command: `{panoptic['command']}` on {m['cpu']} ({m['cores']} cores), "
                  f"commit `{panoptic.get('commit')}`, {panoptic.get('date', '')[:10]}; `{p['source']}`.", "",
                  f"Default pipeline with `{p['instance_model']}+{p['semantic_model']}` (both models batched in one "
                  f"infer stage, fused in postprocess; semantic weights: {p['semantic_weights']}) "
                  f"{p['fps_panoptic']:.2f} fps against `{p['instance_model']}` alone {p['fps_instance']:.2f} fps: "
                  f"{p['panoptic_over_instance']:.3f} (best of {len(p['runs']['instance'])} alternating runs each).", ""]
    if study:
        from pipeline.evaluation.model_study_report import render_markdown

        lines += ["## Segmentation accuracy (held-out)", "", render_markdown(study).strip(), ""]
    return "\n".join(lines)


def observability_section(bench: dict | None) -> str:
    """What --metrics, --preview and --foxglove cost (pipeline.bench_observability)."""
    if not bench:
        return ""
    o, s, m = bench["overhead"], bench["stalled"], bench["machine"]
    un, st = s["unwatched"], s["stalled"]
    return "\n".join([
        f"Command: `{bench['command']}` on {m['cpu']} ({m['cores']} cores), commit `{bench.get('commit')}`, "
        f"{bench.get('date', '')[:10]}.", "",
        "| run | fps | against all off |", "|---|---|---|",
        f"| all three off | {o['fps_off']:.2f} | 1.000 |",
        f"| metrics + preview + Foxglove on and watched | {o['fps_watched']:.2f} | {o['watched_over_off']:.3f} |", "",
        f"Best of {len(o['runs']['off'])} alternating runs each on `{o['source']}` (goal: at least 0.95; "
        "watched/off of each pair: " + ", ".join(f"{w / f:.3f}" for f, w in zip(o["runs"]["off"], o["runs"]["watched"],
                                                                              strict=True)) + "); "
        f"the watching clients run on the same cores and used {o['last_clients'].get('clients_cpu_s', '?')} s "
        "of CPU in the last watched run. "
        f"A viewer that stops reading, on a realtime run of `{s['source']}` with all three on: "
        f"{st['fps']:.2f} fps and {st['dropped']} frames dropped, against {un['fps']:.2f} fps and "
        f"{un['dropped']} dropped with nobody connected; once warmed up (25 s after the start) to the end, "
        "the publish stage's "
        "resident memory went "
        f"{st['rss_first_mib']} → {st['rss_last_mib']} MiB (peak {st['rss_max_mib']}) with the stalled "
        f"viewers, {un['rss_first_mib']} → {un['rss_last_mib']} MiB (peak {un['rss_max_mib']}) without.",
    ])


def render_doc(figures: dict, gpu: dict | None, extra: str = "") -> str:
    cases = figures["cases"]
    parts = [
        "# Benchmarks",
        "",
        "Generated by `scripts/benchmarks_doc.py` from the benchmark's JSON; do not edit by hand.",
        "",
        provenance(figures),
        "",
        "## Pipeline against the plain loop and inference alone",
        "",
        "(a) the loop a user would write (decode → model at batch 1 on every core → postprocess → overlay "
        "→ encode, warmed up); (b) the model alone on prepared frames at the pipeline's batch size; "
        "(c) the five-process pipeline, start-up excluded. All measured in one run on the same input, "
        "model, backend and encoder.",
        "",
        case_table(cases),
        "",
        "## Goals",
        "",
        "The ceiling is what a perfect pipeline would reach on this machine: the CPU-work bound "
        "divided by the baseline. Where it is below the goal, no scheduling of these stages can meet "
        "the goal here; the remaining lever is less work per frame (the model above all).",
        "",
        goal_table(cases),
        "",
        "## Per-stage CPU cost (core-ms per frame, each stage alone on the same frames)",
        "",
        "CPU time of every thread of the stage's work (`time.process_time`), with the thread budget the "
        "resource plan gives the stage. CPU-work bound = cores / total: the fastest any scheduling of these "
        "stages could go on this machine.",
        "",
        cost_table(cases),
        "",
    ]
    if "hop_us" in figures:
        hop = figures["hop_us"]
        parts += ["## One local hop, 1080p RGB frame", "",
                  f"Shared-memory handle (incl. writing the frame into the ring once): {hop['shm']:.0f} µs; "
                  f"ZeroMQ copy: {hop['zmq']:.0f} µs ({hop['zmq'] / hop['shm']:.1f}x).", ""]
    if extra:
        parts.append(extra)
    parts.append(gpu_section(gpu))
    return "\n".join(parts)


def render_readme_table(figures: dict) -> str:
    lines = [BEGIN, "", provenance(figures), "", case_table(figures["cases"]), "", goal_table(figures["cases"]), "",
             "Per-stage costs and every other figure: [docs/BENCHMARKS.md](docs/BENCHMARKS.md).", "", END]
    return "\n".join(lines)


def splice(readme: str, table: str, begin: str = BEGIN, end: str = END) -> str:
    if begin not in readme or end not in readme:
        raise SystemExit(f"README.md has no {begin} ... {end} block to replace")
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + table + tail


def _optional_json(path: str | None) -> dict | None:
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench_json", help="output of python -m pipeline.bench --suite full --json FILE")
    parser.add_argument("--gpu", help="output of scripts/gpu_check.sh")
    parser.add_argument("--docs", default=str(REPO / "docs" / "BENCHMARKS.md"))
    parser.add_argument("--readme", default=str(REPO / "README.md"))
    parser.add_argument("--tracking-study", default=str(BENCH_DIR / "tracking_study.json"),
                        help="output of python -m pipeline.evaluation.tracking_study --json FILE (if it exists)")
    parser.add_argument("--tracking-bench", default=str(BENCH_DIR / "tracking.json"),
                        help="output of python -m pipeline.bench_tracking --json FILE (if it exists)")
    parser.add_argument("--compare", default=str(BENCH_DIR / "supervision.json"),
                        help="output of scripts/compare_supervision.py --json FILE (if it exists)")
    parser.add_argument("--panoptic-bench", default=str(BENCH_DIR / "panoptic.json"),
                        help="output of python -m pipeline.bench_panoptic --json FILE (if it exists)")
    parser.add_argument("--model-study", default=str(BENCH_DIR / "model_study.json"),
                        help="output of python -m pipeline.evaluation.model_study --json FILE (if it exists)")
    parser.add_argument("--observability", default=str(BENCH_DIR / "observability.json"),
                        help="output of python -m pipeline.bench_observability --json FILE (if it exists)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the docs are stale")
    args = parser.parse_args(argv)
    try:
        figures = json.loads(Path(args.bench_json).read_text())
        gpu = json.loads(Path(args.gpu).read_text()) if args.gpu else None
        extra = tracking_section(_optional_json(args.tracking_study), _optional_json(args.tracking_bench),
                                 _optional_json(args.compare))
        segmentation = segmentation_section(_optional_json(args.panoptic_bench), _optional_json(args.model_study))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not figures.get("cases"):
        print(f"error: {args.bench_json}: no 'cases' (is it the output of pipeline.bench --json?)", file=sys.stderr)
        return 2
    doc = render_doc(figures, gpu, extra + ("\n" + segmentation if segmentation else ""))
    readme = splice(Path(args.readme).read_text(), render_readme_table(figures))
    if TRACK_BEGIN in readme:
        nested = re.sub(r"(?m)^## ", "### ", extra)  # inside the README's tracking section
        readme = splice(readme, "\n".join([TRACK_BEGIN, "", nested or "(no tracking figures yet)", TRACK_END]),
                        TRACK_BEGIN, TRACK_END)
    study = _optional_json(args.model_study)
    if MODELS_BEGIN in readme and study:
        from pipeline.evaluation.model_study_report import summary_table

        sizes = {p.stem: p.stat().st_size / 1e6 for p in (REPO / "engines" / "weights").glob("*.pt")}
        readme = splice(readme, "\n".join([MODELS_BEGIN, "", summary_table(study, sizes), "", MODELS_END]),
                        MODELS_BEGIN, MODELS_END)
    observability = observability_section(_optional_json(args.observability))
    if OBS_BEGIN in readme and observability:
        readme = splice(readme, "\n".join([OBS_BEGIN, "", observability, "", OBS_END]), OBS_BEGIN, OBS_END)
    if args.check:
        stale = [p for p, text in ((args.docs, doc), (args.readme, readme)) if Path(p).read_text() != text]
        for path in stale:
            print(f"stale: {path} does not match {args.bench_json}", file=sys.stderr)
        return 1 if stale else 0
    Path(args.docs).parent.mkdir(parents=True, exist_ok=True)
    Path(args.docs).write_text(doc)
    Path(args.readme).write_text(readme)
    print(f"wrote {args.docs} and the table in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
