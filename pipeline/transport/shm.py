"""Shared-memory frame ring: pixel data stays in place, sockets carry (slot, generation) handles.

One POSIX shared-memory segment (a file under /dev/shm) holds ``slots`` equal slots:

    [ring header: 4 KiB][slot 0][slot 1]...
    slot = [64-byte slot header: generation u64][frame region][model-input region]

The frame region holds the decoded RGB frame (and later the overlay drawn onto it); the
model-input region holds the resized, normalised float32 tensor the preprocess stage makes.
Only the supervisor creates and unlinks the segment; stages attach. The writer of a slot
bumps its generation; a reader compares it with the handle's generation to detect a slot
that was recycled under it (which the slot credit protocol should make impossible).
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHM_DIR = Path("/dev/shm")
NAME_PREFIX = "segstream-"
_MAGIC = b"SEGRING1"
_RING_HEADER = struct.Struct("<8sIIQQQ")  # magic, slots, overlay_bytes, frame_bytes, input_bytes, stride
_RING_HEADER_SIZE = 4096
_SLOT_HEADER_SIZE = 64
_ALIGN = 64


class RingOverwriteError(RuntimeError):
    """A slot's generation changed while a handle to it was still in use."""


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


@dataclass(frozen=True)
class RingLayout:
    """Sizes of one ring; stored in the segment so attachers need only its name."""

    slots: int
    frame_bytes: int
    input_bytes: int
    overlay_bytes: int = 0

    @property
    def stride(self) -> int:
        return _SLOT_HEADER_SIZE + _align(self.frame_bytes) + _align(self.input_bytes) + _align(self.overlay_bytes)

    @property
    def total_bytes(self) -> int:
        return _RING_HEADER_SIZE + self.slots * self.stride


