"""What a TensorRT build makes (see ``engines.build``): settings, profiles, per-graph precision.

Everything here is pure, with no TensorRT or GPU needed, so profiles and the settings'
checks can be computed and tested anywhere; the builder (``engines.tensorrt_builder``) only
turns them into TensorRT calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engines.engine_cache import ProfileShapes
from engines.errors import ModelError

__all__ = [
    "PRECISIONS",
    "BuildSettings",
    "ceil_to",
    "graph_precision",
    "graph_profiles",
    "parse_hw",
    "spec_from_manifest",
]

PRECISIONS = ("fp32", "fp16", "int8")


def parse_hw(text: str | int | Sequence[int]) -> tuple[int, int]:
    """``"800"`` -> (800, 800); ``"768x1344"`` -> (768, 1344) (height x width)."""
    if isinstance(text, int):
        return int(text), int(text)
    if not isinstance(text, str):
        h, w = text
        return int(h), int(w)
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"size must be N or HxW, got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"size must be N or HxW with positive numbers, got {text!r}")
    return values[0], values[1]


def ceil_to(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple`` (taken as at least 1)."""
    multiple = max(int(multiple), 1)
    return int(math.ceil(value / multiple) * multiple)


@dataclass(frozen=True)
class BuildSettings:
    """What to build: precision and the shape ranges of the optimization profiles.

    Sizes are (height, width) of the padded model input; ``None`` takes the defaults
    derived from the export's resize settings (see ``graph_profiles``).

    INT8: ``calibration`` names the frames (e.g. their source URI; it is part of the engine
    cache key, so different frames need different names) and ``calibration_images()``
    returns an iterable of H x W x 3 uint8 RGB frames; it is called only when an engine is
    actually built. This layer opens no sources: the caller does (e.g.
    ``pipeline.tools.build_engines`` for ``--calibration SOURCE``).
    """

    precision: str = "fp16"
    max_batch: int = 8
    opt_batch: int | None = None
    batch_profiles: tuple[int, ...] = ()
    min_hw: tuple[int, int] | None = None
    opt_hw: tuple[int, int] | None = None
    max_hw: tuple[int, int] | None = None
    max_rois: int | None = None
    max_masks: int | None = None
    workspace_gb: float | None = None
    calibration: str | None = None
    calibration_frames: int = 64
    calibration_batch: int = 4
    extra: dict[str, Any] = field(default_factory=dict)
    # not compared: a function has no useful equality, and ``calibration`` identifies the frames
    calibration_images: Callable[[], Iterable[np.ndarray]] | None = field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ModelError(
                f"unknown precision '{self.precision}' (choices: {', '.join(PRECISIONS)})"
            )
        if self.max_batch < 1:
            raise ModelError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.precision == "int8" and not self.calibration:
            raise ModelError("int8 needs calibration frames: pass --calibration SOURCE (a video, "
                             "image folder or synthetic:// URI)")  # fmt: skip


def _default_sizes(
    manifest: dict[str, Any],
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(min, opt, max) padded input sizes for image graphs, from the export's resize."""
    from engines.transform import target_size

    inp = manifest["input"]
    div = max(int(inp.get("size_divisible", 32)), 1)
    lo, hi = int(inp["min_size"]), int(inp["max_size"])
    smallest = ceil_to(32, div)
    oh, ow = target_size(1080, 1920, lo, hi)  # a 16:9 frame, the common case
    opt = (ceil_to(oh, div), ceil_to(ow, div))
    side = ceil_to(min(hi, 2 * lo), div)
    side = max(side, *opt)
    return (smallest, smallest), opt, (side, side)


def graph_profiles(
    manifest: dict[str, Any], graph: str, settings: BuildSettings
) -> list[ProfileShapes]:
    """Optimization profiles of one graph of an export (pure: no TensorRT needed).

    Image graphs (``dense``, ``semantic``): one profile per batch range, each
    ``min = [lo, 3, min_h, min_w]``, ``opt = [hi or opt_batch, 3, opt_h, opt_w]``,
    ``max = [hi, 3, max_h, max_w]``. Heads: one profile over the RoI count, 1 ..
    ``max_rois`` (box head, default ``max_batch * 1000``) or ``max_masks`` (mask head,
    default ``max_batch * 100``), opt at a quarter of the max.
    """
    info = manifest["graphs"][graph]
    spec = info["inputs"][0]
    name, dims = spec["name"], list(spec["shape"])
    if graph in ("dense", "semantic"):
        d_min, d_opt, d_max = _default_sizes(manifest)
        min_hw = settings.min_hw or d_min
        opt_hw = settings.opt_hw or d_opt
        max_hw = settings.max_hw or d_max
        if not (min_hw[0] <= opt_hw[0] <= max_hw[0] and min_hw[1] <= opt_hw[1] <= max_hw[1]):
            raise ModelError(
                f"profile sizes must satisfy min <= opt <= max, got min {min_hw}, opt {opt_hw}, "
                f"max {max_hw}"
            )
        uppers = sorted(
            {int(b) for b in settings.batch_profiles if 0 < int(b)} | {settings.max_batch}
        )
        uppers = [b for b in uppers if b <= settings.max_batch]
        profiles: list[ProfileShapes] = []
        lower = 1
        for upper in uppers:
            opt_b = upper
            if len(uppers) == 1 and settings.opt_batch:
                opt_b = min(max(int(settings.opt_batch), 1), upper)
            profiles.append({
                name: (
                    [lower, int(dims[1]), min_hw[0], min_hw[1]],
                    [opt_b, int(dims[1]), opt_hw[0], opt_hw[1]],
                    [upper, int(dims[1]), max_hw[0], max_hw[1]],
                )
            })  # fmt: skip
            lower = upper + 1
        return profiles
    if graph in ("box_head", "mask_head"):
        per_image = 1000 if graph == "box_head" else 100
        limit = settings.max_rois if graph == "box_head" else settings.max_masks
        top = int(limit or settings.max_batch * per_image)
        rest = [int(d) for d in dims[1:]]
        opt = max(1, top // 4)
        return [{name: ([1, *rest], [opt, *rest], [top, *rest])}]
    raise ModelError(f"unknown graph '{graph}' in the export manifest")


def graph_precision(graph: str, precision: str) -> str:
    """INT8 covers the image graphs; RoI heads are built fp16 then (see ``engines.build``)."""
    if precision == "int8" and graph in ("box_head", "mask_head"):
        return "fp16"
    return precision


def spec_from_manifest(manifest: dict[str, Any]) -> Any:
    """The ``ModelSpec`` an export's manifest describes (resize of calibration frames)."""
    from engines.backends.base import ModelSpec

    inp = manifest["input"]
    return ModelSpec(
        name=manifest["model"],
        task=manifest["task"],
        class_names=tuple(manifest["class_names"]),
        model_id=manifest.get("model_id", manifest["model"]),
        untrained=bool((manifest.get("weights") or {}).get("untrained", False)),
        min_size=int(inp["min_size"]),
        max_size=int(inp["max_size"]),
        image_mean=tuple(inp["image_mean"]),  # type: ignore[arg-type]
        image_std=tuple(inp["image_std"]),  # type: ignore[arg-type]
        size_divisible=int(inp.get("size_divisible", 32)),
    )
