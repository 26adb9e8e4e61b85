"""The ``--save-results`` JSON lines file of a restarted publish stage."""

from __future__ import annotations

import json
from pathlib import Path


def truncate_uncommitted(path: Path, committed: dict[str, int]) -> None:
    """Drop the JSON lines past each stream's committed frames (``committed``: per stream,
    the first seq not committed; those frames are published again), and a torn last line."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            record = json.loads(line)
        except ValueError:
            break  # the line being written when the process died
        if record["stream"] in committed and record["seq"] < committed[record["stream"]]:
            keep.append(line)
    path.write_text("".join(keep))
