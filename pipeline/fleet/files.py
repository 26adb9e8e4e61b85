"""Which files to run, where each one's outputs go, and the atomic commit that makes them
appear whole or not at all.

Layout under the output root (a filesystem every node mounts at the same path)::

    ROOT/KEY/                  a committed file: renamed into place in one step
        results.jsonl          every frame's results (run_pipeline --save-results)
        report.json            the pipeline's run report (--report)
        overlay.mp4            the overlay video (unless --overlay none)
        pipeline.log           the pipeline's log
        fleet.json             which source, node and attempt made it
    ROOT/.partial-RUN-KEY-XXXX an attempt in progress (removed when it fails or ends)
    ROOT/.fleet-RUN/attempts/KEY   one line per attempt (node, time): the retry count
    ROOT/fleet_report.json     the fleet report (default place)

A file is committed when ``ROOT/KEY/fleet.json`` exists: ``fleet.json`` is written last
inside the attempt directory and the directory is renamed onto ``ROOT/KEY`` with one
``os.rename``, which either happens entirely or not at all and fails when ``KEY`` already
exists. So a re-run skips committed files, and two attempts of one file (a node that Ray
gave up for dead but was still working) can never both commit.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError

__all__ = [
    "FleetInputError",
    "FileJob",
    "expand_inputs",
    "read_list",
    "make_jobs",
    "split_committed",
    "is_committed",
    "commit_attempt",
    "committed_keys",
    "remove_partials",
    "PARTIAL_PREFIX",
    "RESERVED_PIPELINE_FLAGS",
    "check_pipeline_args",
    "COMMIT_MARKER",
]

COMMIT_MARKER = "fleet.json"
PARTIAL_PREFIX = ".partial-"
# flags the fleet sets itself for every file or worker; a user's pass-through may not
RESERVED_PIPELINE_FLAGS = (
    "--source", "--output", "--publish", "--save-results", "--report", "--no-progress",
    "--preview", "--metrics", "--foxglove", "--mcap",
)  # fmt: skip
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class FleetInputError(PipelineError):
    """Bad fleet input (no files, an unreadable list, a reserved pipeline flag): exit 2."""


@dataclass(frozen=True)
class FileJob:
    """One input and the name of its output directory under the output root."""

    source: str
    key: str


def _is_uri(text: str) -> bool:
    return bool(_SCHEME.match(text))


def read_list(path: str) -> list[str]:
    """The entries of a list file: one path or URI per line; blank lines and ``#`` comments skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise FleetInputError(f"cannot read file list {path}: {err.strerror or err}") from err
    entries = [line.strip() for line in text.splitlines()]
    return [e for e in entries if e and not e.startswith("#")]


def expand_inputs(items: list[str], list_files: list[str] = ()) -> list[str]:
    """The inputs, in order, without repeats: each item is a path, a URI or a glob pattern
    (``*``, ``?``, ``[``; ``**`` recurses); each list file holds one path or URI per line
    (``#`` comments). Local paths become absolute, so every node reads the same file.

    Raises:
        FleetInputError: a pattern matches nothing, a list cannot be read, or no input.
    """
    found: list[str] = []
    for path in list_files:
        found += read_list(path)
    for item in items:
        if not _is_uri(item) and any(c in item for c in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise FleetInputError(f"no file matches {item}")
            found += matches
        else:
            found.append(item)
    out: list[str] = []
    seen: set[str] = set()
    for entry in found:
        entry = entry if _is_uri(entry) else os.path.abspath(entry)
        if entry not in seen:
            seen.add(entry)
            out.append(entry)
    if not out:
        raise FleetInputError("no input files (give paths, globs or --list FILE)")
    return out


def _stem(source: str) -> str:
    name = source.rstrip("/").rsplit("/", 1)[-1] or "input"
    stem = name.rsplit(".", 1)[0] if "." in name[1:] else name
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".") or "input"


def make_jobs(sources: list[str]) -> list[FileJob]:
    """One job per source; its key is the file's stem, with a short hash of the full source
    added when two sources share a stem (so keys are unique and stable for the same list)."""
    stems = [_stem(s) for s in sources]
    jobs = []
    for source, stem in zip(sources, stems, strict=True):
        key = stem
        if stems.count(stem) > 1:
            key = f"{stem}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"
        jobs.append(FileJob(source=source, key=key))
    return jobs


def is_committed(root: Path, key: str) -> bool:
    """Whether ``key``'s outputs are committed under ``root``."""
    return (Path(root) / key / COMMIT_MARKER).is_file()


def split_committed(jobs: list[FileJob], committed: set[str]) -> tuple[list[FileJob], list[FileJob]]:
    """(to run, already committed) — the resume decision, as a pure function."""
    todo = [j for j in jobs if j.key not in committed]
    done = [j for j in jobs if j.key in committed]
    return todo, done


def committed_keys(root: Path, jobs: list[FileJob]) -> set[str]:
    """The keys among ``jobs`` whose outputs are committed under ``root``."""
    return {j.key for j in jobs if is_committed(root, j.key)}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_attempt(attempt_dir: Path, final_dir: Path) -> bool:
    """Rename the finished attempt onto its final place. True when this attempt committed;
    False when another attempt had already committed (this one is then removed).

    Every file and the directory are flushed to disk before the rename, and the parent
    after it: a host that loses power right after the commit leaves the outputs whole."""
    for path in Path(attempt_dir).rglob("*"):
        if path.is_file():
            _fsync(path)
    _fsync(Path(attempt_dir))
    try:
        os.rename(attempt_dir, final_dir)
        _fsync(Path(final_dir).parent)
        return True
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
            raise
    shutil.rmtree(attempt_dir, ignore_errors=True)
    return False


def remove_partials(root: Path, run_id: str | None = None) -> list[str]:
    """Remove attempt directories left by dead workers: those of ``run_id``, or all."""
    prefix = PARTIAL_PREFIX + (f"{run_id}-" if run_id else "")
    removed = []
    for path in Path(root).glob(prefix + "*"):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed


def check_pipeline_args(args: list[str]) -> list[str]:
    """The pass-through pipeline arguments, refusing those the fleet sets itself."""
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in RESERVED_PIPELINE_FLAGS:
            raise FleetInputError(f"pipeline argument {flag} is set by the fleet; remove it")
    return list(args)
