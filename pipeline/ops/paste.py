"""Batched paste-back of Mask R-CNN mask probabilities into frame coordinates.

torchvision's ``paste_masks_in_image`` loops over instances in Python, resizes each
M x M mask with ``F.interpolate`` and writes it into a zero frame it allocates per mask.
:func:`paste_masks` computes the same pixels in a few device calls:

* the masks get torchvision's 1-pixel zero padding and the boxes its (M + 2) / M
  expansion followed by truncation to int64, so box geometry is integer-identical;
* each instance's paste region (its box clipped to the frame) is sampled with one
  ``grid_sample`` call per chunk of instances. For output pixel ``(r, c)`` of a box
  ``h`` x ``w`` the sampling grid holds ``((c + 0.5) * 2 / w - 1, (r + 0.5) * 2 / h - 1)``,
  which ``grid_sample(align_corners=False)`` maps to the source coordinate
  ``(c + 0.5) * P / w - 0.5`` (P = M + 2) that bilinear ``interpolate`` uses; the
  ``border`` padding mode clamps coordinates into ``[0, P - 1]`` as interpolate does
  at the edges (because of the zero ring, ``zeros`` padding would give the same values).
  Results equal the reference up to float rounding of coordinates and weights, which
  only matters for the rare pixel whose value is within ~1e-6 of the threshold;
* chunks hold instances of similar region size (sorted by area) so padding each chunk
  to its largest region wastes little, and ``n * max_h * max_w <= chunk_pixels`` bounds
  device memory;
* only the thresholded boolean regions come to the host, one copy per chunk.

The result is a list of :class:`MaskCrop` (region origin + boolean region), never a
full frame per instance; :func:`crop_to_full` expands one when a dense mask is wanted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MaskCrop",
    "crop_to_full",
    "expand_paste_boxes",
    "paste_masks",
    "paste_masks_reference",
]


@dataclass
class MaskCrop:
    """A binary instance mask restricted to its paste region inside a frame.

    ``mask`` is a bool array [h, w] whose top-left pixel sits at frame column ``x0`` and
    row ``y0``; every frame pixel outside that rectangle is background. An instance whose
    box lies wholly outside the frame has a zero-size ``mask``.
    """

    x0: int
    y0: int
    mask: np.ndarray

    @property
    def x1(self) -> int:
        """Exclusive right edge of the region in frame columns."""
        return self.x0 + int(self.mask.shape[1])

    @property
    def y1(self) -> int:
        """Exclusive bottom edge of the region in frame rows."""
        return self.y0 + int(self.mask.shape[0])


def crop_to_full(crop: MaskCrop, height: int, width: int) -> np.ndarray:
    """Expand ``crop`` into a dense bool mask [height, width] (tests, simple consumers)."""
    full = np.zeros((height, width), dtype=bool)
    h, w = crop.mask.shape
    if h and w:
        full[crop.y0 : crop.y0 + h, crop.x0 : crop.x0 + w] = crop.mask
    return full


def expand_paste_boxes(boxes: Tensor, mask_size: int, padding: int = 1) -> Tensor:
    """Grow ``boxes`` about their centres by ``(M + 2 * padding) / M`` and truncate to int64.

    This is the box geometry of torchvision's paste (``expand_boxes`` after
    ``expand_masks``). The operations run in the boxes' own dtype and in the same order
    as there, so the integer boxes match exactly.
    """
    scale = float(mask_size + 2 * padding) / mask_size
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5
    cx = (boxes[:, 2] + boxes[:, 0]) * 0.5
    cy = (boxes[:, 3] + boxes[:, 1]) * 0.5
    half_w = half_w * scale
    half_h = half_h * scale
    grown = torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=1)
    # int64 conversion truncates toward zero, exactly like torchvision's .to(torch.int64).
    return grown.to(boxes.dtype).to(torch.int64)


def _as_nmm(mask_probs: Tensor) -> Tensor:
    if mask_probs.dim() == 4 and mask_probs.shape[1] == 1:
        mask_probs = mask_probs[:, 0]
    if mask_probs.dim() != 3:
        raise ValueError(
            f"mask_probs must be [N, M, M] or [N, 1, M, M], got {tuple(mask_probs.shape)}"
        )
    return mask_probs


# Below this many grid pixels a chunk is cheap whatever its padding, so small masks
# always share one grid_sample call.
_SMALL_CHUNK_PIXELS = 1 << 16
# A chunk closes once its padded grid would exceed this multiple of the pixels its
# members really need: boxes of equal area can still be tall-thin vs short-wide.
_MAX_PADDING_FACTOR = 2


def _plan_chunks(heights: np.ndarray, widths: np.ndarray, chunk_pixels: int) -> list[np.ndarray]:
    """Group instance indices for batched sampling; returns index arrays into the inputs.

    Instances are taken in order of region area so a group's members have similar sizes.
    A group's grid is ``n * max_h * max_w`` pixels; a new group starts when that would
    exceed ``chunk_pixels`` (the memory bound) or, above a small size, twice the pixels
    the members need (so padding never more than doubles the sampling work). One instance
    larger than ``chunk_pixels`` forms a group on its own.
    """
    areas = heights.astype(np.int64) * widths.astype(np.int64)
    order = np.argsort(areas, kind="stable")
    chunks: list[np.ndarray] = []
    start = 0
    max_h = max_w = used = 0
    for pos, idx in enumerate(order):
        new_h = max(max_h, int(heights[idx]))
        new_w = max(max_w, int(widths[idx]))
        grid = (pos - start + 1) * new_h * new_w
        wasteful = grid > _SMALL_CHUNK_PIXELS and grid > _MAX_PADDING_FACTOR * (used + areas[idx])
        if pos > start and (grid > chunk_pixels or wasteful):
            chunks.append(order[start:pos])
            start, used = pos, 0
            new_h, new_w = int(heights[idx]), int(widths[idx])
        max_h, max_w, used = new_h, new_w, used + int(areas[idx])
    if start < len(order):
        chunks.append(order[start:])
    return chunks


# Long on purpose: one vectorised pass over the batch; split, its dozen intermediate arrays would travel between helpers.
def paste_masks(
    mask_probs: Tensor,
    boxes: Tensor,
    frame_size: tuple[int, int],
    threshold: float = 0.5,
    chunk_pixels: int = 2**24,
) -> list[MaskCrop]:
    """Paste ``mask_probs`` [N, M, M] into their ``boxes`` [N, 4] in a frame of ``frame_size``.

    Reproduces ``torchvision ... paste_masks_in_image(...) > threshold`` (see the module
    docstring) but batched: one ``grid_sample`` per chunk of instances, run on the
    tensors' device, with ``n * max_h * max_w <= chunk_pixels`` per chunk. Probabilities
    are sampled in float32. Returns one :class:`MaskCrop` per instance, in input order.
    """
    mask_probs = _as_nmm(mask_probs)
    n_inst = int(mask_probs.shape[0])
    if int(boxes.shape[0]) != n_inst:
        raise ValueError(f"{n_inst} masks but {int(boxes.shape[0])} boxes")
    if n_inst == 0:
        return []
    frame_h, frame_w = int(frame_size[0]), int(frame_size[1])
    device = mask_probs.device
    # Like torchvision, the expansion factor comes from the last (width) dimension.
    ib = expand_paste_boxes(boxes.to(device), int(mask_probs.shape[-1]))
    bx0, by0, bx1, by1 = ib.unbind(1)
    box_w = (bx1 - bx0 + 1).clamp(min=1)
    box_h = (by1 - by0 + 1).clamp(min=1)
    # Paste region = box clipped to the frame; (off_x, off_y) is its offset inside the box.
    rx0 = bx0.clamp(min=0, max=frame_w)
    ry0 = by0.clamp(min=0, max=frame_h)
    reg_w = ((bx1 + 1).clamp(max=frame_w) - rx0).clamp(min=0)
    reg_h = ((by1 + 1).clamp(max=frame_h) - ry0).clamp(min=0)
    geom_dev = torch.stack((box_w, box_h, rx0 - bx0, ry0 - by0), dim=1)
    # One small host transfer for all the integers the chunk planning and slicing need.
    geom = torch.stack((rx0, ry0, reg_w, reg_h), dim=1).cpu().numpy()

    crops: list[MaskCrop] = [
        MaskCrop(int(g[0]), int(g[1]), np.zeros((int(g[3]), int(g[2])), dtype=bool)) for g in geom
    ]
    live = np.flatnonzero((geom[:, 2] > 0) & (geom[:, 3] > 0))
    if live.size == 0:
        return crops

    padded = F.pad(mask_probs.to(torch.float32), (1, 1, 1, 1))[:, None]  # [N, 1, P, P]
    plan = [live[c] for c in _plan_chunks(geom[live, 3], geom[live, 2], int(chunk_pixels))]
    outputs = []
    for members in plan:
        max_h = int(geom[members, 3].max())
        max_w = int(geom[members, 2].max())
        sel = torch.from_numpy(members).to(device)
        g = geom_dev[sel].to(torch.float32)
        bw, bh, off_x, off_y = g[:, 0:1], g[:, 1:2], g[:, 2:3], g[:, 3:4]
        cols = torch.arange(max_w, device=device, dtype=torch.float32)[None, :] + off_x
        rows = torch.arange(max_h, device=device, dtype=torch.float32)[None, :] + off_y
        # Normalised pixel centres of the box-sized output; see the module docstring.
        gx = (cols + 0.5) * 2.0 / bw - 1.0  # [n, max_w]
        gy = (rows + 0.5) * 2.0 / bh - 1.0  # [n, max_h]
        grid = torch.stack(
            (gx[:, None, :].expand(-1, max_h, -1), gy[:, :, None].expand(-1, -1, max_w)), dim=-1
        )
        sampled = F.grid_sample(
            padded[sel], grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        outputs.append((sampled[:, 0] > threshold).reshape(-1))
    # One device-to-host copy (and sync) for all chunks together.
    flat = (outputs[0] if len(outputs) == 1 else torch.cat(outputs)).cpu().numpy()
    offset = 0
    for members in plan:
        max_h = int(geom[members, 3].max())
        max_w = int(geom[members, 2].max())
        block = flat[offset : offset + len(members) * max_h * max_w].reshape(-1, max_h, max_w)
        offset += block.size
        for k, idx in enumerate(members):
            h, w = int(geom[idx, 3]), int(geom[idx, 2])
            # Copy so a crop does not pin the whole result buffer in memory.
            crops[idx].mask = block[k, :h, :w].copy()
    return crops


def paste_masks_reference(
    mask_probs: Tensor, boxes: Tensor, frame_size: tuple[int, int], threshold: float = 0.5
) -> np.ndarray:
    """torchvision's per-mask paste, thresholded: bool array [N, H, W] on the host.

    This is the behaviour :func:`paste_masks` reproduces; it allocates a full frame per
    instance, so it is for tests and benchmarks. Like torchvision, it fails on a box that
    lies more than one pixel left of or above the frame.
    """
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    mask_probs = _as_nmm(mask_probs)
    h, w = int(frame_size[0]), int(frame_size[1])
    if mask_probs.shape[0] == 0:
        return np.zeros((0, h, w), dtype=bool)
    full = paste_masks_in_image(mask_probs[:, None], boxes, (h, w), padding=1)
    return (full[:, 0] > threshold).cpu().numpy()
