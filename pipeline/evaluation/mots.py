"""The MOTS text format (KITTI-MOTS style) of tracked instance predictions: write and read.

One file per stream, ``DIR/<stream>.txt`` (the record's ``stream``; it must be a plain file
name: letters, digits, ``_``, ``-``, ``.``, not starting with ``.``). One line per object
per frame, fields separated by one space, frames ascending::

    frame object_id class_id height width rle_counts

* ``frame``: the record's ``seq`` (frame index, from 0);
* ``object_id`` = ``class_id * 1000 + track_id`` (KITTI-MOTS); the reader recovers
  ``track_id = object_id - 1000 * class_id``, which also holds for track ids >= 1000
  (there ``object_id // 1000`` is no longer the class, so other tools must use the
  ``class_id`` column; TrackEval does). KITTI-MOTS reserves class 10 for ignore regions;
* ``class_id``: the record's predicted class id (index into its ``class_names``);
* ``height width``: the frame size; ``rle_counts``: the COCO compressed RLE ``counts``
  string of the mask (column-major, as ``pycocotools.mask.encode`` and docs/PROTOCOL.md).

Masks are made non-overlapping first, as MOTS requires: each pixel goes to the instance
with the highest score (equal scores: the one listed first in the record); an instance
left with no pixel is not written. A frame with no object has no line. When a stream has
several records for one ``seq`` (a restarted run), the last one counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.records import (
    EvaluationError,
    check_mask_size,
    has_track_ids,
    record_track_ids,
)
from pipeline.ops.rle import decode as decode_rle
from pipeline.ops.rle import decompress_counts

__all__ = ["MOTS_ID_FACTOR", "MotsObject", "exclusive_masks", "read_mots", "write_mots"]

MOTS_ID_FACTOR = 1000
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class MotsObject:
    """One line of a MOTS file."""

    frame: int
    track_id: int
    class_id: int
    mask: dict[str, Any]  # COCO RLE {"size": [height, width], "counts": str}

    @property
    def object_id(self) -> int:
        return self.class_id * MOTS_ID_FACTOR + self.track_id

    def line(self) -> str:
        h, w = (int(v) for v in self.mask["size"])
        return f"{self.frame} {self.object_id} {self.class_id} {h} {w} {self.mask['counts']}"


def _str_counts(rle: Mapping[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(v) for v in rle["size"]], "counts": counts}


def exclusive_masks(masks: Sequence[Mapping[str, Any]], scores: Sequence[float]) -> list:
    """Non-overlapping versions of the RLEs ``masks`` (same frame): each pixel goes to the
    highest score (ties: the earlier mask). Returns, in input order, the RLE of each mask,
    or None where nothing is left of it; unchanged masks keep their ``counts``."""
    from pycocotools import mask as mask_utils

    if not masks:
        return []
    rles = [_str_counts(m) for m in masks]
    areas = mask_utils.area(rles)
    overlap = np.triu(mask_utils.iou(rles, rles, [0] * len(rles)), 1) > 0
    out: list[dict[str, Any] | None] = [
        r if a > 0 else None for r, a in zip(rles, areas, strict=True)
    ]
    if not overlap.any():
        return out
    taken = np.zeros([int(v) for v in rles[0]["size"]], dtype=bool)
    for k in sorted(range(len(rles)), key=lambda i: -float(scores[i])):  # stable: ties keep order
        mine = decode_rle(rles[k]) & ~taken
        taken |= mine
        area = int(mine.sum())
        if area == 0:
            out[k] = None
        elif area != areas[k]:
            out[k] = _str_counts(mask_utils.encode(np.asfortranarray(mine, dtype=np.uint8)))
    return out


def _stream_file(out_dir: Path, stream: str) -> Path:
    if not _SAFE_NAME.fullmatch(stream):
        raise EvaluationError(
            f"stream id {stream!r} cannot be a MOTS file name (letters, digits, _ - . only)"
        )
    return out_dir / f"{stream}.txt"


def _frame_objects(rec: Mapping[str, Any], where: str) -> list[MotsObject]:
    tids_all = record_track_ids(rec, where, required=False)  # null: untracked, not written
    insts = [inst for inst, tid in zip(rec.get("instances") or [], tids_all, strict=True) if tid is not None]
    tids = [tid for tid in tids_all if tid is not None]
    for k, inst in enumerate(insts):
        if inst.get("mask") is None:
            raise EvaluationError(f"{where}: seq {rec['seq']} instance {k} has no 'mask'")
        check_mask_size(inst["mask"], int(rec["seq"]), int(rec["height"]), int(rec["width"]))
    masks = exclusive_masks([i["mask"] for i in insts], [i.get("score", 1.0) for i in insts])
    return [
        MotsObject(int(rec["seq"]), int(tid), int(inst["class_id"]), m)
        for inst, tid, m in zip(insts, tids, masks, strict=True)
        if m is not None
    ]


def write_mots(
    records: Iterable[Mapping[str, Any]], out_dir: str | Path, *, source: str = "predictions"
) -> list[Path]:
    """Write the tracked instance ``records`` as MOTS text, one file per stream (see the
    module docstring); returns the files written. ``source`` names the input in errors.
    Instances whose ``track_id`` is null (no confirmed track) are not written."""
    records = list(records)
    if not has_track_ids(records):
        raise EvaluationError(f"{source}: no instance has a 'track_id' (results of a run with tracking off?)")
    last: dict[str, dict[int, Mapping[str, Any]]] = {}
    for rec in records:
        last.setdefault(str(rec.get("stream", "0")), {})[int(rec["seq"])] = rec
    out = Path(out_dir)
    paths = {stream: _stream_file(out, stream) for stream in last}
    lines = {
        stream: [obj.line() for seq in sorted(recs) for obj in _frame_objects(recs[seq], source)]
        for stream, recs in last.items()
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        for stream, path in paths.items():
            path.write_text("".join(f"{line}\n" for line in lines[stream]), encoding="ascii")
    except OSError as exc:
        raise EvaluationError(f"cannot write MOTS files to {out}: {exc.strerror or exc}") from exc
    return list(paths.values())


def _parse_line(line: str, where: str) -> MotsObject:
    fields = line.split()
    if len(fields) != 6:
        raise EvaluationError(f"{where}: expected 6 fields, got {len(fields)}")
    try:
        frame, obj_id, cid, h, w = (int(v) for v in fields[:5])
    except ValueError:
        raise EvaluationError(f"{where}: the first 5 fields must be integers") from None
    if frame < 0 or cid < 0 or h <= 0 or w <= 0:
        raise EvaluationError(f"{where}: frame and class_id must be >= 0, height and width > 0")
    track = obj_id - MOTS_ID_FACTOR * cid
    if track < 0:
        raise EvaluationError(f"{where}: object id {obj_id} is below class_id {cid} * 1000")
    try:
        runs = decompress_counts(fields[5])
    except (ValueError, UnicodeEncodeError):
        runs = None
    if runs is None or runs.size == 0 or runs.min() < 0 or int(runs.sum()) != h * w:
        raise EvaluationError(f"{where}: rle_counts is not a valid {h}x{w} COCO RLE")
    return MotsObject(frame, track, cid, {"size": [h, w], "counts": fields[5]})


def read_mots(path: str | Path) -> list[MotsObject]:
    """Read a MOTS text file (blank lines skipped); errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise EvaluationError(f"MOTS file not found: {p}")
    objects: list[MotsObject] = []
    seen: set[tuple[int, int]] = set()
    with p.open("r", encoding="ascii", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            obj = _parse_line(line, f"{p}:{lineno}")
            if (obj.frame, obj.object_id) in seen:
                raise EvaluationError(
                    f"{p}:{lineno}: object id {obj.object_id} appears twice in frame {obj.frame}"
                )
            seen.add((obj.frame, obj.object_id))
            objects.append(obj)
    return objects
