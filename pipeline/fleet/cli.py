"""``python -m pipeline.fleet``: the pipeline over a Ray cluster (see docs/FLEET.md).

    python -m pipeline.fleet files  INPUT... --out ROOT [options] [-- PIPELINE ARGS]
    python -m pipeline.fleet streams URI...  [options] [-- PIPELINE ARGS]

Arguments after ``--`` go to every ``run_pipeline.py`` the fleet starts (model, batch size,
``--realtime`` ...). Exit codes: 0 all done; 1 some files failed (the report lists them);
2 bad input or an unreachable cluster (one line, before anything starts); 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.errors import PipelineError

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED_FILES, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None,
                   help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: start a "
                        "local one for this run)")
    p.add_argument("--local-cpus", type=int, default=None,
                   help="CPU budget of the local cluster started without --address")
    p.add_argument("--no-progress", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    """The fleet's argument parser (pipeline arguments come after ``--``)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.fleet",
        description="Run the segstream pipeline over a Ray cluster: many files or many "
                    "live streams. Arguments after -- go to every pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    files = sub.add_parser("files", help="one pipeline run per file, outputs committed per file")
    files.add_argument("inputs", nargs="*", help="video paths, URIs or glob patterns")
    files.add_argument("--list", dest="list_files", action="append", default=[],
                       metavar="FILE", help="a text file with one path or URI per line")
    files.add_argument("--out", required=True, type=Path,
                       help="output root on a filesystem every node mounts at the same path")
    files.add_argument("--overlay", default="mp4", help="overlay container (mp4, webm, avi, "
                                                         "mkv) or none")
    files.add_argument("--cpus-per-file", type=float, default=1.0)
    files.add_argument("--gpus-per-file", type=float, default=None,
                       help="default: 1 when the cluster has GPUs, else 0")
    files.add_argument("--max-retries", type=int, default=3,
                       help="attempts after a node or worker died (bad files never retry)")
    files.add_argument("--report", type=Path, default=None,
                       help="fleet report JSON (default: OUT/fleet_report.json)")
    _cluster_flags(files)
    streams = sub.add_parser("streams", help="live streams on worker actors, one directory")
    streams.add_argument("uris", nargs="*", help="stream URIs (NAME=URI names a stream)")
    streams.add_argument("--list", dest="list_files", action="append", default=[],
                         metavar="FILE", help="one stream per line: [NAME=]URI [WxH]")
    streams.add_argument("--max-per-worker", type=int, default=4)
    streams.add_argument("--workers", type=int, default=None,
                         help="worker actors (default: as few as --max-per-worker allows)")
    streams.add_argument("--cpus-per-worker", type=float, default=1.0)
    streams.add_argument("--gpus-per-worker", type=float, default=None,
                         help="default: 1 when the cluster has GPUs, else 0")
    streams.add_argument("--directory", default="127.0.0.1:8470", metavar="HOST:PORT",
                         help="where the stream directory (HTTP JSON) listens; port 0: any")
    streams.add_argument("--publish-host", default="node",
                         help="address results are published on: node (the node's address, "
                              "non-loopback needs --allow-remote after --) or an IP")
    streams.add_argument("--duration", type=float, default=None,
                         help="stop after this many seconds (default: until Ctrl-C)")
    _cluster_flags(streams)
    return parser


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1:]
    return argv, []


def _files(args: argparse.Namespace, passthrough: list[str]) -> int:
    from pipeline.fleet.file_run import FilesOptions, run_files
    from pipeline.fleet.report import exit_code_for

    report = run_files(FilesOptions(
        inputs=args.inputs, list_files=args.list_files, out_root=args.out,
        pipeline_args=passthrough, address=args.address, local_cpus=args.local_cpus,
        overlay=args.overlay, cpus_per_file=args.cpus_per_file,
        gpus_per_file=args.gpus_per_file, max_retries=args.max_retries,
        report_path=args.report, progress=not args.no_progress))
    files = report["files"]
    print(f"fleet: {files['done']} done, {files['skipped']} skipped, {files['failed']} failed "
          f"of {files['total']} files; {report['frames']} frames in {report['wall_s']:.1f} s "
          f"({report['fps']:.2f} fps), {report['retries']} retries; report: "
          f"{args.report or Path(args.out) / 'fleet_report.json'}", file=sys.stderr)
    for failure in report["failed"]:
        print(f"error: {failure['file']}: {failure['reason']}", file=sys.stderr)
    return exit_code_for(report)


def _streams(args: argparse.Namespace, passthrough: list[str]) -> int:
    from pipeline.fleet.stream_run import StreamsOptions, run_streams

    return run_streams(StreamsOptions(
        uris=args.uris, list_files=args.list_files, pipeline_args=passthrough,
        address=args.address, local_cpus=args.local_cpus,
        max_per_worker=args.max_per_worker, workers=args.workers,
        cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
        directory=args.directory, publish_host=args.publish_host, duration_s=args.duration,
        progress=not args.no_progress))


def main(argv: list[str] | None = None) -> int:
    """Run the fleet command line; returns the exit code."""
    own, passthrough = _split(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(own)
    logging.basicConfig(level=logging.INFO, format="fleet: %(message)s", stream=sys.stderr)
    try:
        if args.command == "files":
            return _files(args, passthrough)
        return _streams(args, passthrough)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
