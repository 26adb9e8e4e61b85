"""Weight resolution: checkpoints in both formats, torchvision names offline, random, demo."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from engines import weights as W
from engines.models.torchvision_models import coco_category_names, voc_category_names
from engines.registry import get_model_entry
from engines.weights import build_model, resolve_weights, save_checkpoint
from pipeline.errors import ModelError

LRASPP = "lraspp_mobilenet_v3_large"  # 3.2 M parameters: the cheap torchvision model here


def _same_state(model: nn.Module, reference: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    compared = 0
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(value, reference[key]), key
        compared += 1
    assert compared > 0


@pytest.fixture(scope="module")
def lraspp_reference() -> nn.Module:
    torch.manual_seed(123)
    return torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None
    )


# --------------------------------------------------------------------------- local checkpoints


def test_both_checkpoint_formats_load_the_same_state(tmp_path: Path, lraspp_reference) -> None:
    reference = lraspp_reference.state_dict()
    plain = tmp_path / "lraspp_plain.pth"
    torch.save(reference, plain)
    ours = save_checkpoint(
        tmp_path / "lraspp_ours.pt", LRASPP, lraspp_reference, voc_category_names(),
        meta={"note": "test"},
    )  # fmt: skip

    a = resolve_weights(LRASPP, str(plain))
    b = resolve_weights(LRASPP, ours)
    for loaded, path in ((a, plain), (b, ours)):
        assert loaded.class_names == voc_category_names()  # plain: from torchvision's meta
        assert loaded.num_classes == 21 and not loaded.untrained
        assert loaded.tag == W.file_tag(path) and len(loaded.tag) == 8
        assert loaded.model_id == f"{LRASPP}@{loaded.tag}"
        _same_state(build_model(loaded), reference)
    assert b.meta == {"note": "test"}
    assert a.tag != b.tag


def test_plain_state_dict_class_names_from_sidecar(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=4
    )
    path = tmp_path / "custom.pth"
    torch.save(model.state_dict(), path)
    # no sidecar: the count comes from the classifier shapes, names are generic
    assert resolve_weights(LRASPP, path).class_names == (
        "background",
        "class_1",
        "class_2",
        "class_3",
    )
    Path(f"{path}.classes.json").write_text(json.dumps(["bg", "road", "car", "person"]))
    loaded = resolve_weights(LRASPP, path, num_classes=4)
    assert loaded.class_names == ("bg", "road", "car", "person")
    _same_state(build_model(loaded), model.state_dict())
    Path(f"{path}.classes.json").write_text(json.dumps({"class_names": ["bg", "road"]}))
    with pytest.raises(ModelError, match=r"classes\.json lists 2 class names but .* has 4 classes"):
        resolve_weights(LRASPP, path)


def test_plain_torchvision_maskrcnn_with_custom_classes(tmp_path: Path) -> None:
    """A fine-tuned torchvision Mask R-CNN (BatchNorm2d, num_batches_tracked) fits our
    FrozenBatchNorm2d layout; the class count is read from the predictor."""
    torch.manual_seed(0)
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=5
    ).state_dict()
    path = tmp_path / "finetuned.pth"
    torch.save({"model": reference, "epoch": 3}, path)  # torchvision reference-script layout
    loaded = resolve_weights("maskrcnn_resnet50_fpn", path)
    assert loaded.num_classes == 5 and loaded.class_names[0] == "background"
    _same_state(build_model(loaded), reference)


def test_fcn_checkpoint_with_aux_head_loads_without_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.segmentation.fcn_resnet50(
        weights=None, weights_backbone=None, aux_loss=True
    )
    path = tmp_path / "fcn.pth"
    torch.save(model.state_dict(), path)
    loaded = resolve_weights("fcn_resnet50", path)
    assert not any(k.startswith("aux_classifier.") for k in loaded.state_dict)
    built = build_model(loaded)
    assert built.aux_classifier is None
    _same_state(built, model.state_dict())


def test_wrong_model_checkpoint_names_the_file_and_key(tmp_path: Path, lraspp_reference) -> None:
    plain = tmp_path / "lraspp.pth"
    torch.save(lraspp_reference.state_dict(), plain)
    with pytest.raises(
        ModelError,
        match=r"lraspp\.pth do not fit fcn_resnet50: missing key 'backbone\.conv1\.weight'",
    ):
        resolve_weights("fcn_resnet50", plain)

    ours = save_checkpoint(tmp_path / "ours.pt", LRASPP, lraspp_reference, voc_category_names())
    with pytest.raises(
        ModelError, match=r"ours\.pt is for model 'lraspp_mobilenet_v3_large', not 'fcn_demo'"
    ):
        resolve_weights("fcn_demo", ours)

    # right model, one tensor of the wrong shape
    from engines.models.demo import build_maskrcnn_demo

    state = build_maskrcnn_demo(7).state_dict()
    key = next(k for k in state if k.endswith("weight") and state[k].dim() == 4)
    state[key] = torch.zeros(1, 1, 1, 1)
    bad = save_checkpoint(tmp_path / "bad.pt", "maskrcnn_demo", state, [f"c{i}" for i in range(7)])
    with pytest.raises(
        ModelError, match=rf"bad\.pt do not fit maskrcnn_demo: key '{key}' has shape \[1, 1, 1, 1\]"
    ):
        resolve_weights("maskrcnn_demo", bad)

    extra = dict(lraspp_reference.state_dict(), **{"head.extra.weight": torch.zeros(2)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ModelError, match="unexpected key 'head.extra.weight'"):
        resolve_weights(LRASPP, tmp_path / "extra.pth")


def test_checkpoint_errors(tmp_path: Path, lraspp_reference) -> None:
    with pytest.raises(ModelError, match=r"^weights file not found: .*missing\.pt$"):
        resolve_weights(LRASPP, tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match=r"^cannot read weights file .*junk\.pt: "):
        resolve_weights(LRASPP, junk)
    torch.save(
        {"format": "segstream-checkpoint", "version": 2, "model": LRASPP}, tmp_path / "v2.pt"
    )
    with pytest.raises(ModelError, match="unsupported segstream checkpoint version 2"):
        resolve_weights(LRASPP, tmp_path / "v2.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ModelError, match="neither a segstream checkpoint nor a state_dict"):
        resolve_weights(LRASPP, tmp_path / "list.pt")
    ours = save_checkpoint(tmp_path / "ours.pt", LRASPP, lraspp_reference, voc_category_names())
    with pytest.raises(
        ModelError, match="num_classes 5 does not match checkpoint .* which has 21 classes"
    ):
        resolve_weights(LRASPP, ours, num_classes=5)


# --------------------------------------------------------------------------- torchvision names


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str, *args, **kwargs) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_torchvision_weights_offline_give_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _no_network(monkeypatch)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    for spec in ("COCO_V1", "DEFAULT", "default", "MaskRCNN_ResNet50_FPN_Weights.COCO_V1"):
        with pytest.raises(ModelError) as info:
            resolve_weights("maskrcnn_resnet50_fpn", spec)
        message = str(info.value)
        assert message.startswith(
            "cannot download weights 'COCO_V1' for maskrcnn_resnet50_fpn (no network?): "
            "place the file maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth in "
        )
        assert str(hub) in message and message.endswith("or pass --weights PATH")
        assert "\n" not in message


def test_torchvision_weight_names_are_checked() -> None:
    with pytest.raises(
        ModelError,
        match=r"unknown weights 'COCO_V9' for maskrcnn_resnet50_fpn \(available: COCO_V1, DEFAULT",
    ):
        resolve_weights("maskrcnn_resnet50_fpn", "COCO_V9")
    with pytest.raises(ModelError, match="expected MaskRCNN_ResNet50_FPN_V2_Weights"):
        resolve_weights("maskrcnn_resnet50_fpn_v2", "MaskRCNN_ResNet50_FPN_Weights.COCO_V1")
    with pytest.raises(ModelError, match="unknown weights 'COCO_V1' for fcn_demo"):
        resolve_weights("fcn_demo", "COCO_V1")
    with pytest.raises(ModelError, match="weights 'demo' exist only for the demo models"):
        resolve_weights("fcn_resnet50", "demo")
    with pytest.raises(ModelError, match="num_classes 3 does not match torchvision weights"):
        resolve_weights(LRASPP, "DEFAULT", num_classes=3)


def test_torchvision_weights_load_from_hub_cache_offline(
    tmp_path, monkeypatch, lraspp_reference
) -> None:
    """A file already in $TORCH_HOME/hub/checkpoints loads without network. torch checks the
    hash prefix in the file name only when it downloads, never for a cached file, so a file
    whose content does not hash to d234d4ea still loads."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _no_network(monkeypatch)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    url_name = torchvision.models.segmentation.LRASPP_MobileNet_V3_Large_Weights.DEFAULT.url
    assert url_name.endswith("/lraspp_mobilenet_v3_large-d234d4ea.pth")
    torch.save(lraspp_reference.state_dict(), hub / "lraspp_mobilenet_v3_large-d234d4ea.pth")

    loaded = resolve_weights(LRASPP, "DEFAULT")
    assert loaded.tag == "COCO_WITH_VOC_LABELS_V1" and not loaded.untrained
    assert loaded.model_id == f"{LRASPP}@COCO_WITH_VOC_LABELS_V1"
    assert loaded.class_names == voc_category_names()
    _same_state(build_model(loaded), lraspp_reference.state_dict())

    (hub / "lraspp_mobilenet_v3_large-d234d4ea.pth").write_bytes(b"corrupt")
    with pytest.raises(ModelError, match=r"^cannot read cached weights .*d234d4ea\.pth: "):
        resolve_weights(LRASPP, "COCO_WITH_VOC_LABELS_V1")


