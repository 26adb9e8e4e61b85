"""Registry, input transform and the PyTorch backend against torchvision itself.

Small inputs and random weights keep this CPU-only and quick.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import (
    GeneralizedRCNNTransform,
    _resize_image_and_masks,
    resize_boxes,
)

from engines.backends import available_backends, create_backend
from engines.backends.torch_backend import TorchBackend, resolve_device
from engines.outputs import InstanceOutput, SemanticOutput
from engines.registry import get_model_entry, list_models
from engines.transform import batch_images, prepare_batch, prepare_image, target_size
from engines.weights import build_model, resolve_weights
from pipeline.errors import ModelError

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def _random_image(h: int, w: int, seed: int) -> np.ndarray:
    gen = np.random.default_rng(seed)
    return gen.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _structured_image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth background with a few flat rectangles and a disc: something to detect."""
    gen = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack(
        [(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), np.full_like(xx, 90)], -1
    )
    for _ in range(3):
        y0, x0 = gen.integers(0, h // 2), gen.integers(0, w // 2)
        img[y0 : y0 + h // 3, x0 : x0 + w // 3] = gen.integers(0, 256, size=3)
    cy, cx, r = h * 0.6, w * 0.7, min(h, w) * 0.2
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (250, 30, 30)
    return img.astype(np.uint8)


def _tv_float(image: np.ndarray) -> torch.Tensor:
    """How a torchvision user feeds a frame: [3, H, W] float in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255)


# --------------------------------------------------------------------------- registry


def test_registry_lists_all_models_with_tasks() -> None:
    names = list_models()
    assert names == [
        "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "fcn_resnet50", "fcn_resnet101",
        "deeplabv3_resnet50", "deeplabv3_resnet101", "lraspp_mobilenet_v3_large",
        "maskrcnn_demo", "fcn_demo", "unet_demo", "fcn32s_demo", "fcn16s_demo", "fcn8s_demo",
    ]  # fmt: skip
    assert get_model_entry("maskrcnn_resnet50_fpn").task == "instance"
    assert get_model_entry("maskrcnn_demo").task == "instance"
    assert get_model_entry("fcn_demo").task == "semantic"
    mrcnn = get_model_entry("maskrcnn_resnet50_fpn_v2")
    assert (mrcnn.min_size, mrcnn.max_size, mrcnn.size_divisible) == (800, 1333, 32)
    fcn = get_model_entry("deeplabv3_resnet101").input_defaults()
    assert (fcn.min_size, fcn.max_size) == (520, 2048)
    demo = get_model_entry("maskrcnn_demo")
    from engines.models.demo import MASKRCNN_DEMO_INPUT

    assert (demo.min_size, demo.max_size) == (
        MASKRCNN_DEMO_INPUT["min_size"],
        MASKRCNN_DEMO_INPUT["max_size"],
    )


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(
        ModelError, match=r"unknown model 'yolo' \(available: maskrcnn_resnet50_fpn, "
    ):
        get_model_entry("yolo")


def test_semantic_models_are_built_without_aux_head() -> None:
    with torch.device("meta"):
        for name in ("fcn_resnet50", "deeplabv3_resnet50"):
            model = get_model_entry(name).build(21)
            assert model.aux_classifier is None, name


# --------------------------------------------------------------------------- transform


def test_target_size_matches_torchvision_resize() -> None:
    """Exact sizes over many shapes, including odd ones and the max_size cap (meta tensors:
    torchvision's own resize code runs but computes shapes only)."""
    gen = np.random.default_rng(0)
    shapes = [(1, 1), (3, 1000), (480, 640), (720, 1280), (1080, 1920), (800, 1333), (1333, 800)]
    shapes += [tuple(int(v) for v in gen.integers(1, 4000, size=2)) for _ in range(60)]
    for min_size, max_size in ((800, 1333), (520, 2048), (192, 320), (320, 640), (97, 131)):
        for h, w in shapes:
            image = torch.empty(3, h, w, device="meta")
            try:
                resized, _ = _resize_image_and_masks(image, min_size, max_size)
            except ZeroDivisionError:  # a side would shrink to 0 pixels
                with pytest.raises(ValueError, match="would shrink to"):
                    target_size(h, w, min_size, max_size)
                continue
            assert target_size(h, w, min_size, max_size) == tuple(resized.shape[-2:]), (h, w)


@pytest.mark.parametrize(
    ("min_size", "max_size", "shapes"),
    [
        (192, 320, [(37, 53), (101, 77), (480, 641), (150, 1001)]),  # up, up, down, capped
        (800, 1333, [(61, 47), (7, 9)]),  # torchvision's defaults
        (127, 129, [(255, 131), (131, 255)]),
    ],
)
def test_prepare_and_batch_bit_equal_to_torchvision(min_size, max_size, shapes) -> None:
    spec = _spec(min_size, max_size)
    images = [_random_image(h, w, seed=i) for i, (h, w) in enumerate(shapes)]
    ref = GeneralizedRCNNTransform(min_size, max_size, MEAN, STD, size_divisible=32).eval()
    with torch.no_grad():
        ref_list, _ = ref([_tv_float(im) for im in images])

    prepared = [prepare_image(im, spec) for im in images]
    for i, (img, tensor) in enumerate(zip(images, prepared, strict=True)):
        h, w = ref_list.image_sizes[i]
        assert tensor.dtype == torch.float32 and tensor.shape == (3, h, w)
        assert torch.equal(tensor, ref_list.tensors[i, :, :h, :w])
        assert torch.equal(prepare_image(torch.from_numpy(img), spec), tensor)  # tensor input
        region = torch.full((3, h, w), float("nan"))  # written in place, as into a ring slot
        assert prepare_image(img, spec, out=region) is region and torch.equal(region, tensor)
    batch, sizes = batch_images(prepared, 32)
    assert sizes == list(ref_list.image_sizes)
    assert batch.shape == ref_list.tensors.shape
    assert torch.equal(batch, ref_list.tensors)  # values and zero padding, bit for bit
    batch2, sizes2 = prepare_batch(images, spec)
    assert torch.equal(batch2, batch) and sizes2 == sizes


def test_batch_images_without_padding_stride() -> None:
    a, b = torch.ones(3, 5, 7), torch.full((3, 6, 4), 2.0)
    batch, sizes = batch_images([a, b], size_divisible=1)
    assert batch.shape == (2, 3, 6, 7) and sizes == [(5, 7), (6, 4)]
    assert batch[0, :, 5:].abs().sum() == 0 and batch[1, :, :, 4:].abs().sum() == 0
    with pytest.raises(ValueError):
        batch_images([])


def test_prepare_image_rejects_wrong_layout() -> None:
    spec = _spec(64, 128)
    with pytest.raises(ValueError, match="out has shape"):
        prepare_image(np.zeros((40, 40, 3), np.uint8), spec, out=torch.empty(3, 10, 10))
    with pytest.raises(ValueError, match="HxWx3"):
        prepare_image(np.zeros((3, 10, 10), np.uint8), spec)
    with pytest.raises(ValueError, match="uint8"):
        prepare_image(np.zeros((10, 10, 3), np.float32), spec)


def _spec(min_size: int, max_size: int):
    from engines.backends.base import ModelSpec

    return ModelSpec(
        name="t", task="instance", class_names=("background",), model_id="t@x", untrained=True,
        min_size=min_size, max_size=max_size, image_mean=tuple(MEAN), image_std=tuple(STD),
    )  # fmt: skip


# --------------------------------------------------------------------------- Mask R-CNN


@pytest.fixture(scope="module")
def maskrcnn() -> TorchBackend:
    # score 0.0: a random-init head scores every class ~1/91, so 0.05 would keep nothing
    return TorchBackend(
        "maskrcnn_resnet50_fpn", "random", "cpu", min_size=128, max_size=192,
        box_score_thresh=0.0, box_detections_per_img=8, rpn_post_nms_top_n_test=64,
    )  # fmt: skip


def test_maskrcnn_spec(maskrcnn: TorchBackend) -> None:
    spec = maskrcnn.spec
    assert spec.name == "maskrcnn_resnet50_fpn" and spec.task == "instance"
    assert spec.model_id == "maskrcnn_resnet50_fpn@random-s0" and spec.untrained
    assert len(spec.class_names) == 91 and spec.class_names[1] == "person"
    assert (spec.min_size, spec.max_size, spec.size_divisible) == (128, 192, 32)
    assert spec.image_mean == tuple(MEAN) and spec.image_std == tuple(STD)
    assert maskrcnn.model.roi_heads.score_thresh == 0.0
    assert maskrcnn.model.roi_heads.detections_per_img == 8
    assert maskrcnn.device == torch.device("cpu") and maskrcnn.name == "pytorch"


def test_maskrcnn_equals_whole_torchvision_model(maskrcnn: TorchBackend) -> None:
    """Backend (no transform) + rescale + torchvision paste == model([images]) in eval."""
    images = [_structured_image(121, 171, seed=1), _structured_image(143, 100, seed=2)]
    batch, sizes = prepare_batch(images, maskrcnn.spec)
    outputs = maskrcnn.infer(batch, sizes)
    with torch.inference_mode():
        reference = maskrcnn.model([_tv_float(im) for im in images])

    for image, out, size, ref in zip(images, outputs, sizes, reference, strict=True):
        assert isinstance(out, InstanceOutput)
        n = out.boxes.shape[0]
        assert n > 0, "random Mask R-CNN gave no detections to compare"
        assert out.mask_probs.shape == (n, 28, 28) and out.labels.dtype == torch.int64
        assert bool((out.labels > 0).all())
        assert float(out.mask_probs.min()) >= 0.0 and float(out.mask_probs.max()) <= 1.0
        # model-input coordinates: boxes lie inside the resized (unpadded) image
        assert float(out.boxes[:, 2].max()) <= size[1] and float(out.boxes[:, 3].max()) <= size[0]
        original = image.shape[:2]
        boxes = resize_boxes(out.boxes, size, original)
        masks = paste_masks_in_image(out.mask_probs[:, None], boxes, original)
        assert torch.equal(out.labels, ref["labels"])
        torch.testing.assert_close(out.scores, ref["scores"], rtol=0, atol=1e-4)
        torch.testing.assert_close(boxes, ref["boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(masks, ref["masks"], rtol=0, atol=1e-4)
        # on CPU it is in fact bit-identical
        assert torch.equal(boxes, ref["boxes"]) and torch.equal(masks, ref["masks"])


def test_maskrcnn_batch_of_three_equals_three_single_batches(maskrcnn: TorchBackend) -> None:
    """Frames of one stream share a size, so only the batch dimension differs.

    Not bit-exact on CPU: oneDNN picks other conv kernels for another batch size, so FPN
    features differ by ~1e-5 relative and scores by up to ~2e-5 (measured); detections,
    their order and labels stay the same.
    """
    images = [_structured_image(90, 120, seed=s) for s in (3, 4, 5)]
    batch, sizes = prepare_batch(images, maskrcnn.spec)
    together = maskrcnn.infer(batch, sizes)
    for i, image in enumerate(images):
        single = maskrcnn.infer(*prepare_batch([image], maskrcnn.spec))[0]
        assert single.labels.numel() > 0
        assert torch.equal(single.labels, together[i].labels)
        torch.testing.assert_close(single.boxes, together[i].boxes, rtol=0, atol=1e-2)
        torch.testing.assert_close(single.scores, together[i].scores, rtol=0, atol=1e-4)
        torch.testing.assert_close(single.mask_probs, together[i].mask_probs, rtol=0, atol=1e-3)


# --------------------------------------------------------------------------- semantic


@pytest.fixture(scope="module")
def fcn() -> TorchBackend:
    return TorchBackend("fcn_resnet50", "random", min_size=48, max_size=96)


def test_fcn_class_map_equals_argmax_of_whole_model(fcn: TorchBackend) -> None:
    assert fcn.spec.size_divisible == 1 and fcn.spec.class_names[15] == "person"
    images = [_structured_image(33, 47, seed=7)]
    batch, sizes = prepare_batch(images, fcn.spec)
    assert sizes == [(48, 68)] and batch.shape == (1, 3, 48, 68)  # unpadded
    (out,) = fcn.infer(batch, sizes)
    assert isinstance(out, SemanticOutput)
    assert out.class_map.dtype == torch.uint8 and out.class_map.shape == (48, 68)
    with torch.inference_mode():
        logits = fcn.model(prepare_image(images[0], fcn.spec)[None])["out"]
    assert torch.equal(out.class_map, logits[0].argmax(0).to(torch.uint8))
    assert len(out.class_map.unique()) > 1  # not a degenerate constant map


def test_semantic_padded_batch_crops_each_image(fcn: TorchBackend) -> None:
    images = [_structured_image(33, 47, seed=8), _structured_image(47, 33, seed=9)]
    batch, sizes = prepare_batch(images, fcn.spec)
    outs = fcn.infer(batch, sizes)
    with torch.inference_mode():
        logits = fcn.model(batch)["out"]
    for i, (out, (h, w)) in enumerate(zip(outs, sizes, strict=True)):
        assert out.class_map.shape == (h, w) and out.class_map.is_contiguous()
        assert torch.equal(out.class_map, logits[i, :, :h, :w].argmax(0).to(torch.uint8))


def test_semantic_batch_of_three_equals_three_single_batches(fcn: TorchBackend) -> None:
    """Logits agree within 1e-4 (not bit-exact: the conv kernels depend on the batch size);
    the class maps agree except where two logits tie within that."""
    images = [_structured_image(33, 47, seed=s) for s in (10, 11, 12)]
    batch, sizes = prepare_batch(images, fcn.spec)
    together = fcn.infer(batch, sizes)
    with torch.inference_mode():
        logits3 = fcn.model(batch)["out"]
    for i, (image, (h, w)) in enumerate(zip(images, sizes, strict=True)):
        single_batch, _ = prepare_batch([image], fcn.spec)
        with torch.inference_mode():
            logits1 = fcn.model(single_batch)["out"]
        torch.testing.assert_close(logits1[0], logits3[i, :, :h, :w], rtol=0, atol=1e-4)
        single_map = logits1[0].argmax(0).to(torch.uint8)
        same = (single_map == together[i].class_map).float().mean().item()
        assert same > 0.999, same


# --------------------------------------------------------------------------- weights & factory


def test_random_weights_are_deterministic_per_seed() -> None:
    rng_state = torch.get_rng_state()
    a = build_model(resolve_weights("lraspp_mobilenet_v3_large", "random"))
    b = build_model(resolve_weights("lraspp_mobilenet_v3_large", "random", seed=0))
    c = build_model(resolve_weights("lraspp_mobilenet_v3_large", "random:1"))
    assert torch.equal(torch.get_rng_state(), rng_state)  # the caller's RNG is untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_create_backend_pytorch_and_auto(caplog: pytest.LogCaptureFixture) -> None:
    be = create_backend("lraspp_mobilenet_v3_large", "random", min_size=64, max_size=96)
    assert (
        isinstance(be, TorchBackend) and be.spec.model_id == "lraspp_mobilenet_v3_large@random-s0"
    )
    with caplog.at_level(logging.INFO, logger="engines.backends"):
        auto = create_backend("fcn_demo", "random", backend="auto")
    # no TensorRT here: without probe frames, auto takes the first installed backend that
    # starts and says so in one line
    first = available_backends("cpu")[0]
    assert auto.name == first != "tensorrt"
    assert [m for m in (r.getMessage() for r in caplog.records) if m.startswith("backend: ")] == [
        f"backend: {first} (auto)"
    ]
    assert auto.spec.class_names[0] == "background" and auto.spec.untrained
    out = auto.infer(*prepare_batch([_random_image(40, 50, 0)], auto.spec))
    assert out[0].class_map.shape == target_size(40, 50, auto.spec.min_size, auto.spec.max_size)


def test_create_backend_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        ModelError,
        match=r"unknown backend 'tflite' \(choices: pytorch, onnxruntime, tensorrt, openvino, auto\)",
    ):
        create_backend("fcn_demo", "random", backend="tflite")
    with pytest.raises(ModelError, match="TensorRT is not installed"):
        create_backend("fcn_demo", "random", backend="tensorrt")
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        create_backend("nope", "random")
    with pytest.raises(ModelError, match="unknown option 'box_thresh'"):
        create_backend("fcn_demo", "random", box_thresh=0.3)
    with pytest.raises(ModelError, match="unknown device 'tpu0'|unsupported device"):
        resolve_device("tpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError, match=r"^--device cuda requested but no CUDA GPU is available$"):
        create_backend("fcn_demo", "random", device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_transform_and_maskrcnn_match_torchvision_on_the_gpu() -> None:
    be = TorchBackend(
        "maskrcnn_resnet50_fpn", "random", "cuda", min_size=128, max_size=192,
        box_score_thresh=0.0, box_detections_per_img=8, rpn_post_nms_top_n_test=64,
    )  # fmt: skip
    images = [_structured_image(121, 171, seed=1), _structured_image(143, 100, seed=2)]
    on_gpu = [torch.from_numpy(im).cuda().permute(2, 0, 1).float().div(255) for im in images]
    ref = GeneralizedRCNNTransform(128, 192, MEAN, STD).eval()
    with torch.no_grad():
        ref_list, _ = ref(on_gpu)
    batch, sizes = prepare_batch(images, be.spec, device="cuda")
    assert batch.is_cuda and sizes == list(ref_list.image_sizes)
    assert torch.equal(batch, ref_list.tensors)
    outputs = be.infer(batch, sizes)
    with torch.inference_mode():
        reference = be.model(on_gpu)
    for image, out, size, r in zip(images, outputs, sizes, reference, strict=True):
        assert out.boxes.is_cuda and out.boxes.shape[0] > 0
        boxes = resize_boxes(out.boxes, size, image.shape[:2])
        masks = paste_masks_in_image(out.mask_probs[:, None], boxes, image.shape[:2])
        assert torch.equal(out.labels, r["labels"])
        torch.testing.assert_close(boxes, r["boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(masks, r["masks"], rtol=0, atol=1e-4)
    fcn = TorchBackend("fcn_resnet50", "random", "cuda", min_size=48, max_size=96)
    batch, sizes = prepare_batch([images[0]], fcn.spec, device="cuda")
    (sem,) = fcn.infer(batch, sizes)
    assert sem.class_map.is_cuda and sem.class_map.dtype == torch.uint8


def test_detection_options_default_to_the_models_own() -> None:
    own = TorchBackend("maskrcnn_demo", "random")
    from engines.models.demo import build_maskrcnn_demo

    demo = build_maskrcnn_demo(7)
    assert own.options["box_detections_per_img"] == demo.roi_heads.detections_per_img
    assert own.options["box_score_thresh"] == 0.05 and own.options["box_nms_thresh"] == 0.5
    tuned = TorchBackend("maskrcnn_demo", "random", box_score_thresh=0.3, box_nms_thresh=0.4)
    assert tuned.model.roi_heads.score_thresh == 0.3 and tuned.model.roi_heads.nms_thresh == 0.4
    assert tuned.options["box_score_thresh"] == 0.3
