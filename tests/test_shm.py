"""Shared-memory frame ring: layout, generations, attach from another process, cleanup."""

import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline.transport.shm import SHM_DIR, FrameRing, RingOverwriteError, remove_stale_segments


@pytest.fixture
def ring():
    ring = FrameRing.create(f"segstream-test-{os.getpid()}", slots=3, frame_bytes=4 * 6 * 3, input_bytes=2 * 3 * 4)
    yield ring
    ring.close()
    ring.unlink()


def test_slots_are_independent_and_generations_detect_reuse(ring):
    ring.frame(0, 4, 6)[...] = 1
    ring.frame(2, 4, 6)[...] = 3
    assert ring.frame(1, 4, 6).sum() == 0
    gen = ring.bump_generation(0)
    ring.check(0, gen)
    ring.bump_generation(0)
    with pytest.raises(RingOverwriteError):
        ring.check(0, gen)
    ring.model_input(1, (2, 3))[...] = 2.5
    assert ring.model_input(1, (2, 3)).dtype == np.float32
    assert np.all(ring.frame(1, 4, 6) == 0)  # input region does not overlap the frame


def test_oversized_views_are_refused(ring):
    with pytest.raises(ValueError, match="does not fit"):
        ring.frame(0, 5, 6)
    with pytest.raises(ValueError, match="does not fit"):
        ring.model_input(0, (3, 3))
    with pytest.raises(IndexError):
        ring.frame(3, 1, 1)


def test_another_process_sees_the_same_pixels(ring):
    ring.frame(1, 4, 6)[...] = np.arange(72, dtype=np.uint8).reshape(4, 6, 3)
    code = (
        "from pipeline.transport.shm import FrameRing; import sys;"
        f"r = FrameRing.attach('{ring.name}'); f = r.frame(1, 4, 6);"
        "assert int(f.sum()) == sum(range(72)), f.sum(); f[...] = 9; r.close()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert np.all(ring.frame(1, 4, 6) == 9)


def test_stale_segments_of_dead_owners_are_removed():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stale = SHM_DIR / f"segstream-{proc.pid}-deadbeef"
    stale.write_bytes(b"x")
    mine = SHM_DIR / f"segstream-{os.getpid()}-alive"
    mine.write_bytes(b"x")
    try:
        removed = remove_stale_segments()
        assert stale.name in removed and not stale.exists()
        assert mine.exists()
    finally:
        mine.unlink(missing_ok=True)
        stale.unlink(missing_ok=True)