# --------------------------------------------------------------------------- random and demo


def test_random_weights_metadata() -> None:
    coco = resolve_weights("maskrcnn_resnet50_fpn", "random")
    assert coco.state_dict is None and coco.untrained and coco.seed == 0
    assert coco.tag == "random-s0" and coco.model_id == "maskrcnn_resnet50_fpn@random-s0"
    assert coco.class_names == coco_category_names() and len(coco.class_names) == 91
    assert coco.class_names[0] == "__background__" and "N/A" in coco.class_names
    custom = resolve_weights("fcn_resnet50", "random:7", num_classes=3)
    assert custom.class_names == ("background", "class_1", "class_2") and custom.tag == "random-s7"
    assert resolve_weights("fcn_resnet50", "random", seed=5).tag == "random-s5"
    from pipeline.synthetic import CLASS_NAMES

    assert resolve_weights("maskrcnn_demo", "random").class_names == tuple(CLASS_NAMES)


def test_random_build_is_seeded() -> None:
    a = build_model(resolve_weights("fcn_demo", "random", seed=3)).state_dict()
    b = build_model(resolve_weights("fcn_demo", "random:3")).state_dict()
    c = build_model(resolve_weights("fcn_demo", "random:4")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_demo_weights_missing_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(W, "DEMO_WEIGHTS_DIR", tmp_path)
    with pytest.raises(
        ModelError, match=r"demo weights for fcn_demo are missing: .*fcn_demo\.pt does not exist"
    ):
        resolve_weights("fcn_demo", "default")


def test_demo_weights_load_from_the_weights_dir(tmp_path, monkeypatch) -> None:
    from engines.models.demo import build_fcn_demo

    torch.manual_seed(0)
    model = build_fcn_demo(4)
    names = ["background", "a", "b", "c"]
    save_checkpoint(tmp_path / "fcn_demo.pt", "fcn_demo", model, names)
    monkeypatch.setattr(W, "DEMO_WEIGHTS_DIR", tmp_path)
    loaded = resolve_weights("fcn_demo", "demo")
    assert loaded.class_names == tuple(names) and loaded.tag == W.file_tag(tmp_path / "fcn_demo.pt")
    _same_state(build_model(loaded), model.state_dict())


@pytest.mark.parametrize("name", ["maskrcnn_demo", "fcn_demo"])
def test_shipped_demo_checkpoints(name: str) -> None:
    path = W.demo_weights_path(name)
    if not path.is_file():
        pytest.skip(f"{path} not trained yet")
    loaded = resolve_weights(name, "demo")
    assert not loaded.untrained and loaded.class_names[0] == "background"
    build_model(loaded)


def test_unknown_model() -> None:
    with pytest.raises(ModelError, match="unknown model 'resnet50'"):
        resolve_weights("resnet50", "random")
    assert get_model_entry(LRASPP).default_weights == "DEFAULT"
