"""Panoptic results on disk: one COCO panoptic RGB PNG per frame next to the results file.

With ``--save-results out/results.jsonl`` a panoptic run writes each frame's segment-id map
to ``panoptic_folder(results) / frame_png_name(stream, seq)``, i.e.
``out/results.panoptic/<stream>/<seq:06d>.png``, and the record's ``panoptic.file_name`` is
that name relative to the folder. The colours follow the COCO panoptic convention,
``id = R + 256 G + 256^2 B`` (0 = void); ``pipeline.evaluation.panoptic.read_id_png`` is the
reader. PNGs are written atomically (a sibling temporary file, then ``os.replace``), so a
reader never sees half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["MAX_SEGMENT_ID", "frame_png_name", "id_map_to_rgb", "panoptic_folder", "write_id_png"]

MAX_SEGMENT_ID = (1 << 24) - 1  # the largest id an RGB PNG can hold


def panoptic_folder(results_path: str | Path) -> Path:
    """The PNG folder of a results file: its last suffix replaced by ``.panoptic``
    (``out/results.jsonl`` -> ``out/results.panoptic``; ``out/results`` ->
    ``out/results.panoptic``)."""
    p = Path(results_path)
    if not p.name:
        raise ValueError(f"not a results file path: {str(results_path)!r}")
    return p.with_suffix(".panoptic") if p.suffix else p.with_name(p.name + ".panoptic")


def frame_png_name(stream: str, seq: int) -> str:
    """``"<stream>/<seq:06d>.png"``, the PNG of frame ``seq`` of ``stream`` relative to the
    panoptic folder. The stream id becomes a directory name, so one that is empty, starts
    with ``.``, or holds ``/``, ``\\``, ``..`` or a NUL is a ``ValueError``; so is a
    negative ``seq``."""
    s = str(stream)
    if not s or s.startswith(".") or any(bad in s for bad in ("/", "\\", "..", "\0")):
        raise ValueError(f"stream id {s!r} cannot be used as a folder name")
    if isinstance(seq, bool) or int(seq) != seq or int(seq) < 0:
        raise ValueError(f"frame seq must be an integer >= 0, got {seq!r}")
    return f"{s}/{int(seq):06d}.png"


def id_map_to_rgb(id_map: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 COCO panoptic colours of an [H, W] segment-id map (``R`` = low byte).

    Ids must be integers in ``0 .. 2**24 - 1`` (``ValueError`` otherwise)."""
    ids = np.asarray(id_map)
    if ids.ndim != 2:
        raise ValueError(f"a segment-id map must be [H, W], got shape {ids.shape}")
    if ids.size and ids.dtype.kind not in "uib":
        raise ValueError(f"segment ids must be integers, got dtype {ids.dtype}")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi > MAX_SEGMENT_ID:
            bad = lo if lo < 0 else hi
            raise ValueError(f"segment id {bad} does not fit in an RGB PNG (0..{MAX_SEGMENT_ID})")
    ids = ids.astype(np.uint32)
    rgb = np.empty((*ids.shape, 3), dtype=np.uint8)
    for c in range(3):
        rgb[..., c] = (ids >> np.uint32(8 * c)) & np.uint32(0xFF)
    return rgb


def write_id_png(path: str | Path, id_map: np.ndarray) -> None:
    """Write a segment-id map as a COCO panoptic RGB PNG at ``path``, atomically (parent
    folders created; a temporary sibling is renamed over ``path`` once complete)."""
    from PIL import Image

    rgb = id_map_to_rgb(id_map)  # validates before anything is created
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(rgb).save(tmp, format="PNG")
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
