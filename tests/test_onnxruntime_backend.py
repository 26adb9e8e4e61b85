"""ONNX Runtime backend against eager PyTorch: parity, batching, caching, providers, auto.

Every test runs on the CPU provider with small inputs; exports go to a per-module cache
root (``SEGSTREAM_CACHE``), so nothing touches the user's cache.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from engines.backends import available_backends, create_backend
from engines.backends.onnxruntime_backend import (
    OnnxRuntimeBackend,
    OrtGraph,
    eval_dim,
    select_providers,
)
from engines.engine_cache import onnx_cache_dir
from engines.registry import get_model_entry
from engines.transform import batch_images, prepare_batch, prepare_image
from engines.weights import demo_weights_path
from pipeline.errors import ModelError
from pipeline.ops.paste import crop_to_full, paste_masks

R50_OPTS = {"min_size": 128, "max_size": 160, "rpn_post_nms_top_n_test": 100,
            "box_detections_per_img": 30, "box_score_thresh": 0.01}  # fmt: skip
DEMO_OPTS = {"min_size": 160, "max_size": 224, "box_score_thresh": 0.01}


def _demo(name: str) -> str:
    return "demo" if demo_weights_path(name).is_file() else "random"


def scene(h: int, w: int, seed: int) -> np.ndarray:
    """A frame with flat shapes on a gradient: the kind of input the demo models know."""
    gen = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 200 // w + 20, yy * 200 // h + 20, np.full_like(xx, 90)], -1)
    img = img.astype(np.uint8)
    for _ in range(4):
        cy, cx = gen.integers(h // 6, h - h // 6), gen.integers(w // 6, w - w // 6)
        r = int(gen.integers(min(h, w) // 10, min(h, w) // 4))
        color = gen.integers(0, 256, size=3)
        if gen.random() < 0.5:
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = color
        else:
            img[max(cy - r, 0) : cy + r, max(cx - r, 0) : cx + r] = color
    return img


def match_instances(ref, got, frame_size, *, min_score=0.3, min_count=20) -> dict[str, float]:
    """Match ``got`` detections to ``ref`` ones (same class, best box IoU).

    The reference set is every detection scoring above ``min_score``, or, where that gives
    fewer than ``min_count`` (random weights rarely score high), the ``min_count`` best.
    Returns the fraction matched with box IoU >= 0.9, the worst score difference and the
    worst mask IoU (masks pasted with ``pipeline.ops.paste.paste_masks`` at 0.5) of the
    matched pairs.
    """
    order = torch.argsort(ref.scores, descending=True)
    keep = order[ref.scores[order] > min_score]
    if keep.numel() < min_count:
        keep = order[:min_count]
    if keep.numel() == 0:
        return {"n": 0, "matched": 1.0, "score_diff": 0.0, "mask_iou": 1.0}
    ref_masks = paste_masks(ref.mask_probs[keep], ref.boxes[keep], frame_size)
    got_masks = paste_masks(got.mask_probs, got.boxes, frame_size)
    ious = box_iou(ref.boxes[keep], got.boxes) if got.boxes.numel() else None
    matched, score_diff, mask_iou = 0, 0.0, 1.0
    for row, idx in enumerate(keep.tolist()):
        if ious is None:
            break
        cand = ious[row].clone()
        cand[got.labels != ref.labels[idx]] = -1
        best = int(cand.argmax())
        if float(cand[best]) < 0.9:
            continue
        matched += 1
        score_diff = max(score_diff, abs(float(ref.scores[idx] - got.scores[best])))
        a = crop_to_full(ref_masks[row], *frame_size)
        b = crop_to_full(got_masks[best], *frame_size)
        union = np.logical_or(a, b).sum()
        if union:
            mask_iou = min(mask_iou, float(np.logical_and(a, b).sum() / union))
    return {"n": int(keep.numel()), "matched": matched / keep.numel(), "score_diff": score_diff,
            "mask_iou": mask_iou}  # fmt: skip


def assert_instance_parity(ref_outs, got_outs, sizes) -> int:
    total = 0
    for ref, got, size in zip(ref_outs, got_outs, sizes, strict=True):
        stats = match_instances(ref, got, size)
        assert stats["matched"] >= 0.98, stats
        assert stats["score_diff"] < 0.02, stats
        assert stats["mask_iou"] >= 0.95, stats
        total += stats["n"]
    return total


@pytest.mark.parametrize(
    ("name", "opts"),
    [("maskrcnn_demo", DEMO_OPTS), ("maskrcnn_resnet50_fpn", R50_OPTS)],
)
def test_instance_parity_with_pytorch(cache_root, name, opts) -> None:
    weights = _demo(name) if name.endswith("demo") else "random"
    torch_backend = create_backend(name, weights, backend="pytorch", **opts)
    ort_backend = create_backend(name, weights, backend="onnxruntime", **opts)
    assert ort_backend.name == "onnxruntime" and ort_backend.providers == ["CPUExecutionProvider"]
    assert ort_backend.spec == torch_backend.spec
    assert ort_backend.options == torch_backend.options
    assert ort_backend.export_dir == onnx_cache_dir(name, ort_backend.weights.tag, cache_root)
    seeds = (1, 2) if name.endswith("demo") else (1,)  # R50 on 2 CPU cores: one frame
    batch, sizes = prepare_batch([scene(150, 200, s) for s in seeds], torch_backend.spec)
    ref = torch_backend.infer(batch, sizes)
    got = ort_backend.infer(batch, sizes)
    assert assert_instance_parity(ref, got, sizes) >= 10
    for out in got:
        assert out.boxes.dtype == torch.float32 and out.labels.dtype == torch.int64
        assert out.mask_probs.shape[1:] == (28, 28)
        assert float(out.mask_probs.min()) >= 0 and float(out.mask_probs.max()) <= 1


# FCN-8s holds every operator of 32s and 16s (same backbone, one more skip each)
@pytest.mark.parametrize("name", ["fcn_demo", "unet_demo", "fcn8s_demo"])
def test_semantic_parity_with_pytorch(cache_root, name) -> None:
    weights = _demo(name)
    opts = {"min_size": 128, "max_size": 192}
    ref_backend = create_backend(name, weights, backend="pytorch", **opts)
    ort_backend = create_backend(name, weights, backend="onnxruntime", **opts)
    assert ort_backend.manifest["argmax"] is True  # the argmax runs inside the graph
    frames = [scene(120, 200, 5), scene(150, 150, 6)]
    batch, sizes = prepare_batch(frames, ref_backend.spec)
    for a, b, (h, w) in zip(ref_backend.infer(batch, sizes), ort_backend.infer(batch, sizes),
                            sizes, strict=True):  # fmt: skip
        assert b.class_map.dtype == torch.uint8 and b.class_map.shape == (h, w)
        assert float((a.class_map == b.class_map).float().mean()) >= 0.995


def test_image_without_detections(cache_root) -> None:
    weights = _demo("maskrcnn_demo")
    opts = {**DEMO_OPTS, "box_score_thresh": 0.999}
    ort_backend = create_backend("maskrcnn_demo", weights, backend="onnxruntime", **opts)
    blank = np.full((120, 160, 3), 127, dtype=np.uint8)
    batch, sizes = prepare_batch([blank, scene(120, 160, 3)], ort_backend.spec)
    for out in ort_backend.infer(batch, sizes):
        assert out.boxes.shape == (0, 4) and out.scores.shape == (0,)
        assert out.labels.shape == (0,) and out.mask_probs.shape == (0, 28, 28)


def test_batch_sizes_give_the_same_per_frame_results(cache_root) -> None:
    backend = create_backend("maskrcnn_demo", _demo("maskrcnn_demo"), backend="onnxruntime",
                             **{**DEMO_OPTS, "min_size": 128, "max_size": 160})  # fmt: skip
    frames = [prepare_image(scene(96, 128, 10 + i), backend.spec) for i in range(8)]
    singles = []
    for img in frames:
        batch, sizes = batch_images([img], 32)
        singles.extend(backend.infer(batch, sizes))
    for size in (3, 8):
        outs = []
        for start in range(0, 8, size):
            batch, sizes = batch_images(frames[start : start + size], 32)
            outs.extend(backend.infer(batch, sizes))
        for ref, got in zip(singles, outs, strict=True):
            stats = match_instances(ref, got, tuple(frames[0].shape[1:]))
            assert stats["matched"] >= 0.98 and stats["score_diff"] < 1e-3, (size, stats)
            assert stats["mask_iou"] >= 0.99, (size, stats)


def test_export_cache_is_reused_and_explicit_dirs_load(cache_root, monkeypatch) -> None:
    import engines.export as export_mod

    name, opts = "fcn_demo", {"min_size": 96, "max_size": 128}
    first = OnnxRuntimeBackend(name, "random", **opts)  # exports (or reuses the module's)

    def no_export(*_a, **_k):
        raise AssertionError("the cached export should have been reused")

    monkeypatch.setattr(export_mod, "export_loaded", no_export)
    second = OnnxRuntimeBackend(name, "random", **opts)
    assert second.export_dir == first.export_dir
    monkeypatch.undo()

    out = first.export_dir  # an export directory given explicitly
    loaded = OnnxRuntimeBackend(name, onnx_dir=out)  # no weights needed: the export has them
    assert loaded.weights.tag == "random-s0" and loaded.spec.model_id == "fcn_demo@random-s0"
    assert loaded.spec.min_size == get_model_entry(name).min_size and loaded.weights.untrained  # manifest size
    batch, sizes = prepare_batch([scene(100, 120, 1)], first.spec)
    got = loaded.infer(batch, sizes)[0].class_map
    assert torch.equal(got, first.infer(batch, sizes)[0].class_map)
    again = OnnxRuntimeBackend(name, "random", onnx_dir=out, min_size=96)  # same weights: ok
    assert again.spec.min_size == 96
    with pytest.raises(ModelError, match="other weights"):
        OnnxRuntimeBackend(name, "random:4", onnx_dir=out)
    with pytest.raises(ModelError, match="is an export of fcn_demo"):
        OnnxRuntimeBackend("maskrcnn_demo", onnx_dir=out)


def test_output_shapes_follow_the_symbolic_dims(cache_root) -> None:
    backend = create_backend("maskrcnn_demo", "random", backend="onnxruntime", **DEMO_OPTS)
    dense: OrtGraph = backend.graphs["dense"]
    for shape in [(1, 3, 96, 128), (2, 3, 160, 64)]:
        x = torch.randn(*shape)
        assert [tuple(t.shape) for t in dense(x)] == dense.output_shapes(shape)
    # the IO-binding path (what CUDA uses), exercised here with CPU tensors
    bound = OrtGraph(dense.path, torch.device("cpu"), ["CPUExecutionProvider"], None,
                     backend.manifest["graphs"]["dense"]["inputs"],
                     backend.manifest["graphs"]["dense"]["outputs"], io_binding=True)  # fmt: skip
    assert bound.io_binding and not dense.io_binding
    x = torch.randn(2, 3, 96, 160)
    for a, b in zip(bound(x), dense(x), strict=True):
        assert torch.equal(a, b)
    box: OrtGraph = backend.graphs["box_head"]
    assert [tuple(t.shape) for t in box(torch.randn(5, 64, 7, 7))] == box.output_shapes(
        (5, 64, 7, 7)
    )
    # ORT's TensorRT provider gets one profile per graph (pure computation, no GPU needed)
    assert backend._trt_ep_profiles("dense", 2) is None  # CPU: no TensorRT provider
    backend.device = torch.device("cuda", 0)
    dense_p = backend._trt_ep_profiles("dense", 2)
    assert dense_p["trt_profile_min_shapes"] == "images:1x3x32x32"
    assert dense_p["trt_profile_max_shapes"] == "images:2x3x224x224"
    box_p = backend._trt_ep_profiles("box_head", 2)
    assert box_p["trt_profile_max_shapes"] == "rois:400x64x7x7"  # 2 x 200 RPN proposals
    backend.device = torch.device("cpu")
    assert eval_dim("(((height - 1)//4)) + 1", {"height": 161}) == 41
    assert eval_dim(7, {}) == 7 and eval_dim("batch", {"batch": 3}) == 3
    with pytest.raises(ValueError):
        eval_dim("__import__('os')", {})
    with pytest.raises(ValueError):
        eval_dim("height", {})


def test_provider_selection() -> None:
    cpu = select_providers(torch.device("cpu"), ["CPUExecutionProvider"])
    assert cpu == ["CPUExecutionProvider"]
    with pytest.raises(ModelError, match="onnxruntime-gpu"):
        select_providers(torch.device("cuda", 0), ["CPUExecutionProvider"])
    gpu = select_providers(
        torch.device("cuda", 1),
        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        cuda_stream=1234,
    )
    assert [p[0] if isinstance(p, tuple) else p for p in gpu] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]  # fmt: skip
    assert gpu[1][1]["device_id"] == 1 and gpu[1][1]["user_compute_stream"] == "1234"
    no_trt = select_providers(torch.device("cuda", 0), ["TensorrtExecutionProvider",
                              "CUDAExecutionProvider", "CPUExecutionProvider"], tensorrt_ep=False)  # fmt: skip
    assert no_trt[0][0] == "CUDAExecutionProvider"


def test_registry_auto_and_options(cache_root, caplog) -> None:
    assert "onnxruntime" in available_backends("cpu")
    assert "tensorrt" not in available_backends("cpu")
    with caplog.at_level(logging.INFO, logger="engines.backends"):
        backend = create_backend("fcn_demo", "random", backend="auto", min_size=96, max_size=128)
    first = available_backends("cpu")[0]  # without probe frames, auto takes the first that starts
    assert backend.name == first
    assert f"backend: {first} (auto)" in caplog.messages
    with pytest.raises(ModelError, match="unknown option 'bogus' for backend onnxruntime"):
        create_backend("fcn_demo", "random", backend="onnxruntime", bogus=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (IO binding path)")
def test_cuda_io_binding_parity(cache_root) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no CUDA provider (onnxruntime-gpu)")
    ref = create_backend("maskrcnn_demo", "random", backend="pytorch", device="cuda", **DEMO_OPTS)
    got = create_backend("maskrcnn_demo", "random", backend="onnxruntime", device="cuda",
                         tensorrt_ep=False, **DEMO_OPTS)  # fmt: skip
    batch, sizes = prepare_batch([scene(150, 200, 1), scene(150, 200, 2)], ref.spec, "cuda")
    outs = got.infer(batch, sizes)
    assert all(o.boxes.device.type == "cuda" for o in outs)
    cpu = [type(o)(*(t.cpu() for t in (o.boxes, o.scores, o.labels, o.mask_probs))) for o in outs]
    refs = [type(o)(*(t.cpu() for t in (o.boxes, o.scores, o.labels, o.mask_probs)))
            for o in ref.infer(batch, sizes)]  # fmt: skip
    assert_instance_parity(refs, cpu, sizes)
