"""Overlay drawing (OpenCV + numpy): instance masks, boxes, labels and class maps.

Images are HxWx3 uint8 arrays drawn on in place. Colours are given in the image's own
channel order (the palette is RGB, so draw on RGB images, or reverse the palette's
channels for BGR). Instance masks are blended only inside their crop rectangles, so the
cost grows with mask area, not with frame size times instance count.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .palette import class_palette
from .paste import MaskCrop

__all__ = ["class_palette", "draw_instances", "draw_semantic"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 uint8, got {image.dtype} {image.shape}")
    if not image.flags.c_contiguous or not image.flags.writeable:
        raise ValueError("image must be a writable C-contiguous array (drawn on in place)")


def _alpha256(alpha: float) -> int:
    return int(round(min(max(float(alpha), 0.0), 1.0) * 256))


def _blend(pixels: np.ndarray, colours: np.ndarray, a256: int) -> np.ndarray:
    """Integer blend ``pixels * (1 - a) + colours * a`` with a in 1/256 steps, rounded."""
    mixed = pixels.astype(np.uint16) * (256 - a256) + colours.astype(np.uint16) * a256 + 128
    return (mixed >> 8).astype(np.uint8)


def _text_colour(bg: np.ndarray) -> tuple[int, int, int]:
    luma = 0.299 * float(bg[0]) + 0.587 * float(bg[1]) + 0.114 * float(bg[2])
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


# Long on purpose: masks, then boxes and labels in one pass over the instances; the label placement rules belong together.
def draw_instances(
    image: np.ndarray,
    crops: Sequence[MaskCrop],
    boxes: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    alpha: float = 0.5,
    palette: np.ndarray | None = None,
) -> None:
    """Draw translucent masks, boxes and "name 0.93" labels of N instances onto ``image``.

    ``crops`` may be empty (boxes only) or hold one :class:`MaskCrop` per box. Each mask
    is blended towards its class colour with weight ``alpha`` inside its crop rectangle
    only. Labels sit on a filled class-coloured background just above the box, or just
    inside its top edge when there is no room above, and are kept inside the frame.
    """
    _check_image(image)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = boxes.shape[0]
    if labels.shape[0] != n or (len(crops) not in (0, n)):
        raise ValueError(f"{n} boxes, {labels.shape[0]} labels and {len(crops)} crops")
    if scores is not None and len(scores) != n:
        raise ValueError(f"{n} boxes but {len(scores)} scores")
    if n == 0:
        return
    if palette is None:
        size = max(int(labels.max()) + 1, len(class_names or ()), 1)
        palette = class_palette(size)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    colours = palette[labels % len(palette)]
    height, width = image.shape[:2]
    a256 = _alpha256(alpha)

    for crop, colour in zip(crops, colours, strict=False):
        y0, x0 = max(crop.y0, 0), max(crop.x0, 0)
        region = image[y0 : crop.y0 + crop.mask.shape[0], x0 : crop.x0 + crop.mask.shape[1]]
        if region.size == 0:
            continue
        m = crop.mask[y0 - crop.y0 :, x0 - crop.x0 :][: region.shape[0], : region.shape[1]]
        region[m] = _blend(region[m], colour[None, :], a256)

    short_side = min(height, width)
    thickness = max(1, int(round(short_side / 500)))
    font_scale = max(0.35, short_side / 1600)
    font_thick = max(1, int(round(font_scale * 1.5)))
    pad = max(1, int(round(2 * font_scale)))
    # Coordinates are clamped just outside the frame so cv2 gets sane ints for any box.
    xs = np.clip(np.nan_to_num(boxes[:, 0::2]), -1, width)
    ys = np.clip(np.nan_to_num(boxes[:, 1::2]), -1, height)
    for i in range(n):
        colour = tuple(int(c) for c in colours[i])
        x0, x1 = int(round(xs[i, 0])), int(round(xs[i, 1]))
        y0, y1 = int(round(ys[i, 0])), int(round(ys[i, 1]))
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, thickness, cv2.LINE_8)

        label = int(labels[i])
        name = class_names[label] if class_names and 0 <= label < len(class_names) else str(label)
        text = name if scores is None else f"{name} {float(scores[i]):.2f}"
        (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, font_thick)
        lw, lh = tw + 2 * pad, th + base + 2 * pad
        lx = min(max(x0, 0), max(width - lw, 0))
        ly = y0 - lh if y0 - lh >= 0 else max(y0, 0)  # above the box, else inside its top
        ly = min(ly, max(height - lh, 0))
        cv2.rectangle(image, (lx, ly), (lx + lw - 1, ly + lh - 1), colour, cv2.FILLED)
        cv2.putText(
            image,
            text,
            (lx + pad, ly + pad + th),
            _FONT,
            font_scale,
            _text_colour(colours[i]),
            font_thick,
            cv2.LINE_AA,
        )


def draw_semantic(
    image: np.ndarray,
    class_map: np.ndarray,
    alpha: float = 0.5,
    palette: np.ndarray | None = None,
) -> None:
    """Blend class colours into ``image`` wherever ``class_map`` [H, W] is not 0 or 255.

    Class 0 (background) and 255 (unlabeled) leave pixels untouched. Class ids beyond
    the palette wrap around it. One vectorised pass over the frame.
    """
    _check_image(image)
    class_map = np.asarray(class_map)
    if class_map.shape != image.shape[:2]:
        raise ValueError(f"class map {class_map.shape} does not match image {image.shape[:2]}")
    if palette is None:
        palette = class_palette(256)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    ids = class_map.astype(np.intp, copy=False)
    sel = (ids != 0) & (ids != 255)
    if not sel.any():
        return
    colour_img = palette[ids % len(palette)]  # [H, W, 3] gather in one pass
    a = _alpha256(alpha) / 256.0
    blended = cv2.addWeighted(image, 1.0 - a, colour_img, a, 0.0)
    np.copyto(image, blended, where=sel[:, :, None])
