"""COCO RLE: exact equality with pycocotools on random masks and crops."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from pipeline.ops.paste import MaskCrop, crop_to_full
from pipeline.ops.rle import (
    area,
    compress_counts,
    decode,
    decompress_counts,
    encode_crop,
    encode_mask,
    rle_counts,
)

mask_util = pytest.importorskip("pycocotools.mask")

SIZES = [(1, 1), (1, 7), (6, 1), (2, 3), (17, 5), (64, 48), (240, 320), (719, 1279)]


def _coco_encode(mask: np.ndarray) -> dict:
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


def _random_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(0, 4)
    if h == 0 or w == 0:
        return np.zeros((h, w), dtype=bool)
    if kind == 0:
        return rng.random((h, w)) < rng.uniform(0, 1)  # salt and pepper
    if kind == 1:  # a few solid rectangles: long runs, big counts
        m = np.zeros((h, w), dtype=bool)
        for _ in range(rng.integers(1, 4)):
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            m[y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = True
        return m
    if kind == 2:
        return np.zeros((h, w), dtype=bool)
    return np.ones((h, w), dtype=bool)


def _random_crop(rng: np.random.Generator, h: int, w: int) -> MaskCrop:
    # Crops often touch the frame edges (and sometimes span the whole height, where runs
    # continue from one column into the next).
    y0 = int(rng.choice([0, rng.integers(0, h)]))
    x0 = int(rng.choice([0, rng.integers(0, w)]))
    y1 = int(rng.choice([h, rng.integers(y0, h + 1)]))
    x1 = int(rng.choice([w, rng.integers(x0, w + 1)]))
    return MaskCrop(x0=x0, y0=y0, mask=_random_mask(rng, y1 - y0, x1 - x0))


def _cases(seed: int, large_reps: int) -> Iterator[tuple[np.random.Generator, int, int]]:
    """``(rng, h, w)`` per case: 40 for each of :data:`SIZES`, ``large_reps`` for the large
    ones (over 100,000 pixels); one generator seeded ``seed`` for all; 200 cases at least."""
    rng = np.random.default_rng(seed)
    n = 0
    for h, w in SIZES:
        for _ in range(large_reps if h * w > 100_000 else 40):
            yield rng, h, w
            n += 1
    assert n >= 200


def test_encode_mask_matches_pycocotools() -> None:
    for rng, h, w in _cases(seed=0, large_reps=8):
        mask = _random_mask(rng, h, w)
        ours = encode_mask(mask)
        ref = _coco_encode(mask)
        assert ours["size"] == list(ref["size"]) == [h, w]
        assert isinstance(ours["counts"], str)
        assert ours["counts"] == ref["counts"].decode("ascii")
        assert area(ours) == int(mask_util.area(ref)) == int(mask.sum())
        assert np.array_equal(decode(ours), mask)
        assert np.array_equal(decode(ref), mask)  # bytes counts are accepted too


def test_encode_crop_matches_pycocotools() -> None:
    for rng, h, w in _cases(seed=1, large_reps=10):
        crop = _random_crop(rng, h, w)
        full = crop_to_full(crop, h, w)
        ours = encode_crop(crop, h, w)
        ref = _coco_encode(full)
        assert ours["counts"] == ref["counts"].decode("ascii"), (h, w, crop.x0, crop.y0)
        assert ours == encode_mask(full)
        assert area(ours) == int(full.sum())


def test_full_height_crop_runs_join_across_columns() -> None:
    # Column-major runs that wrap from the bottom of one column to the top of the next.
    mask = np.zeros((4, 5), dtype=bool)
    mask[2:, 1] = True
    mask[:, 2] = True
    mask[:3, 3] = True
    crop = MaskCrop(x0=1, y0=0, mask=mask[:, 1:4])
    ours = encode_crop(crop, 4, 5)
    assert ours["counts"] == _coco_encode(mask)["counts"].decode("ascii")
    assert rle_counts(mask).tolist() == [6, 9, 5]


# pycocotools' decode trips numpy 2's __array__ copy-keyword deprecation; not ours.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_decode_matches_pycocotools_on_its_own_strings() -> None:
    rng = np.random.default_rng(2)
    for _ in range(100):
        h, w = int(rng.integers(1, 60)), int(rng.integers(1, 60))
        mask = _random_mask(rng, h, w)
        ref = _coco_encode(mask)
        assert np.array_equal(decode(ref), mask_util.decode(ref).astype(bool))
        assert area(ref) == int(mask_util.area(ref))


def test_counts_compression_roundtrip_and_reference() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        # Mixture of tiny and large counts so deltas are large and negative too; the sum
        # stays below 2**31 because pycocotools crashes on bigger uncompressed sizes.
        counts = np.where(rng.random(n) < 0.5, rng.integers(0, 40, n), rng.integers(0, 2**25, n))
        s = compress_counts(counts)
        assert decompress_counts(s).tolist() == counts.tolist()
        # pycocotools' own uncompressed -> compressed conversion
        h = int(counts.sum())
        if h > 0:
            ref = mask_util.frPyObjects({"size": [h, 1], "counts": counts.tolist()}, h, 1)
            assert s == ref["counts"].decode("ascii")


def test_known_strings_and_edge_cases() -> None:
    # Hand-checked: counts [0, 1] -> '0' then '1'; [1] -> '1'.
    assert compress_counts([0, 1]) == "01"
    assert compress_counts([1]) == "1"
    assert compress_counts([]) == ""
    assert encode_mask(np.ones((1, 1), dtype=bool))["counts"] == "01"
    assert encode_mask(np.zeros((1, 1), dtype=bool))["counts"] == "1"
    empty = MaskCrop(x0=0, y0=0, mask=np.zeros((0, 0), dtype=bool))
    assert encode_crop(empty, 719, 1279) == encode_mask(np.zeros((719, 1279), dtype=bool))
    assert area({"size": [3, 3], "counts": [2, 3, 4]}) == 3  # uncompressed counts list
    assert decode({"size": [2, 2], "counts": [1, 2, 1]}).tolist() == [[False, True], [True, False]]
    with pytest.raises(ValueError):
        decode({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(ValueError):
        encode_crop(MaskCrop(x0=3, y0=0, mask=np.ones((2, 2), dtype=bool)), 2, 4)
