"""OpenVINO backend against eager PyTorch (FP32 parity) and against its own FP32 (INT8 accuracy).

CPU only, small inputs for parity; exports and quantised models go to a per-module cache
root (``SEGSTREAM_CACHE``). INT8 is calibrated on the reserved calibration scene (seed 3000)
and scored on other held-out scenes, at two frame sizes, against the synthetic ground truth.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

pytest.importorskip("openvino", reason="openvino is not installed (pip install openvino nncf)")

from test_onnxruntime_backend import DEMO_OPTS, _demo, assert_instance_parity, scene  # noqa: E402

from engines.backends import available_backends, create_backend  # noqa: E402
from engines.backends.openvino_backend import (  # noqa: E402
    CALIBRATION_SEEDS,
    DEFAULT_CALIBRATION_SOURCE,
    openvino_available,
    openvino_device,
)
from engines.engine_cache import onnx_cache_dir  # noqa: E402
from engines.transform import prepare_batch  # noqa: E402
from pipeline.errors import ModelError  # noqa: E402
from pipeline.evaluate import evaluate_instances, evaluate_semantic  # noqa: E402
from pipeline.postprocess import PostprocessParams  # noqa: E402
from pipeline.reference import segment_frames  # noqa: E402
from pipeline.sources import open_source  # noqa: E402
from pipeline.sources.base import Frame  # noqa: E402
from pipeline.synthetic import EVAL_SEED, TRAIN_SEEDS  # noqa: E402
from pipeline.synthetic.coco import coco_dataset  # noqa: E402
from pipeline.synthetic.scene import SyntheticScene  # noqa: E402

CALIBRATION_SEED = 3000  # the seed DEFAULT_CALIBRATION_SOURCE renders
#: Held-out scenes the INT8 model is scored on, per frame size (never the calibration seed).
EVAL_SCENES = {(640, 480): (12, 13), (427, 320): (22, 23)}
EVAL_FRAMES = range(15, 600, 60)  # 10 frames per scene, 2 s apart
INT8_CALIBRATION_FRAMES = 32


def calibration_frames(uri: str = DEFAULT_CALIBRATION_SOURCE):
    """The calibration source's frames, read lazily (a cache hit reads none)."""
    with open_source(uri) as src:
        for frame in src.frames():
            yield frame.image


def int8_backend(model: str, frames: int = INT8_CALIBRATION_FRAMES, **opts):
    return create_backend(
        model, _demo(model), backend="openvino", precision="int8",
        calibration=calibration_frames(), calibration_source=DEFAULT_CALIBRATION_SOURCE,
        calibration_frames=frames, **opts,
    )  # fmt: skip


def score(backend, size: tuple[int, int]) -> float:
    """Mask AP (instance) or mean IoU (semantic) over the held-out scenes of one frame size."""
    frames, records = [], []
    params = PostprocessParams(score_threshold=0.05)  # AP wants the low-score tail too
    for k, seed in enumerate(EVAL_SCENES[size]):
        world = SyntheticScene(seed, *size)
        for i in EVAL_FRAMES:
            truth = world.frame(i)
            truth.index = k * 10_000 + i  # one image id per (scene, frame)
            frames.append(truth)
    inputs = (Frame(image=f.image, index=f.index) for f in frames)
    for frame, result, _ in segment_frames(backend, inputs, params, batch_size=4):
        record = result.to_json()
        record["seq"] = frame.index
        records.append(record)
    if backend.spec.task == "instance":
        return float(evaluate_instances(coco_dataset(frames), records)["segm"]["AP"])
    truth_maps = {f.index: f.class_map for f in frames}
    return float(evaluate_semantic(truth_maps, records)["mean_iou"])


# ------------------------------------------------------------------------------ FP32


def test_fp32_instance_parity_with_dynamic_batches_and_sizes(cache_root) -> None:
    weights = _demo("maskrcnn_demo")
    ref = create_backend("maskrcnn_demo", weights, backend="pytorch", **DEMO_OPTS)
    got = create_backend("maskrcnn_demo", weights, backend="openvino", **DEMO_OPTS)
    assert got.name == "openvino" and got.ov_device == "CPU" and got.precision == "fp32"
    assert got.spec == ref.spec and got.options == ref.options
    # the same cached export ONNX Runtime uses
    assert got.export_dir == onnx_cache_dir("maskrcnn_demo", got.weights.tag, cache_root)
    total = 0
    for seeds, (h, w) in (((1,), (150, 200)), ((2, 3, 4), (200, 150))):  # one compiled model
        batch, sizes = prepare_batch([scene(h, w, s) for s in seeds], ref.spec)
        outs = got.infer(batch, sizes)
        total += assert_instance_parity(ref.infer(batch, sizes), outs, sizes)
        for out in outs:
            assert out.boxes.dtype == torch.float32 and out.labels.dtype == torch.int64
            assert out.mask_probs.shape[1:] == (28, 28)
    assert total >= 20


