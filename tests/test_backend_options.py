"""Backend options: the shared dataclasses, ``model.backend_options`` in the config, and that
what is configured reaches the backend (or fails with one line before anything runs).

Fast: validation tables, option names, a recording stand-in for ``create_backend``; two
real backends (ONNX Runtime, OpenVINO) on the small ``fcn_demo`` model at a tiny size.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import yaml

from engines.backends import DetectionOptions, ModelOptions, create_backend
from engines.backends.onnxruntime_backend import OnnxRuntimeBackend
from engines.backends.openvino_backend import OpenVINOBackend
from engines.backends.options import (
    DEFAULT_CALIBRATION_FRAMES,
    DEFAULT_CALIBRATION_SOURCE,
    check_option_names,
    known_options,
)
from engines.backends.tensorrt_backend import TensorRTBackend
from engines.backends.torch_backend import TorchBackend
from engines.engine_cache import CACHE_ENV
from pipeline import inference
from pipeline.config import (
    BACKEND_OPTION_TAKERS,
    BACKEND_PRECISIONS,
    ModelConfig,
    PipelineConfig,
    apply_overrides,
    config_from_dict,
    load_config,
)
from pipeline.errors import ConfigError, ModelError

BACKEND_CLASSES = {
    "pytorch": TorchBackend,
    "onnxruntime": OnnxRuntimeBackend,
    "openvino": OpenVINOBackend,
    "tensorrt": TensorRTBackend,
}
SMALL = {"name": "fcn_demo", "weights": "random", "min_size": 64, "max_size": 96}


@pytest.fixture(scope="module")
def own_cache(tmp_path_factory):
    """Exports made by this module's real backends go to a cache root of its own."""
    patch = pytest.MonkeyPatch()
    patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("backend-options-cache")))
    yield
    patch.undo()


