"""``python -m pipeline.subscribe ENDPOINT [--count N]``: print one JSON line per frame.

Frames go to stdout; at the end one summary line goes to stderr, with the messages that
were skipped (malformed, of an unknown major version, repeated after a publish restart).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
from typing import Any

import numpy as np

from pipeline.client import ReceivedFrame, ResultSubscriber


def _jsonable(value: Any) -> Any:
    """MessagePack values as JSON: binary as base64, map keys as strings, extension types
    as text (a newer minor version may add fields of any MessagePack type)."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def frame_summary(frame: ReceivedFrame, with_masks: bool = False) -> dict:
    """The header as JSON (masks stay RLE unless asked; class map summarised)."""
    record = {k: v for k, v in frame.header.items() if k != "semantic"}
    if not with_masks:
        record["instances"] = [{k: v for k, v in d.items() if k != "mask"} for d in record["instances"]]
    if frame.class_map is not None:
        ids, counts = np.unique(frame.class_map, return_counts=True)
        record["semantic"] = {"height": frame.class_map.shape[0], "width": frame.class_map.shape[1],
                              "pixels_per_class": {int(i): int(c) for i, c in zip(ids, counts, strict=True)}}
    return _jsonable(record)


def summary_line(sub: ResultSubscriber, frames: int) -> str:
    """What was received and what was skipped, for stderr at the end."""
    return (f"subscribe: {frames} frame(s); skipped {sub.malformed} malformed, "
            f"{sub.rejected} of an unknown protocol version, {sub.duplicates} duplicate(s)")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.subscribe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("endpoint", help="the pipeline's publish endpoint, e.g. tcp://127.0.0.1:5560")
    parser.add_argument("--count", type=int, help="exit after N frames")
    parser.add_argument("--topic", action="append", help="stream id to subscribe to (repeatable; default all)")
    parser.add_argument("--timeout", type=float, help="exit when no frame arrives for this many seconds")
    parser.add_argument("--masks", action="store_true", help="include RLE masks in the output")
    parser.add_argument("--curve-secret-key", help="CURVE: this consumer's secret key file (NAME.key_secret)")
    parser.add_argument("--curve-server-key", help="CURVE: the publisher's public key file (server.key)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="subscribe: %(message)s", stream=sys.stderr)
    received = 0
    code = 0
    with ResultSubscriber(args.endpoint, topics=args.topic or ("",), curve_secret_key=args.curve_secret_key,
                          curve_server_key=args.curve_server_key) as sub:
        try:
            for frame in sub.frames(count=args.count, timeout_s=args.timeout):
                print(json.dumps(frame_summary(frame, args.masks), separators=(",", ":")), flush=True)
                received += 1
        except KeyboardInterrupt:
            code = 130
        except BrokenPipeError:
            return 0  # the reader went away (e.g. `| head`): nobody to tell
        print(summary_line(sub, received), file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
