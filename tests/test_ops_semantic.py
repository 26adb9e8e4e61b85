"""Class-map helpers: argmax to uint8 and nearest-exact resizing."""

from __future__ import annotations

from fractions import Fraction
from math import floor

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.ops.semantic import logits_to_class_map, nearest_source_index, resize_class_map


def test_logits_to_class_map() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn((2, 21, 13, 17), generator=g)
    cm = logits_to_class_map(logits)
    assert cm.dtype == torch.uint8 and cm.shape == (2, 13, 17)
    assert torch.equal(cm.long(), logits.argmax(1))
    with pytest.raises(ValueError):
        logits_to_class_map(torch.zeros((1, 300, 2, 2)))


def test_nearest_source_index_is_exact() -> None:
    for src, dst in [(520, 1080), (520, 1920), (30, 223), (21, 201), (7, 3), (5, 5), (1, 9)]:
        got = nearest_source_index(src, dst).tolist()
        expected = [floor((Fraction(i) + Fraction(1, 2)) * src / dst) for i in range(dst)]
        assert got == expected


def _torch_source_indices(h: int, w: int, out_h: int, out_w: int) -> tuple[np.ndarray, np.ndarray]:
    """Source row/column torch's nearest-exact picks, read off resized index ramps."""
    rows = torch.arange(h, dtype=torch.uint8)[:, None].expand(h, w).contiguous()
    cols = torch.arange(w, dtype=torch.uint8)[None, :].expand(h, w).contiguous()
    size = (out_h, out_w)
    r = F.interpolate(rows[None, None], size=size, mode="nearest-exact")[0, 0, :, 0]
    c = F.interpolate(cols[None, None], size=size, mode="nearest-exact")[0, 0, 0, :]
    return r.numpy(), c.numpy()


def test_resize_class_map_against_torch_nearest_exact() -> None:
    rng = np.random.default_rng(0)
    mismatched = total = 0
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        out_h, out_w = (int(v) for v in rng.integers(1, 260, 2))
        cm = torch.from_numpy(rng.integers(0, 256, (h, w)).astype(np.uint8))
        got = resize_class_map(cm, (out_h, out_w))
        assert got.dtype == np.uint8 and got.shape == (out_h, out_w)
        rows = nearest_source_index(h, out_h).numpy()
        cols = nearest_source_index(w, out_w).numpy()
        assert np.array_equal(got, cm.numpy()[rows][:, cols])
        ref_rows, ref_cols = _torch_source_indices(h, w, out_h, out_w)
        mismatched += int((rows != ref_rows).sum() + (cols != ref_cols).sum())
        total += out_h + out_w
    # Only centres exactly on a source boundary, where torch's float32 scale rounds
    # down, may differ, and then by one source pixel.
    print(f"nearest-exact: {mismatched}/{total} source indices differ from torch")
    assert mismatched <= 0.01 * total
    # Integer scale factors have no such ties: identical to torch.
    cm = torch.from_numpy(rng.integers(0, 21, (26, 40)).astype(np.uint8))
    for size in [(52, 80), (13, 20), (78, 40)]:
        ref = F.interpolate(cm[None, None], size=size, mode="nearest-exact")[0, 0].numpy()
        assert np.array_equal(resize_class_map(cm, size), ref)
    assert np.array_equal(resize_class_map(cm, (26, 40)), cm.numpy())
