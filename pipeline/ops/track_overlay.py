"""Overlay of tracked instances, coloured by identity and labelled "name id" (numpy + Pillow).

Drawn in the publish stage, after the tracker has named every instance: that process
encodes video with PyAV, so this module avoids OpenCV (both bundle FFmpeg). Pillow only
renders the label text, once per distinct label and size (cached); masks, boxes and label
backgrounds are numpy. Untracked instances (tentative, or low-score strays) are drawn in a
neutral grey with their class name only, so a viewer tells identity at a glance.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from pipeline.ops.palette import track_colours

__all__ = ["draw_tracked"]

UNTRACKED_COLOUR = np.array([160, 160, 160], dtype=np.uint8)


@lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


@lru_cache(maxsize=4096)
def _text_mask(text: str, size: int) -> np.ndarray:
    """Coverage [h, w] uint8 (0..255) of ``text`` rendered at ``size`` px."""
    from PIL import Image, ImageDraw

    font = _font(size)
    x0, y0, x1, y1 = font.getbbox(text)
    canvas = Image.new("L", (max(1, x1 - x0), max(1, y1 - y0)), 0)
    ImageDraw.Draw(canvas).text((-x0, -y0), text, fill=255, font=font)
    mask = np.asarray(canvas, dtype=np.uint8)
    mask.setflags(write=False)
    return mask


def _blend(pixels: np.ndarray, colour: np.ndarray, a256: int) -> np.ndarray:
    mixed = pixels.astype(np.uint16) * (256 - a256) + colour.astype(np.uint16) * a256 + 128
    return (mixed >> 8).astype(np.uint8)


def _rectangle(image: np.ndarray, box: np.ndarray, colour: np.ndarray, thickness: int) -> None:
    """Outline of ``box`` (x0, y0, x1, y1, clipped to the image) ``thickness`` px wide."""
    height, width = image.shape[:2]
    x0, y0 = (int(np.clip(round(v), 0, lim)) for v, lim in ((box[0], width - 1), (box[1], height - 1)))
    x1, y1 = (int(np.clip(round(v), 0, lim)) for v, lim in ((box[2], width - 1), (box[3], height - 1)))
    if x1 < x0 or y1 < y0:
        return
    t = thickness
    image[y0 : min(y0 + t, y1 + 1), x0 : x1 + 1] = colour
    image[max(y1 - t + 1, y0) : y1 + 1, x0 : x1 + 1] = colour
    image[y0 : y1 + 1, x0 : min(x0 + t, x1 + 1)] = colour
    image[y0 : y1 + 1, max(x1 - t + 1, x0) : x1 + 1] = colour


def _label(image: np.ndarray, text: str, box: np.ndarray, colour: np.ndarray, size: int) -> None:
    """``text`` on a filled ``colour`` tab above the box (inside its top edge if no room)."""
    height, width = image.shape[:2]
    glyphs = _text_mask(text, size)
    pad = max(1, size // 6)
    lh, lw = glyphs.shape[0] + 2 * pad, glyphs.shape[1] + 2 * pad
    if lh > height or lw > width:
        return
    x0 = int(np.clip(round(float(box[0])), 0, width - lw))
    top = int(round(float(box[1])))
    y0 = int(np.clip(top - lh if top - lh >= 0 else top, 0, height - lh))
    tab = image[y0 : y0 + lh, x0 : x0 + lw]
    tab[...] = colour
    luma = 0.299 * float(colour[0]) + 0.587 * float(colour[1]) + 0.114 * float(colour[2])
    ink = 0 if luma > 140 else 255
    inner = tab[pad : pad + glyphs.shape[0], pad : pad + glyphs.shape[1]]
    cover = glyphs.astype(np.uint16)[:, :, None]
    inner[...] = ((inner.astype(np.uint16) * (255 - cover) + ink * cover + 127) // 255).astype(np.uint8)


def draw_tracked(
    image: np.ndarray,
    crops: Sequence[tuple[int, int, np.ndarray]],
    boxes: np.ndarray,
    labels: Sequence[int],
    track_ids: Sequence[int | None],
    class_names: Sequence[str],
    alpha: float = 0.5,
) -> None:
    """Draw N instances onto ``image`` (HxWx3 uint8, RGB, in place): each mask blended
    towards its track's colour inside its crop, its box, and a "name id" label.

    ``crops``: one ``(x0, y0, bool mask)`` per instance; ``track_ids``: None = untracked.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 uint8, got {image.dtype} {image.shape}")
    n = len(track_ids)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not (len(crops) == len(labels) == boxes.shape[0] == n):
        raise ValueError(f"{n} track ids, {len(crops)} masks, {len(labels)} labels, {boxes.shape[0]} boxes")
    if n == 0:
        return
    tracked = np.array([t if t is not None else 1 for t in track_ids], dtype=np.int64)
    colours = track_colours(tracked)
    colours[[t is None for t in track_ids]] = UNTRACKED_COLOUR
    a256 = int(round(min(max(float(alpha), 0.0), 1.0) * 256))
    height, width = image.shape[:2]
    for (cx0, cy0, mask), colour in zip(crops, colours, strict=True):
        y0, x0 = max(cy0, 0), max(cx0, 0)
        region = image[y0 : cy0 + mask.shape[0], x0 : cx0 + mask.shape[1]]
        if region.size == 0:
            continue
        m = mask[y0 - cy0 :, x0 - cx0 :][: region.shape[0], : region.shape[1]]
        # blending the whole rectangle and copying where the mask is set beats gathering
        # and scattering the masked pixels (contiguous arithmetic, no index arrays)
        np.copyto(region, _blend(region, colour, a256), where=m[:, :, None])
    short_side = min(height, width)
    thickness = max(1, int(round(short_side / 500)))
    size = max(10, int(round(short_side / 40)))
    for i in range(n):
        label = int(labels[i])
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        _rectangle(image, boxes[i], colours[i], thickness)
        text = name if track_ids[i] is None else f"{name} {track_ids[i]}"
        _label(image, text, boxes[i], colours[i], size)