# --------------------------------------------------------------------------- the dataclasses


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (
            lambda: DetectionOptions(box_score_thresh=1.5),
            "box_score_thresh must be a number from 0 to 1",
        ),
        (
            lambda: DetectionOptions(box_nms_thresh=-0.1),
            "box_nms_thresh must be a number from 0 to 1",
        ),
        (lambda: DetectionOptions(box_score_thresh="0.3"), "box_score_thresh must be a number"),
        (
            lambda: DetectionOptions(box_detections_per_img=0),
            "box_detections_per_img must be at least 1",
        ),
        (
            lambda: DetectionOptions(rpn_pre_nms_top_n_test=2.5),
            "rpn_pre_nms_top_n_test must be an integer",
        ),
        (
            lambda: DetectionOptions(rpn_post_nms_top_n_test=True),
            "rpn_post_nms_top_n_test must be an integer",
        ),
        (lambda: ModelOptions(num_classes=0), "num_classes must be at least 1"),
        (lambda: ModelOptions(seed=1.0), "seed must be an integer"),
        (lambda: ModelOptions(min_size=0), "min_size must be at least 1"),
        (
            lambda: ModelOptions(min_size=200, max_size=100),
            "max_size (100) is below min_size (200)",
        ),
        (lambda: ModelOptions(threads=0), "threads must be at least 1"),
        (lambda: ModelOptions(progress="yes"), "progress must be true or false"),
        (
            lambda: ModelOptions(detection={"box_score_thresh": 0.3}),
            "detection must be a DetectionOptions",
        ),
        (lambda: ModelOptions.from_flat({"box_thresh": 0.3}), "unknown option 'box_thresh'"),
    ],
)
def test_bad_option_values_fail_naming_the_option(make, fragment) -> None:
    with pytest.raises(ModelError) as err:
        make()
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_options_are_frozen_normalised_and_flat() -> None:
    det = DetectionOptions(box_score_thresh=0, box_detections_per_img=np.int64(5))
    assert det.box_score_thresh == 0.0 and isinstance(det.box_score_thresh, float)
    assert det.box_detections_per_img == 5 and type(det.box_detections_per_img) is int
    assert det == DetectionOptions(box_score_thresh=0.0, box_detections_per_img=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        det.box_score_thresh = 0.5  # type: ignore[misc]
    defaults = ModelOptions()
    assert (
        defaults.seed is None
        and defaults.threads is None
        and defaults.detection == DetectionOptions()
    )
    opts = ModelOptions.from_flat({"min_size": 96, "box_score_thresh": 0.3, "threads": 2})
    assert opts.min_size == 96 and opts.threads == 2 and opts.detection.box_score_thresh == 0.3
    assert set(opts.flat()) == set(ModelOptions.names())
    assert ModelOptions.from_flat(opts.flat()) == opts  # flat and back: nothing lost
    # flat keywords replace fields of a given base, detection settings included
    merged = ModelOptions.from_flat({"box_nms_thresh": 0.4}, base=opts)
    assert merged.detection == DetectionOptions(box_score_thresh=0.3, box_nms_thresh=0.4)
    assert merged.min_size == 96


def test_every_backend_takes_the_shared_options_and_its_own() -> None:
    shared = set(ModelOptions.names())
    for name, cls in BACKEND_CLASSES.items():
        known = known_options(cls)
        assert shared <= set(known), name
        assert "model_options" in known, name
    assert "tensorrt_ep" in known_options(OnnxRuntimeBackend)
    assert "tensorrt_ep" not in known_options(OpenVINOBackend)
    assert "precision" in known_options(OpenVINOBackend) and "precision" in known_options(
        TensorRTBackend
    )
    assert "precision" not in known_options(TorchBackend)
    with pytest.raises(ModelError) as err:
        check_option_names("onnxruntime", OnnxRuntimeBackend, {"min_size": 96, "bogus": 1})
    message = str(err.value)
    assert message.startswith(
        "unknown option 'bogus' for backend onnxruntime (known: num_classes, seed, "
    )
    assert "box_score_thresh" in message and "tensorrt_ep" in message


def test_the_config_table_matches_what_the_backends_take() -> None:
    """``model.backend_options`` is checked against a table in the config (which imports no
    engines); it must say exactly what the constructors take."""
    for key, takers in BACKEND_OPTION_TAKERS.items():
        for name, cls in BACKEND_CLASSES.items():
            assert (key in known_options(cls)) == (name in takers), (key, name)
    for name, cls in BACKEND_CLASSES.items():
        has_option = "precision" in known_options(cls)
        assert has_option == (BACKEND_PRECISIONS[name] != ("fp32",)), name
        assert "fp32" in BACKEND_PRECISIONS[name]


def test_create_backend_checks_options_before_loading() -> None:
    with pytest.raises(ModelError, match="unknown option 'bogus' for backend pytorch"):
        create_backend("fcn_demo", "random", bogus=1)
    with pytest.raises(ModelError, match="box_score_thresh must be a number from 0 to 1"):
        create_backend("fcn_demo", "random", box_score_thresh=2)
    with pytest.raises(ModelError, match="unknown option 'precision' for backend pytorch"):
        create_backend("fcn_demo", "random", precision="fp32")


def test_a_whole_model_options_and_flat_overrides() -> None:
    base = ModelOptions(min_size=64, max_size=96)
    backend = create_backend("fcn_demo", "random", model_options=base)
    assert (backend.spec.min_size, backend.spec.max_size) == (64, 96)
    assert backend.model_options == base
    backend = create_backend("fcn_demo", "random", model_options=base, min_size=80)
    assert (backend.spec.min_size, backend.spec.max_size) == (80, 96)
    with pytest.raises(ModelError, match="model_options must be a ModelOptions"):
        create_backend("fcn_demo", "random", model_options={"min_size": 64})


# --------------------------------------------------------------------------- the config


def _model(backend: str, **options) -> str:
    return yaml.safe_dump({"model": {"backend": backend, "backend_options": options}})


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        (_model("openvino", precision="fp8"), "model.backend_options.precision"),
        (
            _model("pytorch", precision="int8"),
            "model.backend_options: Value error, precision int8 runs on backend openvino or tensorrt, not pytorch",
        ),
        (
            _model("onnxruntime", precision="int8"),
            "precision int8 runs on backend openvino or tensorrt, not onnxruntime",
        ),
        (
            _model("openvino", precision="fp16"),
            "precision fp16 runs on backend tensorrt, not openvino",
        ),
        (_model("auto", precision="int8"), "precision needs a fixed model.backend, not auto"),
        (_model("openvino", bogus=1), "unknown key 'model.backend_options.bogus'"),
        (_model("pytorch", threads=0), "model.backend_options.threads"),
        (
            _model("openvino", tensorrt_ep=False),
            "tensorrt_ep is an option of backend onnxruntime, not openvino",
        ),
        (
            _model("auto", tensorrt_ep=False),
            "tensorrt_ep is an option of backend onnxruntime, not auto",
        ),
        (
            _model("pytorch", calibration_frames=8),
            "calibration_frames is an option of backend openvino or tensorrt",
        ),
        (
            _model("openvino", calibration_source="synthetic://?seed=3001"),
            "calibration_source is used by precision int8 only (precision is the default)",
        ),
        (
            _model("tensorrt", precision="fp16", calibration_frames=8),
            "calibration_frames is used by precision int8 only (precision is fp16)",
        ),
        (
            _model("tensorrt", precision="int8", calibration_frames=0),
            "model.backend_options.calibration_frames",
        ),
    ],
)
def test_bad_backend_options_name_the_key(tmp_path, yaml_text, fragment) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert fragment in str(err.value), str(err.value)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_good_backend_options(tmp_path) -> None:
    assert PipelineConfig().model.backend_options.given() == {}
    example = """
model:
  backend: openvino
  backend_options:
    precision: int8
    threads: 2
    calibration_source: "synthetic://?seed=3001&size=320x240&frames=16"
    calibration_frames: 16
"""
    path = tmp_path / "good.yaml"
    path.write_text(example)
    options = load_config(path).model.backend_options
    assert options.given() == {
        "precision": "int8",
        "threads": 2,
        "calibration_frames": 16,
        "calibration_source": "synthetic://?seed=3001&size=320x240&frames=16",
    }
    empty = config_from_dict({"model": {"backend_options": None}})
    assert empty.model.backend_options.given() == {}
    for backend, precisions in BACKEND_PRECISIONS.items():
        for precision in precisions:
            config_from_dict(
                {"model": {"backend": backend, "backend_options": {"precision": precision}}}
            )
    config_from_dict(
        {"model": {"backend": "onnxruntime", "backend_options": {"tensorrt_ep": False}}}
    )
    config_from_dict({"model": {"backend": "auto", "backend_options": {"threads": 3}}})


