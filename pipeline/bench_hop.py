"""The cost of one local hop for a 1080p frame: a shared-memory handle vs a ZeroMQ copy.

Part of ``python -m pipeline.bench`` (its ``hop`` figures); speed is never asserted in tests.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

import numpy as np
import zmq

from pipeline.transport import sockets
from pipeline.transport.shm import FrameRing, segment_name

HOP_FRAME = (1080, 1920, 3)

_HOP_RECEIVER = """
import sys, zmq, numpy as np
from pipeline.transport.shm import FrameRing
from pipeline.transport import sockets
mode, endpoint, credits, ring_name, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = zmq.Context(); sock = sockets.pull(ctx, endpoint, hwm=4, bind=False)
back = sockets.push(ctx, credits, hwm=1000)
ring = FrameRing.attach(ring_name)
total = 0
for _ in range(n):
    header, buffers = sockets.recv(sock)
    if mode == "shm":
        ring.check(header["slot"], header["gen"])
        frame = ring.frame(header["slot"], *header["shape"][:2])
    else:
        frame = np.frombuffer(buffers[0], np.uint8).reshape(header["shape"])
    total += int(frame[0, 0, 0])  # touch the pixels where they are
    sockets.send(back, {"slot": header.get("slot", 0)})  # slot credit, as publish returns it
back.close(linger=-1)
print(total)
"""

HOP_SLOTS = 8


def bench_hop(n: int = 300) -> dict[str, float]:
    """Microseconds per 1080p frame for one ipc hop: shared-memory handle vs ZeroMQ copy.

    Both modes use the pipeline's slot credits (the receiver returns each slot), so the
    shared-memory producer never overwrites a frame still being read.
    """
    results = {}
    ring = FrameRing.create(segment_name("bench"), HOP_SLOTS, int(np.prod(HOP_FRAME)), 0)
    ctx = zmq.Context()
    frame = np.random.default_rng(0).integers(0, 255, HOP_FRAME, dtype=np.uint8)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for mode in ("shm", "zmq"):
                endpoint, credits = f"ipc://{tmp}/{mode}.sock", f"ipc://{tmp}/{mode}-credits.sock"
                sock = sockets.push(ctx, endpoint, hwm=4, bind=True)
                back = sockets.pull(ctx, credits, hwm=1000, bind=True)
                receiver = subprocess.Popen(
                    [sys.executable, "-c", _HOP_RECEIVER, mode, endpoint, credits, ring.name, str(n)],
                    stdout=subprocess.DEVNULL,
                )
                free = list(range(HOP_SLOTS))
                start = time.perf_counter()
                for _ in range(n):
                    while not free or back.poll(0):
                        free.append(sockets.recv(back)[0]["slot"])
                    slot = free.pop(0)
                    if mode == "shm":
                        # the producer writes each frame into the ring once (it would decode there)
                        ring.frame(slot, *HOP_FRAME[:2])[...] = frame
                        gen = ring.bump_generation(slot)
                        sockets.send(sock, {"slot": slot, "gen": gen, "shape": list(HOP_FRAME)})
                    else:
                        sockets.send(sock, {"slot": slot, "shape": list(HOP_FRAME)}, [frame])
                receiver.wait()
                results[mode] = (time.perf_counter() - start) / n * 1e6
                sock.close(0)
                back.close(0)
    finally:
        ctx.destroy(0)
        ring.close()
        ring.unlink()
    return results
