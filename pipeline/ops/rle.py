"""COCO run-length encoding (RLE), compatible with pycocotools, in pure numpy.

Format (as written by ``pycocotools.mask.encode``):

* the mask [H, W] is read in column-major order (down the first column, then the next);
* ``counts`` alternates run lengths of 0s and 1s, starting with 0s (so it begins with 0
  when the first pixel is set) and always ends with the final run, even if that is 0s;
* the compressed string form stores each count ``x`` -- replaced by ``x - counts[i - 2]``
  for ``i >= 3`` -- as little-endian groups of 5 bits, each written as ``chr(48 + g)``
  where ``g`` has bit 5 (0x20) set on every group but the last. The value is signed: the
  last group's bit 4 (0x10) is the sign, and groups are emitted until the rest of the
  value is all 0s (or all 1s for a negative value) and that sign bit agrees with it.

:func:`encode_crop` builds the runs straight from a :class:`~pipeline.ops.paste.MaskCrop`:
only the crop's columns are scanned and the zeros around it are counted arithmetically,
so encoding costs O(crop area), not O(frame area). :func:`decode` and :func:`area` need
nothing but numpy, so a consumer in another process can copy them as-is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # numpy only at run time: consumers and the publish stage need no torch
    from .paste import MaskCrop

__all__ = [
    "area",
    "compress_counts",
    "decode",
    "decompress_counts",
    "encode_crop",
    "encode_mask",
    "rle_counts",
]

_MAX_GROUPS = 13  # ceil(64 / 5): enough 5-bit groups for any int64 value.
_SHIFTS = np.arange(_MAX_GROUPS, dtype=np.int64) * 5
# A value needs more than k groups once its magnitude reaches 2**(5k - 1).
_GROUP_LIMITS = np.left_shift(np.int64(1), _SHIFTS[1:] - 1)


def compress_counts(counts: np.ndarray | list[int]) -> str:
    """Compress run lengths into the COCO RLE counts string (see the module docstring)."""
    cnts = np.asarray(counts, dtype=np.int64).ravel()
    if cnts.size == 0:
        return ""
    x = cnts.copy()
    x[3:] -= cnts[1:-2]  # delta against the run two back, from index 3 on
    # Smallest group count n with -2**(5n-1) <= x < 2**(5n-1): the value then fits in n
    # signed 5-bit groups, which is exactly when the encoder's loop stops.
    mag = np.where(x < 0, ~x, x)  # ~x = -x - 1: same group count as the positive side
    n_groups = 1 + (mag[:, None] >= _GROUP_LIMITS[None, :]).sum(axis=1)
    groups = (x[:, None] >> _SHIFTS[None, :]) & 0x1F  # arithmetic shift keeps the sign
    last = n_groups[:, None] - 1
    cols = np.arange(_MAX_GROUPS)[None, :]
    groups = groups | np.where(cols < last, 0x20, 0)
    chars = (groups + 48)[cols <= last].astype(np.uint8)
    return chars.tobytes().decode("ascii")


def decompress_counts(s: str | bytes) -> np.ndarray:
    """Inverse of :func:`compress_counts`: the COCO counts string to int64 run lengths."""
    raw = s.encode("ascii") if isinstance(s, str) else bytes(s)
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    is_last = (c & 0x20) == 0
    ends = np.flatnonzero(is_last)
    if ends.size == 0 or ends[-1] != c.size - 1:
        raise ValueError("truncated RLE counts string")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    token = np.repeat(np.arange(ends.size), ends - starts + 1)
    pos = np.arange(c.size) - starts[token]  # group index inside its token
    vals = np.add.reduceat((c & 0x1F) << (5 * pos), starts)
    # Sign-extend tokens whose last group has bit 4 set.
    neg = (c[ends] & 0x10) != 0
    width = 5 * (ends - starts + 1)
    vals[neg] -= np.left_shift(np.int64(1), width[neg])
    # Undo the delta coding: counts[i] = x[i] + counts[i - 2] for i >= 3, i.e. running
    # sums along the odd indices from 1 and along the even indices from 2.
    out = vals.copy()
    out[1::2] = np.cumsum(vals[1::2])
    out[2::2] = np.cumsum(vals[2::2])
    return out


def rle_counts(mask: np.ndarray) -> np.ndarray:
    """Uncompressed COCO run lengths (int64) of a bool/0-1 mask [H, W]."""
    flat = np.asarray(mask).astype(bool).ravel(order="F")
    if flat.size == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(edges)
    if flat[0]:
        counts = np.concatenate(([0], counts))
    return counts.astype(np.int64)


def _crop_counts(crop: MaskCrop, height: int, width: int) -> np.ndarray:
    m = np.asarray(crop.mask, dtype=bool)
    ch, cw = m.shape
    total = int(height) * int(width)
    if ch == 0 or cw == 0 or not m.any():
        return np.array([total], dtype=np.int64)
    if crop.x0 < 0 or crop.y0 < 0 or crop.x0 + cw > width or crop.y0 + ch > height:
        raise ValueError("crop does not lie inside the frame")
    # Zero rows above and below every column keep runs from running across columns.
    padded = np.zeros((ch + 2, cw), dtype=np.int8)
    padded[1:-1] = m
    step = np.diff(padded.ravel(order="F"))
    on = np.flatnonzero(step == 1)  # padded flat index of the pixel before each run
    off = np.flatnonzero(step == -1)  # ... and of the run's last pixel
    col_on, row_on = np.divmod(on, ch + 2)
    col_off, row_off = np.divmod(off, ch + 2)
    # Map to frame flat indices (column-major): run covers [start, stop).
    start = (crop.x0 + col_on) * height + crop.y0 + row_on
    stop = (crop.x0 + col_off) * height + crop.y0 + row_off
    # A run that ends on the frame's last row continues into a run starting on the next
    # column's first row: merge such pairs (possible only when the crop spans all rows).
    joined = stop[:-1] == start[1:]
    if joined.any():
        keep_start = np.concatenate(([True], ~joined))
        keep_stop = np.concatenate((~joined, [True]))
        start, stop = start[keep_start], stop[keep_stop]
    counts = np.empty(2 * start.size + 1, dtype=np.int64)
    counts[0] = start[0]
    counts[1:-1:2] = stop - start
    counts[2:-1:2] = start[1:] - stop[:-1]
    counts[-1] = total - stop[-1]
    # The encoder emits the last run whatever its value, so no trailing empty 0-run.
    return counts if counts[-1] else counts[:-1]


def encode_crop(crop: MaskCrop, height: int, width: int) -> dict[str, Any]:
    """COCO RLE ``{"size": [H, W], "counts": str}`` of ``crop`` inside a [height, width] frame.

    Identical to ``pycocotools.mask.encode`` of the dense mask (with ``counts`` as ``str``
    instead of ``bytes``), computed from the crop alone.
    """
    counts = _crop_counts(crop, int(height), int(width))
    return {"size": [int(height), int(width)], "counts": compress_counts(counts)}


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE ``{"size": [H, W], "counts": str}`` of a dense mask [H, W]."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": compress_counts(rle_counts(mask))}


def _counts_of(rle: dict[str, Any]) -> np.ndarray:
    counts = rle["counts"]
    if isinstance(counts, (str, bytes, bytearray)):
        return decompress_counts(counts)
    return np.asarray(counts, dtype=np.int64)  # uncompressed RLE: a list of ints


def decode(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (string, bytes or list ``counts``) to a bool mask [H, W]."""
    h, w = (int(v) for v in rle["size"])
    counts = _counts_of(rle)
    if int(counts.sum()) != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {h * w}")
    values = np.arange(counts.size) % 2 == 1  # runs alternate 0s, 1s, 0s, ...
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T


def area(rle: dict[str, Any]) -> int:
    """Number of foreground pixels of a COCO RLE (sum of the 1-runs)."""
    return int(_counts_of(rle)[1::2].sum())
