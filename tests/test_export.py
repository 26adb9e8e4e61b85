"""ONNX export of the model split: valid graphs, dynamic axes, manifest, TensorRT operator
coverage, CLI errors, and the export cache's staleness rules."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import onnx
import pytest
import torch
from onnx import numpy_helper

from engines import export as export_mod
from engines.export import (
    ensure_export,
    export_model,
    fold_frozen_batchnorm,
    graph_files,
    load_manifest,
    main,
    state_dict_sha256,
)
from engines.registry import get_model_entry
from engines.weights import build_model, resolve_weights
from pipeline.errors import ModelError

OPS_FILE = Path(__file__).resolve().parent.parent / "engines" / "data" / "tensorrt_onnx_ops.txt"
RESIZE_MODES = {"nearest", "linear"}
RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                 "align_corners"}  # fmt: skip


CLI_OUTPUT: list[str] = []


def tensorrt_ops() -> set[str]:
    lines = OPS_FILE.read_text(encoding="utf-8").splitlines()
    return {ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()}


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """Exports made once for this module: demo Mask R-CNN, demo FCN (argmax), random R50
    Mask R-CNN, random LR-ASPP (a torchvision semantic model with other operators), and the
    U-Net demo (transposed convs, skip concatenations)."""
    root = tmp_path_factory.mktemp("exports")
    out = {"maskrcnn_demo": root / "maskrcnn_demo"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the demo Mask R-CNN goes through the CLI
        code = main(
            [
                "--model",
                "maskrcnn_demo",
                "--weights",
                "random",
                "--out",
                str(root / "maskrcnn_demo"),
            ]
        )
    assert code == 0
    CLI_OUTPUT.extend(printed.getvalue().splitlines())
    for name, argmax in [
        ("fcn_demo", True),
        ("maskrcnn_resnet50_fpn", False),
        ("lraspp_mobilenet_v3_large", False),
        ("unet_demo", True),  # FCN-8s/16s/32s use no operator that U-Net and the demo FCN lack
    ]:
        out[name] = root / name
        export_model(name, "random", out[name], argmax=argmax)
    return out


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_cli_writes_graphs_and_manifest(exports) -> None:
    out = exports["maskrcnn_demo"]
    lines = CLI_OUTPUT
    for name in graph_files("instance"):
        assert (out / name).is_file()
        assert any(line.startswith(f"export: {name} (") for line in lines)
        assert any(line.startswith(f"export: {name} done in") for line in lines)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == "maskrcnn_demo" and manifest["task"] == "instance"
    assert manifest["opset"] == 17 and manifest["weights"]["tag"] == "random-s0"
    assert manifest["weights"]["sha256"] == state_dict_sha256(
        build_model(resolve_weights("maskrcnn_demo", "random"))
    )
    assert manifest["class_names"][0] == "background" and manifest["num_classes"] == 7
    entry = get_model_entry("maskrcnn_demo")
    assert manifest["input"]["min_size"] == entry.min_size and manifest["input"]["size_divisible"] == 32
    assert len(manifest["input"]["image_mean"]) == 3 and len(manifest["input"]["image_std"]) == 3
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["feature_names"] == ["0", "1", "2", "3", "pool"]
    dense = manifest["graphs"]["dense"]
    assert dense["inputs"] == [
        {"name": "images", "dtype": "float32", "shape": ["batch", 3, "height", "width"]}
    ]
    assert [o["name"] for o in dense["outputs"]][:2] == ["feat_0", "feat_1"]
    box = manifest["graphs"]["box_head"]
    assert box["inputs"][0]["shape"] == ["num_rois", 64, 7, 7]
    assert [o["shape"] for o in box["outputs"]] == [["num_rois", 7], ["num_rois", 28]]
    mask = manifest["graphs"]["mask_head"]
    assert mask["outputs"][0]["shape"] == ["num_rois", 7, 28, 28]
    assert load_manifest(out, verify_files=True)["model"] == "maskrcnn_demo"


def test_graphs_are_valid_with_symbolic_dims(exports) -> None:
    for name, directory in exports.items():
        manifest = load_manifest(directory, verify_files=True)
        for info in manifest["graphs"].values():
            model = onnx.load(str(directory / info["file"]))
            onnx.checker.check_model(model, full_check=True)
            opsets = {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")}
            assert opsets == {info["opset"]}
            # LR-ASPP is the one graph ONNX's converter cannot lower from 18 (kept, warned)
            assert info["opset"] == (18 if name.startswith("lraspp") else 17), name
            assert manifest["requested_opset"] == 17
            (inp,) = model.graph.input
            dims = _dims(inp)
            if inp.name == "images":
                assert dims == ["batch", 3, "height", "width"], name
            else:
                assert (
                    inp.name == "rois"
                    and dims[0] == "num_rois"
                    and all(isinstance(d, int) for d in dims[1:])
                ), name
            for out in model.graph.output:  # every output follows the input's dynamic axes
                assert isinstance(_dims(out)[0], str), (name, out.name)


def test_semantic_argmax_graph_outputs_uint8_class_map(exports) -> None:
    manifest = load_manifest(exports["fcn_demo"])
    assert manifest["argmax"] is True and manifest["task"] == "semantic"
    (out,) = manifest["graphs"]["semantic"]["outputs"]
    assert out == {"name": "class_map", "dtype": "uint8", "shape": ["batch", "height", "width"]}
    (logits,) = load_manifest(exports["lraspp_mobilenet_v3_large"])["graphs"]["semantic"]["outputs"]
    assert logits["name"] == "logits" and logits["shape"][1] == 21


def _constant_names(model: onnx.ModelProto) -> set[str]:
    names = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            names.update(node.output)
    return names


def test_every_operator_is_supported_by_tensorrt(exports) -> None:
    supported = tensorrt_ops()
    header = OPS_FILE.read_text(encoding="utf-8")
    assert "tensorrt-version: 10." in header and "Conv" in supported
    seen: set[str] = set()
    for name, directory in exports.items():
        for info in load_manifest(directory)["graphs"].values():
            model = onnx.load(str(directory / info["file"]))
            constants = _constant_names(model)
            outputs = {o.name for o in model.graph.output}
            for node in model.graph.node:
                where = f"{name}/{info['file']}: {node.op_type} {node.name}"
                assert node.domain in ("", "ai.onnx"), where
                assert node.op_type in supported, where
                seen.add(node.op_type)
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                if node.op_type == "Resize":
                    assert attrs.get("mode", b"nearest").decode() in RESIZE_MODES, where
                    coord = attrs.get("coordinate_transformation_mode", b"half_pixel").decode()
                    assert coord in RESIZE_COORDS, where
                    assert not attrs.get("antialias", 0), where
                if node.op_type in ("Squeeze", "Unsqueeze") or node.op_type.startswith("Reduce"):
                    if len(node.input) > 1 and node.input[1]:
                        assert node.input[1] in constants, f"{where}: axes not constant"
                if node.op_type == "Cast" and attrs.get("to") == onnx.TensorProto.UINT8:
                    assert set(node.output) <= outputs, f"{where}: UINT8 only as a graph output"
                if node.op_type == "MaxPool":
                    assert len(node.output) == 1, where
    assert {"Conv", "Resize", "Gemm", "ConvTranspose", "ArgMax"} <= seen


def test_frozen_batchnorm_folding_keeps_results() -> None:
    model = build_model(resolve_weights("maskrcnn_resnet50_fpn", "random"))
    body = model.backbone.body
    with torch.no_grad():  # give the frozen norms non-trivial statistics
        for module in body.modules():
            if type(module).__name__ == "FrozenBatchNorm2d":
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = body(x)
        assert fold_frozen_batchnorm(body) == 53
        got = body(x)
    assert not any(type(m).__name__ == "FrozenBatchNorm2d" for m in body.modules())
    for key in ref:
        scale = float(ref[key].abs().max())
        assert float((got[key] - ref[key]).abs().max()) <= 1e-4 * max(scale, 1.0), key


def test_unknown_model_and_bad_weights_are_clear_errors(tmp_path, capsys) -> None:
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        export_model("nope", "random", tmp_path / "x")
    assert main(["--model", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "error: unknown model 'nope'" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert (
        main(["--model", "maskrcnn_demo", "--weights", str(bad), "--out", str(tmp_path / "y")]) == 2
    )
    assert "cannot read weights file" in capsys.readouterr().err
    with pytest.raises(ModelError, match="weights file not found"):
        export_model("maskrcnn_demo", str(tmp_path / "missing.pt"), tmp_path / "z")
    with pytest.raises(ModelError, match="semantic models only"):
        export_model("maskrcnn_demo", "random", tmp_path / "w", argmax=True)
    with pytest.raises(ModelError, match="opset"):
        export_model("fcn_demo", "random", tmp_path / "v", opset=7)
    assert not (tmp_path / "w").exists() and not (tmp_path / "v").exists()


def test_load_manifest_rejects_broken_exports(exports, tmp_path) -> None:
    with pytest.raises(ModelError, match="manifest.json is missing"):
        load_manifest(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(ModelError, match="not a segstream ONNX export"):
        load_manifest(broken)
    src = exports["fcn_demo"]
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in src.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    load_manifest(copy, verify_files=True)
    model = onnx.load(str(copy / "semantic.onnx"))
    init = model.graph.initializer[0]
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += 1
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(copy / "semantic.onnx"))
    with pytest.raises(ModelError, match="does not match its manifest"):
        load_manifest(copy, verify_files=True)
    (copy / "semantic.onnx").unlink()
    with pytest.raises(ModelError, match="incomplete"):
        load_manifest(copy)


def test_ensure_export_reuses_and_redoes_when_stale(tmp_path, monkeypatch) -> None:
    """The cache rules of ensure_export, with a fast stand-in for the real export (which
    the other tests cover): it writes a well-formed export directory."""
    calls = []

    def fake_export(loaded, out_dir, *, weights_sha256, opset, argmax, **_kwargs):
        calls.append(opset)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        graph = out / "semantic.onnx"
        graph.write_bytes(f"graph for {weights_sha256}".encode())
        manifest = {
            "format": export_mod.MANIFEST_FORMAT, "version": export_mod.MANIFEST_VERSION,
            "model": loaded.model_name, "task": "semantic", "class_names": ["bg", "a"],
            "input": {}, "opset": opset, "requested_opset": opset, "argmax": argmax,
            "weights": {"sha256": weights_sha256, "tag": loaded.tag},
            "graphs": {"semantic": {"file": graph.name, "sha256": export_mod.file_sha256(graph)}},
        }  # fmt: skip
        (out / "manifest.json").write_text(json.dumps(manifest))
        return manifest

    monkeypatch.setattr(export_mod, "export_loaded", fake_export)
    target = tmp_path / "fcn"
    seed0 = resolve_weights("fcn_demo", "random:0")
    model0 = build_model(seed0)
    directory, manifest = ensure_export(seed0, model0, export_dir=target, argmax=True)
    assert directory == target and len(calls) == 1
    ensure_export(seed0, model0, export_dir=target, argmax=True)
    assert len(calls) == 1, "an up-to-date export is reused"
    seed1 = resolve_weights("fcn_demo", "random:1")
    _, manifest1 = ensure_export(seed1, build_model(seed1), export_dir=target, argmax=True)
    assert len(calls) == 2, "other weights: exported again"
    assert manifest1["weights"]["sha256"] != manifest["weights"]["sha256"]
    (target / "semantic.onnx").write_bytes(b"garbage")
    ensure_export(seed1, build_model(seed1), export_dir=target, argmax=True)
    assert len(calls) == 3, "a damaged graph: exported again"
    sha = manifest1["weights"]["sha256"]
    assert export_mod._stale_reason(manifest1, "fcn_demo", sha, 17, True) is None
    assert "argmax" in export_mod._stale_reason(manifest1, "fcn_demo", sha, 17, False)
    assert "opset" in export_mod._stale_reason(manifest1, "fcn_demo", sha, 18, True)
    assert "weights" in export_mod._stale_reason(manifest1, "fcn_demo", "0" * 64, 17, True)
    assert "export of" in export_mod._stale_reason(manifest1, "maskrcnn_demo", sha, 17, True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fcn.tmp")]
