"""Publish's progress in a run, kept on disk so a restarted stage knows where to carry on.

``<run dir>/publish.progress.json``: per stream the ``next`` seq to publish and the first
seq not yet ``committed``; the overlay writers' segment state; publish's counters at the last
commit. Publish writes it (atomically); a restarted publish or capture reads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PROGRESS_FILE = "publish.progress.json"


def read_progress(run_dir: str) -> dict[str, Any]:
    """The saved progress of this run; empty before publish committed anything."""
    try:
        return json.loads(Path(run_dir, PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_progress(run_dir: str, state: dict[str, Any]) -> None:
    """Replace the saved progress: a crash leaves the old or the new state, never half."""
    path = Path(run_dir, PROGRESS_FILE)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)
