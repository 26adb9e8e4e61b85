"""The U-Net and FCN-32s/16s/8s demo models (``engines.models.semantic_demo``): registry
entries, structure (skip concatenations, the FCN skips and their initialisation), the FCN
paper's staged initialisation, and training smoke runs whose checkpoints load back through
``engines.weights``. Random weights and tiny frames keep it CPU-only and quick.

The split, ONNX export, ONNX Runtime parity and the TensorRT operator check run for these
models through the parametrisation of tests/test_split.py, tests/test_export.py and
tests/test_onnxruntime_backend.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engines.models.demo_classes import DEMO_CLASS_NAMES, DEMO_PANOPTIC_CLASS_NAMES
from engines.models.semantic_demo import (
    bilinear_kernel,
    build_fcn8s_demo,
    build_fcn16s_demo,
    build_fcn32s_demo,
    build_unet_demo,
    init_from_coarser,
)
from engines.registry import get_model_entry
from engines.weights import build_model, resolve_weights
from pipeline import training as T
from pipeline.synthetic import CLASS_NAMES, PANOPTIC_CLASS_NAMES
from pipeline.training.__main__ import main as train_main
from pipeline.training.run import PROG
from pipeline.training.tasks import FG_WEIGHT, MODELS

NEW = ("unet_demo", "fcn32s_demo", "fcn16s_demo", "fcn8s_demo")
K = len(DEMO_PANOPTIC_CLASS_NAMES)  # they learn the panoptic scenes: shapes and stuff
TINY = {"min_size": 72, "max_size": 96}
WEIGHTS = Path(__file__).resolve().parents[1] / "engines" / "weights"
HAS_TRT_GPU = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", NEW)
def test_registry_entry_and_outputs_at_input_size(name: str) -> None:
    entry = get_model_entry(name)
    assert (entry.task, entry.family, entry.default_weights) == ("semantic", "demo", "demo")
    assert entry.default_class_names() == DEMO_PANOPTIC_CLASS_NAMES == PANOPTIC_CLASS_NAMES
    assert DEMO_PANOPTIC_CLASS_NAMES[: len(DEMO_CLASS_NAMES)] == CLASS_NAMES  # the shapes keep their ids
    d = entry.input_defaults()
    assert (d.min_size, d.max_size, d.size_divisible) == (320, 640, 32)
    assert name in MODELS  # trainable with python -m pipeline.training
    loaded = resolve_weights(name, "random")  # the class count comes from the class names
    assert loaded.num_classes == K
    model = build_model(loaded)
    with torch.no_grad():  # padded sizes, and odd ones (upsampled maps are cropped)
        for shape in [(2, 3, 64, 96), (1, 3, 72, 100), (1, 3, 33, 47)]:
            out = model(torch.randn(*shape))
            assert set(out) == {"out"} and out["out"].shape == (shape[0], K, *shape[2:])


@pytest.mark.parametrize("name", NEW)
def test_class_count_is_a_parameter(name: str) -> None:
    model = get_model_entry(name).build(K + 3).eval()  # e.g. with stuff classes added
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64))["out"].shape[1] == K + 3
    with pytest.raises(ValueError, match="num_classes"):
        get_model_entry(name).build(1)


def test_unet_concatenates_the_matching_encoder_features() -> None:
    model = build_unet_demo(K).eval()
    down, into_decoder = [], []
    hooks = [b.register_forward_hook(lambda _m, _i, o: down.append(o)) for b in model.down]
    hooks += [
        b.register_forward_pre_hook(lambda _m, i: into_decoder.append(i[0])) for b in model.decode
    ]
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 96))
    for h in hooks:
        h.remove()
    assert len(into_decoder) == len(model.widths) - 1
    # deepest skip first: each decoder input starts with its level's encoder output, unchanged
    for skip, joined in zip(down[-2::-1], into_decoder, strict=True):
        assert joined.shape[1] == 2 * skip.shape[1] and joined.shape[2:] == skip.shape[2:]
        assert torch.equal(joined[:, : skip.shape[1]], skip)


def test_fcn_skips_start_at_zero_and_upsample_bilinearly() -> None:
    m32, m16, m8 = build_fcn32s_demo(K), build_fcn16s_demo(K), build_fcn8s_demo(K)
    assert [m.output_stride for m in (m32, m16, m8)] == [32, 16, 8]
    assert not hasattr(m32, "score_pool4") and not hasattr(m16, "score_pool3")
    for score in (m16.score_pool4, m8.score_pool4, m8.score_pool3):
        assert not score.weight.any() and not score.bias.any()
    for up in (m16.upscore2, m8.upscore2, m8.upscore_pool4):
        assert torch.equal(up.weight, bilinear_kernel(K, 4))
    x = torch.randn(1, K, 6, 8)
    with torch.no_grad():  # the learned 2x step starts as bilinear interpolation (inside)
        got = m16.upscore2(x)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(got[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])


def test_fcn16s_and_8s_initialise_from_the_coarser_net() -> None:
    torch.manual_seed(1)
    m32 = build_fcn32s_demo(K).eval()
    m16 = build_fcn16s_demo(K).eval()
    assert sorted(init_from_coarser(m16, m32.state_dict())) == [
        "score_pool4.bias", "score_pool4.weight", "upscore2.weight",
    ]  # fmt: skip
    src, dst = m32.state_dict(), m16.state_dict()
    assert all(torch.equal(v, dst[k]) for k, v in src.items())
    x = torch.randn(2, 3, 128, 160)
    with torch.no_grad():  # zero skip: the 32s scores, upsampled in two steps instead of one
        a, b = m32(x)["out"], m16(x)["out"]
    assert float((a.argmax(1) == b.argmax(1)).float().mean()) >= 0.9
    m8 = build_fcn8s_demo(K)
    assert sorted(init_from_coarser(m8, m16.state_dict())) == [
        "score_pool3.bias", "score_pool3.weight", "upscore_pool4.weight",
    ]  # fmt: skip
    assert init_from_coarser(build_fcn16s_demo(K), m16.state_dict()) == []  # same net: all
    with pytest.raises(ValueError, match="coarser"):
        init_from_coarser(m32, m16.state_dict())
    with pytest.raises(ValueError, match="class count"):
        init_from_coarser(build_fcn16s_demo(K + 1), m32.state_dict())
    with pytest.raises(ValueError, match="not an FCN"):
        init_from_coarser(build_unet_demo(K), m32.state_dict())  # type: ignore[arg-type]


@pytest.mark.parametrize("name", NEW)
def test_a_few_training_steps_lower_the_loss(name: str) -> None:
    task = T.get_task(name)
    torch.manual_seed(0)
    model = task.build()
    probe = T.batch_plan(123, 0, 4, [(96, 72)])  # a fixed batch, not one trained on

    def probe_loss() -> float:
        model.train()
        with torch.no_grad():
            return float(task.loss(model, probe, TINY, FG_WEIGHT)[0])

    before = probe_loss()
    opt = T.make_optimizer(model, 3e-3, 1e-4)
    T.train_steps(name, model, opt, seed=0, start=0, stop=12, steps=12, batch_size=4,
                  sizes=[(96, 72)], lr=3e-3, warmup=2, input_size=TINY)  # fmt: skip
    assert probe_loss() < 0.9 * before


def _train(name: str, out: Path, *extra: str) -> int:
    return train_main(["--model", name, "--seed", "1", "--out", str(out), "--steps", "2",
                       "--batch-size", "2", "--size", "96x72", "--input", "72:96",
                       "--log-every", "1", *extra])  # fmt: skip


def test_cli_trains_fcn_32s_16s_8s_in_stages_and_the_unet(tmp_path, capsys) -> None:
    paths = {name: tmp_path / f"{name}.pt" for name in NEW}
    no_eval = ("--eval-frames", "0")
    assert _train("fcn32s_demo", paths["fcn32s_demo"], *no_eval) == 0
    assert _train("fcn16s_demo", paths["fcn16s_demo"], "--init-from",
                  str(paths["fcn32s_demo"]), *no_eval) == 0  # fmt: skip
    assert _train("fcn8s_demo", paths["fcn8s_demo"], "--init-from",
                  str(paths["fcn16s_demo"]), *no_eval) == 0  # fmt: skip
    assert _train("unet_demo", paths["unet_demo"], "--eval-frames", "1") == 0  # + evaluation
    log = capsys.readouterr().out
    assert (f"initialised all fcn32s_demo weights from {paths['fcn32s_demo']}; "
            "new: score_pool4, upscore2 (bilinear / zero init)") in log  # fmt: skip
    assert "new: score_pool3, upscore_pool4" in log
    for name, path in paths.items():  # the pipeline's loader reads what training wrote
        loaded = resolve_weights(name, str(path))
        assert tuple(loaded.class_names) == PANOPTIC_CLASS_NAMES and not loaded.untrained
        assert loaded.meta["scene_kinds"] == ["panoptic"]
        assert loaded.meta["train_command"].startswith(f"{PROG} --model {name}")
        assert not build_model(loaded).training
    meta = {name: resolve_weights(name, str(path)).meta for name, path in paths.items()}
    assert meta["fcn8s_demo"]["init_from"] == str(paths["fcn16s_demo"])
    assert meta["unet_demo"]["accuracy"]["eval_frames"] == [0]
    # the paper's order only: a finer net cannot initialise a coarser one
    assert _train("fcn16s_demo", tmp_path / "x.pt", "--init-from", str(paths["fcn8s_demo"])) == 2
    assert "cannot initialise fcn16s_demo from the finer fcn8s_demo" in capsys.readouterr().err


@pytest.mark.skipif(
    not (WEIGHTS / "maskrcnn_demo.pt").is_file(), reason="no maskrcnn_demo checkpoint"
)
def test_fcn32s_can_start_from_the_demo_resnet() -> None:
    task = T.get_task("fcn32s_demo")
    model = task.build()
    note = task.init_from(model, WEIGHTS / "maskrcnn_demo.pt")
    body = model.backbone.state_dict()
    assert note.startswith(f"{len(body)} ResNet body tensors of maskrcnn_demo")
    src = torch.load(WEIGHTS / "maskrcnn_demo.pt", map_location="cpu", weights_only=True)
    assert torch.equal(body["stem.0.weight"], src["state_dict"]["backbone.body.stem.0.weight"])


@pytest.mark.skipif(not HAS_TRT_GPU, reason="needs TensorRT and a CUDA GPU")
@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("name", NEW)
def test_tensorrt_parity_with_pytorch(name: str, tmp_path, monkeypatch) -> None:
    from test_onnxruntime_backend import scene

    from engines.backends import create_backend
    from engines.engine_cache import CACHE_ENV
    from engines.transform import prepare_batch

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    opts = {"device": "cuda", "min_size": 128, "max_size": 192}
    ref = create_backend(name, "random", backend="pytorch", **opts)
    trt = create_backend(name, "random", backend="tensorrt", precision="fp32", **opts)
    batch, sizes = prepare_batch([scene(120, 200, 5)], ref.spec, "cuda")
    a, b = ref.infer(batch, sizes)[0], trt.infer(batch, sizes)[0]
    assert float((a.class_map == b.class_map).float().mean()) >= 0.995


def test_scene_kinds_alternate_by_a_fixed_rule_and_bad_kinds_fail(capsys) -> None:
    from pipeline.training.data import batch_plan, scene_kind_of

    plan = batch_plan(0, 3, 6, [(96, 72)])
    assert batch_plan(0, 3, 6, [(96, 72)]) == plan  # the kinds draw nothing from the generator
    kinds = [scene_kind_of(("panoptic", "default"), s, i) for s, i, _ in plan]
    assert kinds == [("panoptic", "default")[(s + i) % 2] for s, i, _ in plan]
    assert scene_kind_of("default", 5, 6) == "default"
    with pytest.raises(SystemExit) as err:
        train_main(["--model", "maskrcnn_demo", "--out", "x.pt", "--scenes", "default,forest"])
    assert err.value.code == 2 and "scene kinds must be among" in capsys.readouterr().err


def test_float16_storage_halves_the_file_and_keeps_the_outputs(tmp_path) -> None:
    from pipeline.training.checkpoints import store_half

    path = tmp_path / "fcn32s.pt"
    assert _train("fcn32s_demo", path, "--eval-frames", "0") == 0
    full = build_model(resolve_weights("fcn32s_demo", str(path)))
    size = path.stat().st_size
    store_half(path)
    half = build_model(resolve_weights("fcn32s_demo", str(path)))
    assert path.stat().st_size < 0.6 * size and resolve_weights("fcn32s_demo", str(path)).meta["stored_as"] == "float16"
    assert next(half.parameters()).dtype == torch.float32  # stored small, run in float32
    x = torch.randn(1, 3, 72, 96)
    with torch.no_grad():
        a, b = full(x)["out"], half(x)["out"]
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.99
    assert torch.allclose(a, b, atol=0.05)
