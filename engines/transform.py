"""The model-input transform: scale to [0, 1], normalise, resize, pad into a batch.

Pure functions shared by the preprocess stage, the infer stage (on the GPU) and the
in-process reference path. They reproduce torchvision's ``GeneralizedRCNNTransform`` (eval
mode) bit for bit: normalise first, then resize bilinearly (``align_corners=False``, no
antialias) to ``floor(side * scale)`` with ``scale = min(min_size / short, max_size / long)``
computed in Python floats, exactly the size ``interpolate(scale_factor=scale,
recompute_scale_factor=True)`` produces; then zero-pad to a common size rounded up to
``size_divisible``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from engines.backends.base import ModelSpec


def target_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Model-input size (nh, nw) of an h x w frame, exactly as torchvision computes it.

    Raises ``ValueError`` if a side would shrink to 0 pixels (torchvision fails there too).
    """
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {h}x{w}")
    scale = min(min_size / min(h, w), max_size / max(h, w))
    # interpolate(recompute_scale_factor=True) truncates float(side) * scale to an int
    nh, nw = int(math.floor(h * scale)), int(math.floor(w * scale))
    if nh < 1 or nw < 1:
        raise ValueError(
            f"a {h}x{w} frame would shrink to {nh}x{nw} pixels "
            f"(min_size {min_size}, max_size {max_size}): aspect ratio too extreme"
        )
    return nh, nw


def to_chw_float(
    image: np.ndarray | torch.Tensor, device: torch.device | str | None = None
) -> torch.Tensor:
    """HxWx3 uint8 RGB (numpy or tensor) -> contiguous [3, H, W] float32 in [0, 1].

    The uint8 data moves to ``device`` first, so only a quarter of the bytes cross the bus.
    """
    if isinstance(image, np.ndarray):
        array = np.ascontiguousarray(image)
        if not array.flags.writeable:  # e.g. np.frombuffer(bytes): only read, never written
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                tensor = torch.from_numpy(array)
        else:
            tensor = torch.from_numpy(array)
    else:
        tensor = image
    if tensor.dim() != 3 or tensor.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {tuple(tensor.shape)}")
    if tensor.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 image, got {tensor.dtype}")
    if device is not None:
        tensor = tensor.to(device, non_blocking=True)
    # one pass converts and transposes, then scale in place: the same arithmetic as
    # permute().contiguous().float().div(255), two fewer full-size temporaries
    chw = torch.empty((3, tensor.shape[0], tensor.shape[1]), dtype=torch.float32, device=tensor.device)
    chw.copy_(tensor.permute(2, 0, 1))
    return chw.div_(255)


def normalize(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(image - mean) / std per channel, on [3, H, W] float (torchvision's arithmetic)."""
    mean_t = torch.as_tensor(mean, dtype=image.dtype, device=image.device)
    std_t = torch.as_tensor(std, dtype=image.dtype, device=image.device)
    return (image - mean_t[:, None, None]) / std_t[:, None, None]


def resize(image: torch.Tensor, min_size: int, max_size: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear resize of [C, H, W] to ``target_size`` (align_corners=False, no antialias).

    ``out``: a [C, nh, nw] float32 tensor to write into (e.g. a shared-memory ring slot),
    saving a copy; the same kernel as ``F.interpolate`` runs either way.
    """
    h, w = int(image.shape[-2]), int(image.shape[-1])
    size = target_size(h, w, min_size, max_size)
    if out is not None:
        if tuple(out.shape) != (image.shape[0], *size):
            raise ValueError(f"out has shape {tuple(out.shape)}, the resized image {(image.shape[0], *size)}")
        # the op F.interpolate(mode="bilinear", size=...) dispatches to, with its out= form
        torch._C._nn.upsample_bilinear2d(image[None], list(size), False, None, None, out=out[None])
        return out
    # an explicit size is what interpolate passes on after recomputing the scale factor
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


def prepare_image(
    image: np.ndarray | torch.Tensor,
    spec: ModelSpec,
    device: torch.device | str | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """One HxWx3 uint8 RGB frame -> model input [3, nh, nw] float32 on ``device``.

    ``device=None`` keeps a tensor where it is (numpy arrays go to the CPU). ``out``: where
    to write the result (shape ``(3, *target_size(...))``), e.g. a ring slot's input region.

    Note: on the CPU, ATen's resize kernel splits work by thread and the last bit of a pixel
    can depend on the split; callers that must agree bit for bit (the pipeline's stages, the
    reference path, torchvision's own transform) run with the same torch thread count.
    """
    chw = to_chw_float(image, device)
    # normalise in place (``normalize``'s arithmetic, without its two temporaries)
    chw.sub_(torch.as_tensor(spec.image_mean, dtype=chw.dtype, device=chw.device)[:, None, None])
    chw.div_(torch.as_tensor(spec.image_std, dtype=chw.dtype, device=chw.device)[:, None, None])
    return resize(chw, spec.min_size, spec.max_size, out=out)


def batch_images(
    images: list[torch.Tensor], size_divisible: int = 32
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Stack [3, h, w] images into a zero-padded [B, 3, H, W] batch.

    H and W are the largest h and w rounded up to a multiple of ``size_divisible``;
    each image sits in the top-left corner. Returns the batch and the unpadded sizes.
    """
    if not images:
        raise ValueError("batch_images needs at least one image")
    sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
    channels = max(int(img.shape[0]) for img in images)
    stride = max(int(size_divisible), 1)
    height = int(math.ceil(max(h for h, _ in sizes) / stride) * stride)
    width = int(math.ceil(max(w for _, w in sizes) / stride) * stride)
    batch = images[0].new_zeros((len(images), channels, height, width))
    for i, img in enumerate(images):
        batch[i, : img.shape[0], : img.shape[1], : img.shape[2]].copy_(img)
    return batch, sizes


def prepare_batch(
    images: list[np.ndarray | torch.Tensor],
    spec: ModelSpec,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """``prepare_image`` every frame, then ``batch_images`` with ``spec.size_divisible``."""
    return batch_images([prepare_image(img, spec, device) for img in images], spec.size_divisible)
