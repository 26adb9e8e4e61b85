"""Overlay drawing: masks blend towards class colours, nothing else is touched."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.ops.overlay import class_palette, draw_instances, draw_semantic
from pipeline.ops.paste import MaskCrop

GREY = 100


def _image(h: int = 120, w: int = 160) -> np.ndarray:
    return np.full((h, w, 3), GREY, dtype=np.uint8)


def _disc_crop(x0: int, y0: int, size: int) -> MaskCrop:
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    return MaskCrop(x0=x0, y0=y0, mask=(yy - c) ** 2 + (xx - c) ** 2 <= (size / 2 - 1) ** 2)


def test_palette() -> None:
    pal = class_palette(256)
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in pal.tolist()}) == 256
    assert np.array_equal(class_palette(91), pal[:91])  # colour i independent of size
    # Successive classes are clearly apart (sum of absolute channel differences).
    assert np.abs(np.diff(pal[1:91].astype(int), axis=0)).sum(axis=1).min() > 60
    assert class_palette(0).shape == (0, 3)


def test_instance_mask_box_and_label() -> None:
    img = _image()
    pal = class_palette(5)
    crop = _disc_crop(40, 50, 40)  # region x 40..79, y 50..89
    boxes = np.array([[40.0, 50.0, 79.0, 89.0]])
    draw_instances(img, [crop], boxes, [3], [0.93], ["bg", "a", "b", "cat", "d"], alpha=0.5)
    colour = pal[3].astype(int)

    inside = np.zeros(img.shape[:2], dtype=bool)
    inside[50:90, 40:80] = crop.mask
    core = np.zeros_like(inside)
    core[54:86, 44:76] = True  # away from the box outline
    # Mask pixels: exactly the 50 % blend, i.e. moved towards the class colour.
    expected = (GREY * 128 + colour * 128 + 128) >> 8
    assert np.all(img[inside & core] == expected)
    assert np.all(np.abs(img[inside & core].astype(int) - colour) < np.abs(GREY - colour) + 1)
    # Box interior pixels outside the mask are untouched.
    assert np.all(img[~inside & core] == GREY)
    # Outline drawn in the class colour.
    assert np.all(img[70, 40] == colour) and np.all(img[89, 60] == colour)
    # Label: filled class-coloured background above the box, text inside it.
    label = img[:50, 40:]
    assert (label == colour).all(axis=2).sum() > 50
    changed = (label != GREY).any(axis=2)
    assert changed.any() and ((label != GREY).any(axis=2) & ~(label == colour).all(axis=2)).any()
    # Far away from the box and its label: untouched.
    assert np.all(img[92:] == GREY)
    assert np.all(img[:, :38] == GREY)


def test_label_without_room_above_and_edge_boxes() -> None:
    img = _image()
    crops = [
        MaskCrop(x0=0, y0=0, mask=np.ones((30, 25), dtype=bool)),
        MaskCrop(x0=150, y0=110, mask=np.ones((10, 10), dtype=bool)),
        MaskCrop(x0=0, y0=0, mask=np.zeros((0, 0), dtype=bool)),
    ]
    boxes = np.array(
        [[-10.0, -10.0, 24.5, 29.5], [150.0, 110.0, 400.0, 300.0], [500, 500, 600, 600]]
    )
    draw_instances(img, crops, boxes, [1, 2, 7], [0.5, 0.25, 0.1], ["bg", "person", "car"])
    # Top-left label goes inside the box, and the mask was blended.
    assert (img[:12, :25] != GREY).any()
    assert (img[25, 5] != GREY).all()
    # The right/bottom instance's mask and label stay in the frame and get drawn.
    assert (img[115, 155] != GREY).all()
    assert (img[100:, 100:] != GREY).any()
    # Unnamed label id falls back to the number; nothing raised for the off-frame box.
    assert np.all(img[60:100, 40:120] == GREY)


def test_empty_inputs_and_boxes_only() -> None:
    img = _image()
    draw_instances(img, [], np.zeros((0, 4)), [], [], ["bg"])
    assert np.all(img == GREY)
    draw_instances(img, [], np.array([[10, 10, 50, 50]]), [1], None, None)
    assert (img != GREY).any() and np.all(img[30, 30] == GREY)  # box outline only, no fill
    draw_semantic(img, np.zeros(img.shape[:2], dtype=np.uint8))
    with pytest.raises(ValueError):
        draw_instances(img, [], np.zeros((2, 4)), [1], None, None)
    with pytest.raises(ValueError):
        draw_instances(img[:, ::2], [], np.zeros((0, 4)), [], None, None)  # not contiguous


def test_semantic_overlay() -> None:
    img = _image(40, 50)
    img[:, :, 1] = 30  # non-grey so channel order matters
    before = img.copy()
    cm = np.zeros((40, 50), dtype=np.uint8)
    cm[5:15, 5:25] = 1
    cm[20:30, 10:40] = 7
    cm[32:, :] = 255  # unlabeled
    cm[0:4, 40:] = 300 % 256  # = 44, wraps a short palette below
    pal = class_palette(21)
    draw_semantic(img, cm, alpha=0.5, palette=pal)
    for cls in (1, 7):
        sel = cm == cls
        expected = (before[sel].astype(int) + pal[cls].astype(int)) / 2
        assert np.all(np.abs(img[sel].astype(int) - expected) <= 1)
    wrapped = cm == 44
    expected = (before[wrapped].astype(int) + pal[44 % 21].astype(int)) / 2
    assert np.all(np.abs(img[wrapped].astype(int) - expected) <= 1)
    untouched = (cm == 0) | (cm == 255)
    assert np.array_equal(img[untouched], before[untouched])
    with pytest.raises(ValueError):
        draw_semantic(img, cm[:10])
