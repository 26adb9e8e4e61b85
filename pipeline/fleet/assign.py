"""Live streams: what they are, and how they are shared out over worker actors (pure).

A stream line is ``[NAME=]URI [WxH]``. Its resolution weighs it: a synthetic URI says its
own (``size=WxH``), a line may give one, anything else counts as ``DEFAULT_SIZE``
(opening every camera on the driver just to weigh it would cost seconds per stream).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from pipeline.fleet.files import FleetInputError, read_list

__all__ = ["StreamSpec", "parse_stream", "load_streams", "assign_streams", "DEFAULT_SIZE"]

DEFAULT_SIZE = (1280, 720)
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class StreamSpec:
    """One live stream: its name in the directory, its URI and its frame size."""

    name: str
    uri: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        """Pixels per frame: the stream's weight when balancing."""
        return self.width * self.height


def _size(text: str, where: str) -> tuple[int, int]:
    match = _SIZE.match(text)
    if not match or not int(match.group(1)) or not int(match.group(2)):
        raise FleetInputError(f"bad stream size {text!r} in {where!r}: use WxH, e.g. 1280x720")
    return int(match.group(1)), int(match.group(2))


def parse_stream(line: str, index: int) -> StreamSpec:
    """A stream from ``[NAME=]URI [WxH]``; unnamed streams are called ``stream-INDEX``."""
    parts = line.split()
    if not parts or len(parts) > 2:
        raise FleetInputError(f"bad stream {line!r}: use [NAME=]URI [WxH]")
    name, uri = f"stream-{index}", parts[0]
    head, sep, rest = uri.partition("=")
    if sep and "://" not in head and not head.startswith("/"):
        name, uri = head, rest
        if not _NAME.match(name):
            raise FleetInputError(f"bad stream name {name!r}: letters, digits, '_.-' only")
    if len(parts) == 2:
        width, height = _size(parts[1], line)
    else:
        query = parse_qs(urlsplit(uri).query) if uri.startswith("synthetic://") else {}
        width, height = _size(query["size"][0], line) if "size" in query else DEFAULT_SIZE
    return StreamSpec(name=name, uri=uri, width=width, height=height)


def load_streams(uris: list[str], list_files: list[str] = ()) -> list[StreamSpec]:
    """Every stream from the command line and the list files, names checked unique."""
    lines = [ln for path in list_files for ln in read_list(path)] + list(uris)
    if not lines:
        raise FleetInputError("no streams (give URIs or --list FILE)")
    specs = [parse_stream(line, i) for i, line in enumerate(lines)]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise FleetInputError(f"stream names must be unique: {', '.join(dupes)} repeated")
    return specs


def assign_streams(specs: list[StreamSpec], max_per_worker: int,
                   workers: int | None = None) -> list[list[StreamSpec]]:
    """Share ``specs`` out over workers, at most ``max_per_worker`` each.

    As few workers as the cap allows (or ``workers``, if more). Greedy by weight: the
    largest stream first, each to the worker with the fewest pixels so far (then the fewest
    streams, then the lowest index), among workers with room. So counts differ by the cap
    at most and heavy streams do not pile up. Deterministic: the same list gives the same
    assignment. Raises FleetInputError when the cap or the worker count cannot hold them.
    """
    if max_per_worker < 1:
        raise FleetInputError("--max-per-worker must be at least 1")
    needed = math.ceil(len(specs) / max_per_worker)
    count = needed if workers is None else workers
    if count < needed or count < 1:
        raise FleetInputError(f"{len(specs)} streams need at least {needed} workers at "
                              f"{max_per_worker} per worker; --workers {workers} is too few")
    count = min(count, len(specs)) or 1
    groups: list[list[StreamSpec]] = [[] for _ in range(count)]
    loads = [0] * count
    order = sorted(range(len(specs)), key=lambda i: (-specs[i].pixels, i))
    for i in order:
        room = [w for w in range(count) if len(groups[w]) < max_per_worker]
        target = min(room, key=lambda w: (loads[w], len(groups[w]), w))
        groups[target].append(specs[i])
        loads[target] += specs[i].pixels
    return [g for g in groups if g]
