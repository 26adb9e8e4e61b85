"""Command line: ``python run_pipeline.py [--config FILE] [--source URI] ...``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pipeline import startup_signals
from pipeline.config import apply_overrides, load_config
from pipeline.errors import PipelineError
from pipeline.output_paths import check_output_paths

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
ABORTED = "aborted by signal"


def _none_or(value: str) -> str | None:
    return None if value.lower() in ("none", "off", "") else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_pipeline.py",
        argument_default=argparse.SUPPRESS,
        description="Segment a video file, image folder, synthetic scene or live feed; write an "
        "overlay video and publish every frame's masks over ZeroMQ.",
    )
    parser.add_argument("--config", default=None, help=f"YAML config (default: {DEFAULT_CONFIG.name} if present)")
    parser.add_argument("--source", action="append",
                        help="video file, image folder, synthetic://..., rtsp://..., camera:N; repeat for several streams")
    parser.add_argument("--output", type=_none_or, help="overlay video path ('none' disables drawing/encoding)")
    parser.add_argument("--publish", type=_none_or, help="ZeroMQ PUB endpoint, e.g. tcp://127.0.0.1:5560 ('none' disables)")
    parser.add_argument("--allow-remote", action="store_true", help="allow binding non-loopback addresses")
    parser.add_argument("--metrics", type=_none_or, metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics while the run lasts "
                             "(e.g. 127.0.0.1:9108; 'none' disables)")
    parser.add_argument("--preview", type=_none_or, metavar="HOST:PORT",
                        help="live preview in a browser at http://HOST:PORT/ while the run lasts "
                             "(e.g. 127.0.0.1:8090; 'none' disables)")
    parser.add_argument("--foxglove", type=_none_or, metavar="HOST:PORT",
                        help="serve every frame's results live to Foxglove at ws://HOST:PORT (the --mcap "
                             "messages; e.g. 127.0.0.1:8765; 'none' disables)")
    parser.add_argument("--curve-secret-key", help="encrypt tcp publish with CURVE: the publisher's secret key file")
    parser.add_argument("--curve-authorized", help="CURVE: directory of authorized consumers' public keys")
    parser.add_argument("--model", help="model name (e.g. maskrcnn_demo, fcn_demo, maskrcnn_resnet50_fpn, fcn_resnet50); "
                        "INSTANCE+SEMANTIC (e.g. maskrcnn_demo+fcn8s_demo) runs both: panoptic output")
    parser.add_argument("--weights", help="torchvision weight name (DEFAULT, COCO_V1...), checkpoint path, 'random' or 'demo'")
    parser.add_argument("--semantic-weights", help="panoptic mode (--model A+B): the semantic model's weights, as --weights")
    parser.add_argument("--backend", help="pytorch | onnxruntime | tensorrt | auto")
    parser.add_argument("--device", help="cpu | cuda")
    parser.add_argument("--min-size", type=int, help="resize: shorter side (default: the model's)")
    parser.add_argument("--max-size", type=int, help="resize: cap on the longer side (default: the model's)")
    parser.add_argument("--score-threshold", type=float, help="drop detections scoring below this")
    parser.add_argument("--batch-size", type=int, help="frames per inference batch")
    parser.add_argument("--max-wait-ms", type=float, help="longest wait to fill a batch")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--realtime", action="store_true", help="play a file at its frame rate, as a live feed")
    parser.add_argument("--live-policy", choices=["latest", "drop_oldest", "block"],
                        help="live feeds: which frames to drop when the model is slower (default latest)")
    parser.add_argument("--save-results", help="write every frame's results as JSON lines")
    parser.add_argument("--report", help="write the run report (JSON)")
    parser.add_argument("--mcap", type=_none_or, metavar="PATH",
                        help="record every frame's results as ROS 2 messages in an MCAP file (Foxglove, ros2 bag)")
    parser.add_argument("--max-restarts", type=int,
                        help="per stage: restarts after a crash or hang within supervision.restart_window_s "
                             "(default 600 s) before the run fails (default 3; 0: never)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", "-v", action="store_true", default=False, help="stage logs to the terminal")
    return parser


FLAG_TO_KEY = {
    "max_restarts": "supervision.max_restarts",
    "source": "source.uri",
    "max_frames": "source.max_frames",
    "realtime": "source.realtime",
    "live_policy": "source.live_policy",
    "model": "model.name",
    "weights": "model.weights",
    "semantic_weights": "model.semantic_weights",
    "backend": "model.backend",
    "device": "model.device",
    "min_size": "model.min_size",
    "max_size": "model.max_size",
    "score_threshold": "model.score_threshold",
    "batch_size": "batching.batch_size",
    "max_wait_ms": "batching.max_wait_ms",
    "output": "output.video",
    "publish": "output.publish",
    "allow_remote": "output.allow_remote",
    "curve_secret_key": "output.curve_secret_key",
    "curve_authorized": "output.curve_authorized_dir",
    "save_results": "output.save_results",
    "report": "output.report",
    "mcap": "output.mcap",
    "no_progress": "output.progress",
    "metrics": "observability.metrics",
    "preview": "observability.preview",
    "foxglove": "observability.foxglove",
}


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted config keys for the flags actually given (all flags default to SUPPRESS)."""
    given = vars(args)
    overrides = {key: given[flag] for flag, key in FLAG_TO_KEY.items() if flag in given}
    if "model.name" in overrides:  # --model names the whole set: A (one model) or A+B (panoptic)
        name, _, semantic = str(overrides["model.name"]).partition("+")
        overrides["model.name"], overrides["model.semantic"] = (overrides["model.name"], None) if not semantic \
            else (name, semantic)
    if isinstance(overrides.get("source.uri"), list) and len(overrides["source.uri"]) == 1:
        overrides["source.uri"] = overrides["source.uri"][0]
    if "output.progress" in overrides:
        overrides["output.progress"] = False
    return overrides


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline from the command line; returns the exit code (0, 2 bad input or a
    failed run, 130 interrupted by Ctrl-C/SIGTERM). ``segstream fleet ...`` is
    ``python -m pipeline.fleet ...`` (docs/FLEET.md)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["fleet"]:  # many files and cameras over a Ray cluster: its own command line
        from pipeline.fleet.cli import main as fleet_main

        return fleet_main(argv[1:])
    startup_signals.defer()  # again, for callers other than run_pipeline.py
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO, format="segstream: %(message)s", stream=sys.stderr)
        return _run(args)
    except KeyboardInterrupt:
        print(f"error: {ABORTED}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        startup_signals.restore()


def _run(args: argparse.Namespace) -> int:
    log = logging.getLogger("segstream")
    try:
        config_path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
        config = load_config(config_path)
        config = apply_overrides(config, overrides_from_args(args))
        check_output_paths(config)  # before importing torch: a bad path fails in a moment

        from pipeline.supervisor import Supervisor

        if startup_signals.resume():  # a signal came during the imports above
            raise KeyboardInterrupt
        report = Supervisor(config, verbose=args.verbose).run()  # takes signals over
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)  # an abort by a second Ctrl-C: 130
    if config.output.report:
        Path(config.output.report).parent.mkdir(parents=True, exist_ok=True)
        Path(config.output.report).write_text(json.dumps(report, indent=2))
    latency = report["latency_ms"]
    p50 = f"{latency['p50']:.0f} ms" if latency.get("p50") is not None else "n/a"
    log.info(
        "done: %d frames in %.1f s (%.2f fps, latency p50 %s)%s%s",
        report["frames_written"] or report["frames_published"] or report["frames_processed"],
        report["processing_s"],
        report["fps"],
        p50,
        f", overlay: {config.output.video}" if config.output.video else "",
        f", report: {config.output.report}" if config.output.report else "",
    )
    return EXIT_INTERRUPTED if report.get("interrupted") else 0