class FrameRing:
    """A mapped frame ring. Use ``create`` (supervisor) or ``attach`` (stages)."""

    def __init__(self, name: str, fd: int, layout: RingLayout, owner: bool) -> None:
        self.name = name
        self.layout = layout
        self._owner = owner
        self._map = mmap.mmap(fd, layout.total_bytes)
        os.close(fd)
        self._buf = np.frombuffer(self._map, dtype=np.uint8)

    # -- lifecycle -----------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, slots: int, frame_bytes: int, input_bytes: int, overlay_bytes: int = 0) -> FrameRing:
        """Create a new segment (fails if one with that name exists).

        ``overlay_bytes``: room per slot for the drawn overlay, kept apart from the decoded
        frame so a frame replayed after a stage restart is drawn on clean pixels again."""
        layout = RingLayout(slots, frame_bytes, input_bytes, overlay_bytes)
        fd = os.open(SHM_DIR / name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, layout.total_bytes)
        except OSError:
            os.close(fd)
            os.unlink(SHM_DIR / name)
            raise
        ring = cls(name, fd, layout, owner=True)
        header = _RING_HEADER.pack(_MAGIC, slots, overlay_bytes, frame_bytes, input_bytes, layout.stride)
        ring._map[: len(header)] = header
        return ring

    @classmethod
    def attach(cls, name: str) -> FrameRing:
        """Map an existing segment created by ``create``."""
        fd = os.open(SHM_DIR / name, os.O_RDWR)
        head = os.pread(fd, _RING_HEADER.size, 0)
        magic, slots, overlay_bytes, frame_bytes, input_bytes, _ = _RING_HEADER.unpack(head)
        if magic != _MAGIC:
            os.close(fd)
            raise ValueError(f"shared-memory segment {name} is not a frame ring")
        return cls(name, fd, RingLayout(slots, frame_bytes, input_bytes, overlay_bytes), owner=False)

    def close(self) -> None:
        """Unmap (views handed out before must no longer be used)."""
        self._buf = None  # type: ignore[assignment]
        try:
            self._map.close()
        except BufferError:
            pass  # a numpy view is still alive somewhere; the mapping goes with the process

    def unlink(self) -> None:
        """Remove the segment name (supervisor only); mappings stay valid until closed."""
        unlink_segment(self.name)

    # -- slot access ---------------------------------------------------------------------
    def _slot_offset(self, slot: int) -> int:
        if not 0 <= slot < self.layout.slots:
            raise IndexError(f"slot {slot} out of range (ring has {self.layout.slots})")
        return _RING_HEADER_SIZE + slot * self.layout.stride

    def generation(self, slot: int) -> int:
        off = self._slot_offset(slot)
        return int(self._buf[off : off + 8].view(np.uint64)[0])

    def bump_generation(self, slot: int) -> int:
        """Mark the slot as rewritten; returns the new generation for the handle."""
        off = self._slot_offset(slot)
        gen = self._buf[off : off + 8].view(np.uint64)
        gen[0] += 1
        return int(gen[0])

    def check(self, slot: int, generation: int) -> None:
        """Raise ``RingOverwriteError`` if the slot no longer holds that generation."""
        current = self.generation(slot)
        if current != generation:
            raise RingOverwriteError(f"slot {slot}: generation {generation} was overwritten by {current}")

    def frame(self, slot: int, height: int, width: int) -> np.ndarray:
        """View of the frame region as [height, width, 3] uint8."""
        n = height * width * 3
        if n > self.layout.frame_bytes:
            raise ValueError(
                f"frame {width}x{height} does not fit the ring's frame region ({self.layout.frame_bytes} bytes)"
            )
        off = self._slot_offset(slot) + _SLOT_HEADER_SIZE
        return self._buf[off : off + n].reshape(height, width, 3)

    def copy_image(self, slot: int, height: int, width: int, generation: int, overlay: bool = False) -> np.ndarray:
        """A copy of the slot's frame (or overlay), checked to be of ``generation`` once
        copied (``RingOverwriteError`` if a restarted writer is rewriting the slot)."""
        image = np.array((self.overlay if overlay else self.frame)(slot, height, width))
        self.check(slot, generation)
        return image

    def model_input(self, slot: int, shape: tuple[int, ...]) -> np.ndarray:
        """View of the model-input region as float32 of ``shape``."""
        n = int(np.prod(shape)) * 4
        if n > self.layout.input_bytes:
            raise ValueError(
                f"model input {shape} does not fit the ring's input region ({self.layout.input_bytes} bytes)"
            )
        off = self._slot_offset(slot) + _SLOT_HEADER_SIZE + _align(self.layout.frame_bytes)
        return self._buf[off : off + n].view(np.float32).reshape(shape)

    def overlay(self, slot: int, height: int, width: int) -> np.ndarray:
        """View of the overlay region as [height, width, 3] uint8 (the frame with masks drawn)."""
        n = height * width * 3
        if n > self.layout.overlay_bytes:
            raise ValueError(f"overlay {width}x{height} does not fit the ring's overlay region ({self.layout.overlay_bytes} bytes)")
        off = self._slot_offset(slot) + _SLOT_HEADER_SIZE + _align(self.layout.frame_bytes) + _align(self.layout.input_bytes)
        return self._buf[off : off + n].reshape(height, width, 3)


def segment_name(run_id: str) -> str:
    """Segment name for a run: carries the owner's pid so stale segments can be found."""
    return f"{NAME_PREFIX}{os.getpid()}-{run_id}"


def unlink_segment(name: str) -> None:
    try:
        os.unlink(SHM_DIR / name)
    except FileNotFoundError:
        pass


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (ours or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_segments() -> list[str]:
    """Unlink ring segments whose owning supervisor is gone (e.g. it was SIGKILLed)."""
    removed = []
    pattern = re.compile(rf"^{re.escape(NAME_PREFIX)}(\d+)-")
    for path in SHM_DIR.glob(f"{NAME_PREFIX}*"):
        match = pattern.match(path.name)
        if match and not pid_alive(int(match.group(1))):
            unlink_segment(path.name)
            removed.append(path.name)
    return removed
