"""TensorRT backend, engine builds and the engine cache.

TensorRT and a GPU are absent on CI: there the clear errors, the cache logic (with a fake
builder function), the profile shapes, the calibration frames and the build flow against
a stand-in ``tensorrt`` module are tested. Real builds and parity run only where
TensorRT and a CUDA GPU exist (skipped otherwise, with the reason).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import types
from pathlib import Path

import pytest
import torch

from engines import build as build_mod
from engines.backends import available_backends, create_backend
from engines.backends.tensorrt_backend import tensorrt_available
from engines.build import (
    BuildSettings,
    build_engines,
    calibration_batches,
    graph_profiles,
    parse_hw,
)
from engines.engine_cache import (
    CACHE_ENV,
    EngineCache,
    EngineKey,
    cache_root,
    onnx_cache_dir,
    tensorrt_cache_dir,
)
from engines.export import export_model, load_manifest
from engines.registry import get_model_entry
from engines.weights import resolve_weights
from pipeline.errors import ModelError
from pipeline.tools.build_engines import main as build_main
from pipeline.tools.build_engines import source_images

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
HAS_CUDA = torch.cuda.is_available()
needs_trt_gpu = pytest.mark.skipif(
    not (HAS_TENSORRT and HAS_CUDA), reason="needs TensorRT and a CUDA GPU"
)


def _key(**changes) -> EngineKey:
    base = {
        "onnx_sha256": "a" * 64,
        "tensorrt_version": "10.15.1",
        "gpu_name": "NVIDIA H100",
        "compute_capability": "9.0",
        "precision": "fp16",
        "profiles": ({"images": ([1, 3, 32, 32], [8, 3, 768, 1344], [8, 3, 1344, 1344])},),
        "extra": {},
    }
    base.update(changes)
    return EngineKey(**base)


# --------------------------------------------------------------------------- clear errors


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_tensorrt_backend_without_tensorrt_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match=r"TensorRT is not installed \(pip install tensorrt"):
        create_backend("maskrcnn_demo", "random", backend="tensorrt")
    with pytest.raises(ModelError, match="TensorRT is not installed"):
        create_backend("fcn_demo", "random", backend="tensorrt", device="cuda")
    assert build_main(["--onnx", "/nonexistent"]) == 2


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA GPU is present")
def test_no_gpu_is_named(monkeypatch) -> None:
    with pytest.raises(ModelError, match="NVIDIA GPU"):
        build_mod.require_cuda("cuda")
    with pytest.raises(ModelError, match="not on device 'cpu'"):
        build_mod.require_cuda("cpu")
    # with TensorRT importable (a stand-in) the missing GPU is what the backend reports
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTrt())
    with pytest.raises(ModelError, match="NVIDIA GPU"):
        create_backend("maskrcnn_demo", "random", backend="tensorrt", device="cuda")


def test_auto_skips_tensorrt_here(caplog, monkeypatch, tmp_path) -> None:
    if HAS_TENSORRT and HAS_CUDA:
        pytest.skip("TensorRT can run here")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert not tensorrt_available("cuda") and not tensorrt_available("cpu")
    assert "tensorrt" not in available_backends("cuda")
    with caplog.at_level(logging.INFO, logger="engines.backends"):
        backend = create_backend("fcn_demo", "random", backend="auto", min_size=96, max_size=128)
    first = available_backends("cpu")[0]  # the first installed after TensorRT
    assert backend.name == first != "tensorrt"
    assert [m for m in caplog.messages if m.startswith("backend: ")] == [f"backend: {first} (auto)"]


# --------------------------------------------------------------------------- engine cache


def test_engine_key_changes_with_each_input() -> None:
    base = _key()
    variants = [
        _key(onnx_sha256="b" * 64),
        _key(tensorrt_version="10.14.0"),
        _key(gpu_name="NVIDIA A100"),
        _key(compute_capability="8.0"),
        _key(precision="fp32"),
        _key(profiles=({"images": ([1, 3, 32, 32], [4, 3, 768, 1344], [8, 3, 1344, 1344])},)),
        _key(extra={"calibration": "synthetic://?frames=8"}),
    ]
    digests = {base.digest} | {v.digest for v in variants}
    assert len(digests) == len(variants) + 1
    assert _key().digest == base.digest  # deterministic
    assert json.loads(json.dumps(base.as_dict())) == base.as_dict()


def test_engine_cache_builds_once_and_rebuilds_stale(tmp_path) -> None:
    cache = EngineCache(tmp_path / "engines")
    builds: list[bytes] = []

    def builder(payload: bytes):
        def build() -> bytes:
            builds.append(payload)
            return payload

        return build

    key = _key()
    data, path, built = cache.get_or_build("dense", key, builder(b"engine-1"))
    assert built and data == b"engine-1" and path.read_bytes() == b"engine-1"
    sidecar = EngineCache.sidecar_path(path)
    meta = json.loads(sidecar.read_text())
    assert meta["key"] == key.as_dict() and meta["key_sha256"] == key.digest

    data, _, built = cache.get_or_build("dense", key, builder(b"never"))
    assert not built and data == b"engine-1" and len(builds) == 1  # from the cache

    other = _key(precision="fp32")
    _, other_path, built = cache.get_or_build("dense", other, builder(b"engine-fp32"))
    assert built and other_path != path  # another key: its own engine

    # a sidecar that does not match the key (foreign / hand-edited): rebuilt, not loaded
    meta["key"]["tensorrt_version"] = "9.0.0"
    sidecar.write_text(json.dumps(meta))
    assert cache.load("dense", key) is None
    data, _, built = cache.get_or_build("dense", key, builder(b"engine-2"))
    assert built and data == b"engine-2"

    # engine bytes that do not hash to the sidecar's value (truncated copy): rebuilt
    path.write_bytes(b"engine-2-truncated")
    assert cache.load("dense", key) is None
    _, _, built = cache.get_or_build("dense", key, builder(b"engine-3"))
    assert built

    # no sidecar at all: rebuilt; unreadable sidecar: rebuilt
    sidecar.unlink()
    assert cache.load("dense", key) is None
    cache.get_or_build("dense", key, builder(b"engine-4"))
    sidecar.write_text("{not json")
    assert cache.load("dense", key) is None

    # forced rebuild
    cache.store("dense", key, b"engine-5")
    _, _, built = cache.get_or_build("dense", key, builder(b"engine-6"), rebuild=True)
    assert built and cache.load("dense", key) == b"engine-6"
    assert builds == [b"engine-1", b"engine-fp32", b"engine-2", b"engine-3", b"engine-4",
                      b"engine-6"]  # fmt: skip


def test_cache_locations(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "root"))
    assert cache_root() == tmp_path / "root"
    assert (
        onnx_cache_dir("maskrcnn_demo", "random-s0")
        == tmp_path / "root/onnx/maskrcnn_demo-random-s0"
    )
    assert tensorrt_cache_dir("fcn_demo", "ab/cd") == tmp_path / "root/tensorrt/fcn_demo-ab_cd"
    monkeypatch.delenv(CACHE_ENV)
    assert cache_root() == Path.home() / ".cache" / "segstream"


# --------------------------------------------------------------------------- profiles


def _manifest(task: str = "instance", min_size: int = 800, max_size: int = 1333) -> dict:
    images = {"name": "images", "dtype": "float32", "shape": ["batch", 3, "height", "width"]}
    graphs = {
        "dense": {"inputs": [images]},
        "box_head": {"inputs": [{"name": "rois", "dtype": "float32", "shape": ["num_rois", 256, 7, 7]}]},
        "mask_head": {"inputs": [{"name": "rois", "dtype": "float32", "shape": ["num_rois", 256, 14, 14]}]},
    } if task == "instance" else {"semantic": {"inputs": [images]}}  # fmt: skip
    return {"task": task, "graphs": graphs,
            "input": {"min_size": min_size, "max_size": max_size, "size_divisible": 32}}  # fmt: skip


def test_graph_profiles() -> None:
    manifest = _manifest()
    (dense,) = graph_profiles(manifest, "dense", BuildSettings(max_batch=8))
    lo, opt, hi = dense["images"]
    assert lo == [1, 3, 32, 32]
    assert opt == [8, 3, 768, 1344]  # a 1080p frame at 800/1333, padded to 32
    assert hi == [8, 3, 1344, 1344]  # portrait or landscape up to max_size
    profiles = graph_profiles(manifest, "dense", BuildSettings(max_batch=8, batch_profiles=(1, 4)))
    assert [(p["images"][0][0], p["images"][2][0]) for p in profiles] == [(1, 1), (2, 4), (5, 8)]
    custom = BuildSettings(max_batch=2, opt_batch=1, min_hw=(64, 64), opt_hw=(480, 640),
                           max_hw=parse_hw("720x1280"))  # fmt: skip
    (p,) = graph_profiles(manifest, "dense", custom)
    assert p["images"] == ([1, 3, 64, 64], [1, 3, 480, 640], [2, 3, 720, 1280])
    (box,) = graph_profiles(manifest, "box_head", BuildSettings(max_batch=4))
    assert box["rois"] == ([1, 256, 7, 7], [1000, 256, 7, 7], [4000, 256, 7, 7])
    (mask,) = graph_profiles(manifest, "mask_head", BuildSettings(max_batch=4, max_masks=64))
    assert mask["rois"][2] == [64, 256, 14, 14]
    (sem,) = graph_profiles(_manifest("semantic", 520, 2048), "semantic", BuildSettings())
    assert sem["images"][1][2:] == [544, 928] and sem["images"][2][2:] == [1056, 1056]
    with pytest.raises(ModelError, match="min <= opt <= max"):
        graph_profiles(manifest, "dense", BuildSettings(opt_hw=(2000, 2000)))
    assert parse_hw("800") == (800, 800) and parse_hw("768x1344") == (768, 1344)
    with pytest.raises(ValueError):
        parse_hw("big")
    with pytest.raises(ModelError, match="--calibration"):
        BuildSettings(precision="int8")
    with pytest.raises(ModelError, match="unknown precision"):
        BuildSettings(precision="fp8")


def test_calibration_batches_from_a_real_source() -> None:
    entry = get_model_entry("maskrcnn_demo")
    from engines.backends.torch_backend import build_spec

    spec = build_spec(entry, resolve_weights("maskrcnn_demo", "random"), min_size=96, max_size=128)
    uri = "synthetic://?size=160x120&frames=7&seed=3"
    batches = list(calibration_batches(source_images(uri), spec, 3, 100, name=uri))
    assert len(batches) == 2  # 7 frames -> two full batches of 3, the partial one dropped
    for b in batches:
        assert b.shape == (3, 3, 96, 128) and b.dtype == torch.float32
    assert float(batches[0].abs().sum()) > 0
    capped = list(calibration_batches(source_images("synthetic://?size=160x120&frames=7"), spec, 2, 4))
    assert len(capped) == 2
    with pytest.raises(ModelError, match="calibration none produced no frames"):
        list(calibration_batches(iter(()), spec, 2, 4, name="none"))


# --------------------------------------------------------------------------- build flow


class FakeTrt(types.ModuleType):
    """A stand-in for the ``tensorrt`` module: records what the build code asks of it."""

    def __init__(self, version: str = "10.15.1", parse_ok: bool = True) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls: list[tuple] = []
        fake = self

        class Logger:
            WARNING = 2

            def __init__(self, level):
                self.level = level

        class Flags:
            EXPLICIT_BATCH = 0

        class BuilderFlag:
            FP16 = "FP16"
            INT8 = "INT8"

        class MemoryPoolType:
            WORKSPACE = "WORKSPACE"

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (list(lo), list(opt), list(hi))

        class TimingCache:
            def __init__(self, blob):
                self.blob = bytes(blob)

            def serialize(self):
                return self.blob + b"+timing"

        class Config:
            def __init__(self):
                self.flags, self.profiles, self.int8_calibrator = set(), [], None
                self.timing = None
                self.calibration_profile = None

            def set_flag(self, flag):
                self.flags.add(flag)

            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("workspace", pool, size))

            def add_optimization_profile(self, profile):
                self.profiles.append(profile.shapes)

            def set_calibration_profile(self, profile):
                self.calibration_profile = profile.shapes

            def create_timing_cache(self, blob):
                return TimingCache(blob)

            def set_timing_cache(self, cache, ignore_mismatch):
                self.timing = cache

            def get_timing_cache(self):
                return self.timing

        class Parser:
            def __init__(self, network, logger):
                self.num_errors = 0 if parse_ok else 1

            def parse_from_file(self, path):
                fake.calls.append(("parse", Path(path).name))
                return parse_ok

            def get_error(self, i):
                return "In node 7 (Foo): UNSUPPORTED_NODE"

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(("network_flags", flags))
                return object()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                batches = 0
                if config.int8_calibrator is not None:
                    cal = config.int8_calibrator
                    assert cal.get_batch_size() == 2
                    while cal.get_batch(["images"]) is not None:
                        batches += 1
                    cal.write_calibration_cache(b"calibration-table")
                record = {"flags": sorted(config.flags), "profiles": config.profiles,
                          "calibration_batches": batches,
                          "calibration_profile": config.calibration_profile}  # fmt: skip
                fake.calls.append(("build", record))
                return json.dumps(record).encode()

        class Calibrator:
            def __init__(self):
                pass

        self.Logger = Logger
        self.NetworkDefinitionCreationFlag = Flags
        self.BuilderFlag = BuilderFlag
        self.MemoryPoolType = MemoryPoolType
        self.Builder = Builder
        self.OnnxParser = Parser
        self.IInt8EntropyCalibrator2 = Calibrator


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trt") / "maskrcnn_demo"
    export_model("maskrcnn_demo", "random", out, min_size=96, max_size=128)
    return out


@pytest.fixture
def fake_trt(monkeypatch):
    fake = FakeTrt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(build_mod, "require_cuda", lambda device="cuda": torch.device("cpu"))
    monkeypatch.setattr(build_mod, "gpu_identity", lambda device: ("Fake GPU", "9.0"))
    return fake


def test_build_flow_with_a_stand_in_tensorrt(fake_trt, demo_export, tmp_path) -> None:
    lines: list[str] = []
    settings = BuildSettings(precision="fp16", max_batch=2, workspace_gb=1)
    engines = build_engines(
        demo_export, settings, cache_dir=tmp_path / "eng", progress=lines.append
    )
    assert set(engines) == {"dense", "box_head", "mask_head"}
    assert ("network_flags", 0) in fake_trt.calls  # TensorRT 10: explicit batch is implicit
    builds = [c[1] for c in fake_trt.calls if c[0] == "build"]
    assert len(builds) == 3 and all(b["flags"] == ["FP16"] for b in builds)
    manifest = load_manifest(demo_export)
    dense = json.loads(engines["dense"].data)
    assert dense["profiles"] == [
        {k: [list(s) for s in v] for k, v in p.items()}
        for p in graph_profiles(manifest, "dense", settings)
    ]
    assert engines["box_head"].profiles[0]["rois"][2] == [2000, 64, 7, 7]
    timing = list((tmp_path / "eng").glob("timing-10.15.1-Fake_GPU.cache"))
    assert len(timing) == 1 and timing[0].read_bytes().endswith(b"+timing")
    assert any(line.startswith("build: dense engine (fp16") for line in lines)
    for engine in engines.values():
        assert engine.built and engine.path.is_file()
        assert EngineCache.sidecar_path(engine.path).is_file()

    fake_trt.calls.clear()
    again = build_engines(demo_export, settings, cache_dir=tmp_path / "eng")
    assert not any(c[0] == "build" for c in fake_trt.calls)  # all from the cache
    assert all(not e.built for e in again.values())
    assert again["dense"].data == engines["dense"].data

    fake_trt.__version__ = "10.16.0"  # another TensorRT: every engine is rebuilt
    rebuilt = build_engines(demo_export, settings, cache_dir=tmp_path / "eng")
    assert all(e.built for e in rebuilt.values())


def test_int8_build_calibrates_on_real_frames(fake_trt, demo_export, tmp_path) -> None:
    settings = BuildSettings(precision="int8", max_batch=2, calibration_batch=2,
                             calibration_frames=5,
                             calibration="synthetic://?size=160x120&frames=20",
                             calibration_images=lambda: source_images(
                                 "synthetic://?size=160x120&frames=20"))  # fmt: skip
    engines = build_engines(demo_export, settings, cache_dir=tmp_path / "eng")
    assert engines["dense"].precision == "int8"
    assert engines["box_head"].precision == engines["mask_head"].precision == "fp16"
    dense = json.loads(engines["dense"].data)
    assert dense["flags"] == ["FP16", "INT8"]
    assert dense["calibration_batches"] == 2  # 5 frames in batches of 2: two full batches
    assert dense["calibration_profile"]["images"][0] == [2, 3, 96, 128]
    assert list((tmp_path / "eng").glob("calib-*.cache"))


def test_cli_calibrates_int8_on_a_source(fake_trt, demo_export, tmp_path, capsys) -> None:
    # the CLI (above both layers) opens --calibration SOURCE; engines.build only sees frames
    args = ["--onnx", str(demo_export), "--precision", "int8", "--max-batch", "2",
            "--calibration", "synthetic://?size=160x120&frames=20", "--calibration-frames", "4",
            "--calibration-batch", "2", "--cache-dir", str(tmp_path / "eng")]  # fmt: skip
    assert build_main(args) == 0
    dense = json.loads(next((tmp_path / "eng").glob("dense*.engine")).read_bytes())
    assert dense["calibration_batches"] == 2
    assert "dense:" in capsys.readouterr().out
    bad = ["--onnx", str(demo_export), "--precision", "int8", "--calibration", "/no/such.mp4",
           "--cache-dir", str(tmp_path / "bad")]  # fmt: skip
    assert build_main(bad) == 2  # a one-line error, no traceback
    assert capsys.readouterr().err.startswith("error: ")


def test_parser_errors_and_old_versions(monkeypatch, demo_export, tmp_path) -> None:
    monkeypatch.setattr(build_mod, "require_cuda", lambda device="cuda": torch.device("cpu"))
    monkeypatch.setattr(build_mod, "gpu_identity", lambda device: ("Fake GPU", "9.0"))
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTrt(parse_ok=False))
    with pytest.raises(ModelError, match="TensorRT cannot parse dense.onnx: In node 7"):
        build_engines(demo_export, BuildSettings(), cache_dir=tmp_path / "a")
    old = FakeTrt(version="8.6.1")
    monkeypatch.setitem(sys.modules, "tensorrt", old)
    build_engines(demo_export, BuildSettings(precision="fp32"), cache_dir=tmp_path / "b")
    assert ("network_flags", 1) in old.calls  # EXPLICIT_BATCH on TensorRT 8.x
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTrt(version="8.2.0"))
    with pytest.raises(ModelError, match="too old"):
        build_engines(demo_export, BuildSettings(), cache_dir=tmp_path / "c")


# --------------------------------------------------------------------------- real TensorRT


@needs_trt_gpu
@pytest.mark.gpu
@pytest.mark.tensorrt
def test_tensorrt_parity_with_pytorch(tmp_path, monkeypatch) -> None:
    from test_onnxruntime_backend import DEMO_OPTS, assert_instance_parity, scene

    from engines.transform import prepare_batch

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    ref = create_backend("maskrcnn_demo", "random", backend="pytorch", device="cuda", **DEMO_OPTS)
    trt_backend = create_backend("maskrcnn_demo", "random", backend="tensorrt", device="cuda",
                                 precision="fp32", max_batch=4, **DEMO_OPTS)  # fmt: skip
    batch, sizes = prepare_batch([scene(150, 200, 1), scene(150, 200, 2)], ref.spec, "cuda")

    def to_cpu(outs):
        return [type(o)(o.boxes.cpu(), o.scores.cpu(), o.labels.cpu(), o.mask_probs.cpu())
                for o in outs]  # fmt: skip

    assert_instance_parity(to_cpu(ref.infer(batch, sizes)), to_cpu(trt_backend.infer(batch, sizes)),
                           sizes)  # fmt: skip
    again = create_backend("maskrcnn_demo", "random", backend="tensorrt", device="cuda",
                           precision="fp32", max_batch=4, **DEMO_OPTS)  # fmt: skip
    assert again.engine_paths == trt_backend.engine_paths  # loaded from the engine cache

    sem_ref = create_backend("fcn_demo", "random", backend="pytorch", device="cuda",
                             min_size=128, max_size=192)  # fmt: skip
    sem = create_backend("fcn_demo", "random", backend="tensorrt", device="cuda", precision="fp32",
                         min_size=128, max_size=192)  # fmt: skip
    batch, sizes = prepare_batch([scene(120, 200, 5)], sem_ref.spec, "cuda")
    a, b = sem_ref.infer(batch, sizes)[0], sem.infer(batch, sizes)[0]
    assert float((a.class_map == b.class_map).float().mean()) >= 0.995


@needs_trt_gpu
@pytest.mark.gpu
@pytest.mark.tensorrt
def test_tensorrt_fp16_runs_and_batches(tmp_path, monkeypatch) -> None:
    from test_onnxruntime_backend import DEMO_OPTS, scene

    from engines.transform import prepare_batch

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    backend = create_backend("maskrcnn_demo", "random", backend="tensorrt", device="cuda",
                             precision="fp16", max_batch=2, **DEMO_OPTS)  # fmt: skip
    frames = [scene(150, 200, i) for i in range(5)]  # 5 > max_batch: run in chunks
    batch, sizes = prepare_batch(frames, backend.spec, "cuda")
    outs = backend.infer(batch, sizes)
    assert len(outs) == 5 and all(o.boxes.device.type == "cuda" for o in outs)