def test_switching_the_backend_rechecks_its_options() -> None:
    config = config_from_dict(
        {"model": {"backend": "openvino", "backend_options": {"precision": "int8"}}}
    )
    with pytest.raises(ConfigError, match="command line: model.backend_options: .*not pytorch"):
        apply_overrides(config, {"model.backend": "pytorch"})
    assert apply_overrides(config, {"model.backend": "tensorrt"}).model.backend == "tensorrt"


# --------------------------------------------------------------------------- reaching the backend


def test_options_for_the_backend() -> None:
    opts = inference.backend_options(
        ModelConfig(backend="onnxruntime", backend_options={"threads": 2}), 4
    )
    assert opts == {"threads": 2}  # the override wins over the budget
    assert inference.backend_options(ModelConfig(backend="onnxruntime"), 4) == {"threads": 4}
    assert inference.backend_options(ModelConfig(backend="onnxruntime"), None) == {}
    tuned = ModelConfig(
        backend="onnxruntime", backend_options={"tensorrt_ep": False, "precision": "fp32"}
    )
    assert inference.backend_options(tuned) == {"tensorrt_ep": False}  # fp32 is all ORT runs
    fp16 = ModelConfig(backend="tensorrt", device="cuda", backend_options={"precision": "fp16"})
    assert inference.backend_options(fp16) == {"precision": "fp16"}


def test_int8_calibration_frames_come_from_the_pipeline_side() -> None:
    model = ModelConfig(
        backend="openvino", backend_options={"precision": "int8", "calibration_frames": 3}
    )
    opts = inference.backend_options(model)
    frames = opts.pop("calibration")
    assert opts == {
        "precision": "int8",
        "calibration_source": DEFAULT_CALIBRATION_SOURCE,
        "calibration_frames": 3,
    }
    images = list(frames)  # the source is opened only now, and read no further than needed
    assert len(images) == 3
    assert all(im.dtype == np.uint8 and im.shape == (480, 640, 3) for im in images)
    uri = "synthetic://?seed=3001&size=160x120&frames=10"
    named = ModelConfig(
        backend="tensorrt",
        device="cuda",
        backend_options={"precision": "int8", "calibration_source": uri},
    )
    opts = inference.backend_options(named)
    assert (
        opts["calibration_source"] == uri
        and opts["calibration_frames"] == DEFAULT_CALIBRATION_FRAMES
    )
    assert [im.shape for im in opts["calibration"]] == [(120, 160, 3)] * 10


def test_open_backend_passes_everything(monkeypatch) -> None:
    seen: dict = {}

    def recording(model, weights, **kwargs):
        seen.update(kwargs, model=model, weights=weights)
        return "backend"

    monkeypatch.setattr(inference, "create_backend", recording)
    model = ModelConfig(
        **SMALL, backend="openvino", backend_options={"precision": "fp32", "threads": 1}
    )
    assert inference.open_backend(model, threads=2) == "backend"
    assert seen == {
        "model": "fcn_demo",
        "weights": "random",
        "backend": "openvino",
        "device": "cpu",
        "probe": None,
        "min_size": 64,
        "max_size": 96,
        "seed": 0,
        "precision": "fp32",
        "threads": 1,
    }


def test_an_option_the_backend_does_not_take_fails_at_the_start(monkeypatch) -> None:
    model = ModelConfig(backend="openvino")
    model.backend_options.tensorrt_ep = False  # after validation: only the run's start sees it
    monkeypatch.setattr(inference, "create_backend", lambda *a, **k: pytest.fail("backend opened"))
    with pytest.raises(
        ConfigError,
        match=r"^model.backend_options: tensorrt_ep is an option of backend onnxruntime, not openvino$",
    ):
        inference.open_backend(model)


def test_onnxruntime_gets_its_threads(own_cache) -> None:
    pytest.importorskip("onnxruntime")
    model = ModelConfig(
        **SMALL, backend="onnxruntime", backend_options={"threads": 1, "tensorrt_ep": False}
    )
    backend = inference.open_backend(model, threads=2)
    session = backend.graphs["semantic"].session
    assert session.get_session_options().intra_op_num_threads == 1
    assert backend.model_options.threads == 1 and backend.spec.min_size == 64
    backend.close()


@pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="openvino is not installed"
)
def test_openvino_gets_its_precision_and_threads(own_cache) -> None:
    model = ModelConfig(
        **SMALL, backend="openvino", backend_options={"precision": "fp32", "threads": 1}
    )
    backend = inference.open_backend(model)
    assert backend.precision == "fp32" and backend.compile_config["INFERENCE_NUM_THREADS"] == 1
    assert backend.compile_config["INFERENCE_PRECISION_HINT"] == "f32"
    backend.close()
