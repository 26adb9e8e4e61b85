"""``python -m pipeline.subscribe ENDPOINT [--count N]``: print one JSON line per frame."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from pipeline.client import ReceivedFrame, ResultSubscriber


def frame_summary(frame: ReceivedFrame, with_masks: bool = False) -> dict:
    """The header as JSON (masks stay RLE unless asked; class map summarised)."""
    record = {k: v for k, v in frame.header.items() if k != "semantic"}
    if not with_masks:
        record["instances"] = [{k: v for k, v in d.items() if k != "mask"} for d in record["instances"]]
    if frame.class_map is not None:
        ids, counts = np.unique(frame.class_map, return_counts=True)
        record["semantic"] = {"height": frame.class_map.shape[0], "width": frame.class_map.shape[1],
                              "pixels_per_class": {int(i): int(c) for i, c in zip(ids, counts, strict=True)}}
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.subscribe", description=__doc__)
    parser.add_argument("endpoint", help="the pipeline's publish endpoint, e.g. tcp://127.0.0.1:5560")
    parser.add_argument("--count", type=int, help="exit after N frames")
    parser.add_argument("--topic", action="append", help="stream id to subscribe to (repeatable; default all)")
    parser.add_argument("--timeout", type=float, help="exit when no frame arrives for this many seconds")
    parser.add_argument("--masks", action="store_true", help="include RLE masks in the output")
    parser.add_argument("--curve-secret-key", help="CURVE: this consumer's secret key file (NAME.key_secret)")
    parser.add_argument("--curve-server-key", help="CURVE: the publisher's public key file (server.key)")
    args = parser.parse_args(argv)
    try:
        with ResultSubscriber(args.endpoint, topics=args.topic or ("",), curve_secret_key=args.curve_secret_key,
                              curve_server_key=args.curve_server_key) as sub:
            for frame in sub.frames(count=args.count, timeout_s=args.timeout):
                print(json.dumps(frame_summary(frame, args.masks), separators=(",", ":")), flush=True)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
