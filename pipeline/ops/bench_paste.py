"""Benchmark: batched ``paste_masks`` against torchvision's per-mask paste.

Run ``python -m pipeline.ops.bench_paste [--device cuda] [--instances 20]``. Both
pastes get the same random instances on a 1080p frame, are thresholded at 0.5 and
bring their boolean result to the host (crops for ours, full [N, H, W] frames for
torchvision's), and are timed in the same process; the ratio is what to quote.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from .paste import paste_masks, paste_masks_reference


def _make_instances(
    n: int, height: int, width: int, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask-like 28x28 probabilities and boxes of 40..600 px, mostly inside the frame."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand((n, 1, 28, 28), generator=g)
    probs = torch.sigmoid(8 * (torch.nn.functional.avg_pool2d(noise, 5, 1, 2) - 0.5))[:, 0]
    size = 40 + 560 * torch.rand((n, 2), generator=g)
    x0 = torch.rand(n, generator=g) * (width - size[:, 0] * 0.8)
    y0 = torch.rand(n, generator=g) * (height - size[:, 1] * 0.8)
    boxes = torch.stack((x0, y0, x0 + size[:, 0], y0 + size[:, 1]), dim=1)
    return probs.to(device), boxes.to(device)


def _time_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, kernels, lazy imports
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    """Print ms per frame for both pastes and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = (args.height, args.width)
    probs, boxes = _make_instances(args.instances, *size, device)

    ours = _time_ms(lambda: paste_masks(probs, boxes, size), args.repeats)
    ref = _time_ms(lambda: paste_masks_reference(probs, boxes, size), args.repeats)
    print(
        f"device={device} threads={torch.get_num_threads()} frame={size[1]}x{size[0]} "
        f"instances={args.instances} repeats={args.repeats} (median)"
    )
    print(f"paste_masks (batched grid_sample): {ours:8.2f} ms/frame")
    print(f"torchvision paste_masks_in_image:  {ref:8.2f} ms/frame")
    print(f"speed-up: {ref / ours:.1f}x")


if __name__ == "__main__":
    main()
