"""Saved results (``segstream.frame`` JSON lines) and ground truth: reading and checking.

A ``--save-results`` file holds one ``segstream.frame`` record per line (see
docs/PROTOCOL.md); its ``seq`` is the frame index, i.e. the COCO image id of the ground
truth that ``python -m pipeline.synthetic`` writes (``DIR/instances.json`` and
``DIR/semantic/<frame:06d>.png``).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.ops.rle import encode_mask

__all__ = [
    "SCHEMA",
    "SUPPORTED_MAJOR",
    "EvaluationError",
    "CategoryMap",
    "check_frame_size",
    "check_mask_size",
    "frame_record",
    "has_track_ids",
    "load_ground_truth",
    "load_predictions",
    "load_semantic_maps",
    "record_track_ids",
]

SCHEMA = "segstream.frame"
SUPPORTED_MAJOR = 1


class EvaluationError(PipelineError):
    """Ground truth or predictions cannot be read or do not fit together."""


def _finite(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _version_major(version: Any) -> int | None:
    if isinstance(version, Mapping):
        return int(version.get("major")) if "major" in version else None
    if isinstance(version, list | tuple) and version:
        return int(version[0])
    return None


def _record_instance(inst: Mapping[str, Any], k: int, class_names) -> dict[str, Any]:
    rle = inst.get("mask")
    if rle is None:
        rle = encode_mask(np.asarray(inst["mask_array"], dtype=bool))
    cid = int(inst["class_id"])
    out = {
        "id": int(inst.get("id", k)),
        "class_id": cid,
        "class_name": class_names[cid] if 0 <= cid < len(class_names) else str(cid),
        "score": float(inst.get("score", 1.0)),
        "box": [float(v) for v in inst["box"]],
        "mask": rle,
    }
    if inst.get("track_id") is not None:
        out["track_id"] = int(inst["track_id"])
    return out


def frame_record(
    seq: int,
    width: int,
    height: int,
    class_names: list[str] | tuple[str, ...],
    *,
    instances: Iterable[Mapping[str, Any]] | None = None,
    class_map: np.ndarray | None = None,
    model: str = "ground-truth",
    stream: str = "0",
) -> dict[str, Any]:
    """Build one ``segstream.frame`` JSON record (the ``--save-results`` line format).

    ``instances``: dicts with ``class_id``, ``score``, ``box`` (x0, y0, x1, y1) and either
    ``mask`` (COCO RLE) or ``mask_array`` (bool [H, W], encoded here); ``id`` and
    ``track_id`` optional.
    ``class_map``: [H, W] uint8 for the semantic task (one RLE per present class != 0).
    """
    insts = [_record_instance(inst, k, class_names) for k, inst in enumerate(instances or [])]
    semantic = None
    if class_map is not None:
        cm = np.asarray(class_map)
        semantic = {
            "height": int(cm.shape[0]),
            "width": int(cm.shape[1]),
            "classes": [
                {"class_id": int(k), "mask": encode_mask(cm == k)}
                for k in np.unique(cm)
                if k != 0 and k != 255
            ],
        }
    return {
        "schema": SCHEMA,
        "version": {"major": 1, "minor": 0},
        "stream": stream,
        "seq": int(seq),
        "width": int(width),
        "height": int(height),
        "model": model,
        "task": "semantic" if class_map is not None else "instance",
        "class_names": list(class_names),
        "instances": insts,
        "semantic": semantic,
    }


def load_predictions(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``--save-results`` JSON-lines file (blank lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise EvaluationError(f"prediction file not found: {p}")
    records = []
    with p.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvaluationError(f"{p}:{lineno}: not valid JSON ({exc.msg})") from exc
            _check_record(rec, f"{p}:{lineno}")
            records.append(rec)
    return records


def _check_record(rec: Any, where: str) -> None:
    if not isinstance(rec, dict):
        raise EvaluationError(f"{where}: a record must be a JSON object")
    if rec.get("schema", SCHEMA) != SCHEMA:
        raise EvaluationError(f"{where}: unknown schema {rec.get('schema')!r} (want {SCHEMA!r})")
    major = _version_major(rec.get("version"))
    if major is not None and major != SUPPORTED_MAJOR:
        raise EvaluationError(
            f"{where}: unsupported record version {major}.x (this evaluator reads {SUPPORTED_MAJOR}.x)"
        )
    for key in ("seq", "width", "height"):
        if not isinstance(rec.get(key), int):
            raise EvaluationError(f"{where}: missing or non-integer {key!r}")


def load_ground_truth(gt_dir: str | Path) -> dict[str, Any]:
    """Load ``DIR/instances.json`` (COCO dict); raises ``EvaluationError`` when missing."""
    d = Path(gt_dir)
    if not d.is_dir():
        raise EvaluationError(f"ground-truth directory not found: {d}")
    path = d / "instances.json"
    if not path.is_file():
        raise EvaluationError(
            f"ground truth {path} not found (write it with python -m pipeline.synthetic)"
        )
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EvaluationError(f"{path}: not valid JSON ({exc.msg})") from exc
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise EvaluationError(f"{path}: not a COCO file (no {key!r})")
    return coco


def load_semantic_maps(gt_dir: str | Path, frame_ids: Iterable[int]) -> dict[int, np.ndarray]:
    """Load ``DIR/semantic/<id:06d>.png`` for each frame id."""
    from PIL import Image

    d = Path(gt_dir) / "semantic"
    if not d.is_dir():
        raise EvaluationError(f"semantic ground truth {d} not found")
    maps = {}
    for i in frame_ids:
        p = d / f"{int(i):06d}.png"
        if not p.is_file():
            raise EvaluationError(f"semantic ground truth for frame {i} missing: {p}")
        with Image.open(p) as im:
            maps[int(i)] = np.asarray(im, dtype=np.uint8)
    return maps


def _index_records(
    predictions: Iterable[Mapping[str, Any]], known_ids: set[int], *, warn: bool = True
) -> tuple[dict[int, Mapping[str, Any]], list[int], int]:
    """Latest record per seq among the known ids; unknown seqs and duplicate count."""
    by_seq: dict[int, Mapping[str, Any]] = {}
    unknown: list[int] = []
    duplicates = 0
    for rec in predictions:
        _check_record(rec, f"record seq={rec.get('seq') if isinstance(rec, dict) else '?'}")
        seq = int(rec["seq"])
        if seq not in known_ids:
            unknown.append(seq)
            continue
        if seq in by_seq:
            duplicates += 1
        by_seq[seq] = rec
    if unknown and warn:
        warnings.warn(
            f"{len(unknown)} prediction record(s) for frames not in the ground truth "
            f"(e.g. seq {unknown[0]}); skipped",
            stacklevel=3,
        )
    if duplicates and warn:
        warnings.warn(
            f"{duplicates} duplicate record(s) for the same frame; the last one counts",
            stacklevel=3,
        )
    return by_seq, unknown, duplicates


class CategoryMap:
    """Predicted class -> ground-truth category id: by name when the record carries
    ``class_names`` (or the instance a ``class_name``), else by id."""

    def __init__(self, categories: Iterable[Mapping[str, Any]]) -> None:
        self.names = {int(c["id"]): str(c["name"]) for c in categories}
        self._by_name = {v: k for k, v in self.names.items()}

    def category(self, inst: Mapping[str, Any], rec: Mapping[str, Any]) -> int | str:
        """The GT category id of ``inst``, or the (str) predicted class when unknown."""
        cid = int(inst["class_id"])
        names = rec.get("class_names") or []
        name = inst.get("class_name") or (names[cid] if 0 <= cid < len(names) else None)
        if name is not None and name in self._by_name:
            return self._by_name[name]
        if name is None and cid in self.names:
            return cid
        return str(name if name is not None else cid)


def check_frame_size(rec: Mapping[str, Any], image: Mapping[str, Any]) -> None:
    """Raise unless record ``rec`` has the size of the ground-truth ``image``."""
    if (int(rec["width"]), int(rec["height"])) != (int(image["width"]), int(image["height"])):
        raise EvaluationError(
            f"frame {rec['seq']}: prediction is {rec['width']}x{rec['height']} but the ground "
            f"truth is {image['width']}x{image['height']}"
        )


def check_mask_size(rle: Mapping[str, Any], seq: int, height: int, width: int) -> None:
    """Raise unless the RLE ``rle`` of frame ``seq`` is [height, width]."""
    if [int(v) for v in rle["size"]] != [int(height), int(width)]:
        raise EvaluationError(
            f"frame {seq}: mask size {rle['size']} does not match the frame "
            f"{height}x{width} (size is [H, W])"
        )


def record_track_ids(rec: Mapping[str, Any], where: str, *, required: bool) -> list[int | None]:
    """``track_id`` of each instance of ``rec`` (None where absent, unless ``required``);
    raises on a value that is not an integer >= 0 or that repeats within the frame."""
    ids: list[int | None] = []
    for k, inst in enumerate(rec.get("instances") or []):
        tid = inst.get("track_id")
        if tid is None:
            if required:
                raise EvaluationError(
                    f"{where}: seq {rec['seq']} instance {k} has no 'track_id' "
                    "(tracked predictions needed)"
                )
        elif isinstance(tid, bool) or not isinstance(tid, int) or tid < 0:
            raise EvaluationError(
                f"{where}: seq {rec['seq']} instance {k}: 'track_id' must be an integer >= 0, "
                f"got {tid!r}"
            )
        elif tid in ids:
            raise EvaluationError(f"{where}: seq {rec['seq']}: 'track_id' {tid} appears twice")
        ids.append(tid)
    return ids


def has_track_ids(records: Iterable[Mapping[str, Any]]) -> bool:
    """Whether any instance of ``records`` carries a ``track_id``."""
    return any(
        inst.get("track_id") is not None for rec in records for inst in rec.get("instances") or []
    )