def test_fp32_semantic_parity_with_pytorch(cache_root) -> None:
    weights, opts = _demo("fcn_demo"), {"min_size": 128, "max_size": 192}
    ref = create_backend("fcn_demo", weights, backend="pytorch", **opts)
    got = create_backend("fcn_demo", weights, backend="openvino", **opts)
    assert got.manifest["argmax"] is True
    for frames in ([scene(120, 200, 5)], [scene(150, 150, 6), scene(96, 160, 7), scene(128, 96, 8)]):
        batch, sizes = prepare_batch(frames, ref.spec)
        for a, b, (h, w) in zip(ref.infer(batch, sizes), got.infer(batch, sizes), sizes,
                                strict=True):  # fmt: skip
            assert b.class_map.dtype == torch.uint8 and b.class_map.shape == (h, w)
            assert float((a.class_map == b.class_map).float().mean()) >= 0.995


# ------------------------------------------------------------------------------ INT8


def test_calibration_seed_is_never_an_evaluation_seed() -> None:
    assert f"seed={CALIBRATION_SEED}&" in DEFAULT_CALIBRATION_SOURCE
    assert CALIBRATION_SEED in CALIBRATION_SEEDS
    assert CALIBRATION_SEED not in TRAIN_SEEDS and CALIBRATION_SEED != EVAL_SEED
    assert not any(s in CALIBRATION_SEEDS for seeds in EVAL_SCENES.values() for s in seeds)


def test_int8_mask_ap_within_0_01_of_fp32(cache_root) -> None:
    fp32 = create_backend("maskrcnn_demo", _demo("maskrcnn_demo"), backend="openvino")
    int8 = int8_backend("maskrcnn_demo")
    assert int8.precision == "int8" and int8.quantized_dir is not None
    assert int8.spec == fp32.spec
    for size in EVAL_SCENES:
        ap32, ap8 = score(fp32, size), score(int8, size)
        assert ap32 >= 0.7, (size, ap32)  # the trained demo model, not a degenerate one
        assert ap8 >= ap32 - 0.01, f"{size}: int8 mask AP {ap8:.4f} vs fp32 {ap32:.4f}"


def test_int8_semantic_mean_iou_within_0_01_of_fp32(cache_root) -> None:
    fp32 = create_backend("fcn_demo", _demo("fcn_demo"), backend="openvino")
    int8 = int8_backend("fcn_demo", frames=16)
    size = (427, 320)
    miou32, miou8 = score(fp32, size), score(int8, size)
    assert miou8 >= miou32 - 0.01, (miou8, miou32)


def test_int8_models_are_cached(cache_root, monkeypatch) -> None:
    import nncf

    first = int8_backend("maskrcnn_demo")  # quantised by the AP test, or now

    def no_quantize(*_a, **_k):
        raise AssertionError("the cached int8 models should have been reused")

    monkeypatch.setattr(nncf, "quantize", no_quantize)
    # a cache hit needs no frames: the source name identifies them
    again = create_backend(
        "maskrcnn_demo", _demo("maskrcnn_demo"), backend="openvino", precision="int8",
        calibration_source=DEFAULT_CALIBRATION_SOURCE, calibration_frames=INT8_CALIBRATION_FRAMES,
    )  # fmt: skip
    assert again.quantized_dir == first.quantized_dir
    assert first.quantized_dir.parent.parent == cache_root / "openvino"
    batch, sizes = prepare_batch([scene(150, 200, 1)], again.spec)
    a, b = first.infer(batch, sizes)[0], again.infer(batch, sizes)[0]
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.mask_probs, b.mask_probs)
    # other calibration settings are another key: quantising again is needed
    with pytest.raises(AssertionError, match="should have been reused"):
        int8_backend("maskrcnn_demo", frames=1)
    with pytest.raises(ModelError, match="needs calibration frames"):
        create_backend("maskrcnn_demo", _demo("maskrcnn_demo"), backend="openvino",
                       precision="int8", calibration_source="synthetic://?seed=3001")  # fmt: skip
    with pytest.raises(ModelError, match="H x W x 3 uint8"):
        create_backend("fcn_demo", "random", backend="openvino", precision="int8",
                       calibration=[np.zeros((8, 8), np.uint8)])  # fmt: skip


# ------------------------------------------------------------------------------ errors, registry


def test_devices_and_options(cache_root, monkeypatch) -> None:
    assert openvino_device("cpu") == "CPU" and openvino_device("gpu.1") == "GPU.1"
    for device in ("cuda", "cuda:0", torch.device("cuda", 0)):
        with pytest.raises(ModelError, match="not CUDA devices"):
            create_backend("fcn_demo", "random", backend="openvino", device=device)
        assert not openvino_available(device)
    assert openvino_available("cpu") and "openvino" in available_backends("cpu")
    with pytest.raises(ModelError, match="unknown device 'tpu'"):
        openvino_device("tpu")
    with pytest.raises(ModelError, match="unknown precision 'fp16'"):
        create_backend("fcn_demo", "random", backend="openvino", precision="fp16")
    with pytest.raises(ModelError, match="unknown option 'bogus' for backend openvino"):
        create_backend("fcn_demo", "random", backend="openvino", bogus=1)
    backend = create_backend("fcn_demo", "random", backend="openvino", threads=1,
                             min_size=96, max_size=128)  # fmt: skip
    assert backend.compile_config["INFERENCE_NUM_THREADS"] == 1
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nncf" else real_find_spec(name, *a))  # fmt: skip
    with pytest.raises(ModelError, match="needs NNCF"):
        create_backend("fcn_demo", "random", backend="openvino", precision="int8")
