"""Panoptic mode without processes: the config's two-model name, the published class list,
the messages that carry both outputs, the fused frame and its wire / JSON forms."""

from __future__ import annotations

import numpy as np
import pytest

from engines.backends.base import ModelSpec
from pipeline.cli import build_parser, overrides_from_args
from pipeline.config import PipelineConfig, apply_overrides, config_from_dict
from pipeline.errors import ConfigError
from pipeline.ops.paste import MaskCrop
from pipeline.panoptic import PanopticLabels, PanopticParams
from pipeline.postprocess import InstanceFrame, panoptic_from_output
from pipeline.results import FrameResult, Instance
from pipeline.stage_messages import (
    FrameHandle,
    MessageError,
    PostprocessedFrame,
    PreparedFrame,
    RawInstances,
    RawPanoptic,
    raw_output_from_parts,
)
from pipeline.supervision.planning import check_before_start


def _spec(name: str, classes: tuple[str, ...], task: str = "instance") -> ModelSpec:
    return ModelSpec(name, task, classes, f"{name}@t", False, 320, 640, (0.5,) * 3, (0.25,) * 3)


SHAPES = ("background", "circle", "square")
SCENE = ("background", "circle", "square", "sky", "road")


def test_model_name_with_plus_is_instance_and_semantic():
    config = config_from_dict({"model": {"name": "maskrcnn_demo+unet_demo"}})
    assert (config.model.name, config.model.semantic) == ("maskrcnn_demo", "unet_demo")
    same = config_from_dict({"model": {"name": "maskrcnn_demo", "semantic": "unet_demo"}})
    assert same.model == config.model
    for bad in ("+unet_demo", "maskrcnn_demo+", "a+b+c"):
        with pytest.raises(ConfigError, match="INSTANCE_MODEL\\+SEMANTIC_MODEL"):
            config_from_dict({"model": {"name": bad}})
    with pytest.raises(ConfigError, match="disagree"):
        config_from_dict({"model": {"name": "maskrcnn_demo+unet_demo", "semantic": "fcn8s_demo"}})


def test_cli_model_names_the_whole_set():
    base = config_from_dict({"model": {"name": "maskrcnn_demo", "semantic": "unet_demo"}})
    args = build_parser().parse_args(["--model", "maskrcnn_demo+fcn8s_demo", "--semantic-weights", "random"])
    both = apply_overrides(base, overrides_from_args(args))
    assert (both.model.semantic, both.model.semantic_weights) == ("fcn8s_demo", "random")
    one = apply_overrides(base, overrides_from_args(build_parser().parse_args(["--model", "fcn_demo"])))
    assert (one.model.name, one.model.semantic) == ("fcn_demo", None)  # one model: no fusion


@pytest.mark.parametrize(("model", "problem"), [
    ({"name": "fcn_demo+unet_demo"}, "model.name: panoptic mode needs an instance model"),
    ({"name": "maskrcnn_demo+maskrcnn_demo"}, "model.semantic: panoptic mode needs a semantic model"),
    ({"name": "maskrcnn_demo+deeplabv3_resnet50", "semantic_weights": "demo"},
     "model.semantic_weights: no demo weights for deeplabv3_resnet50"),
])
def test_bad_model_pairs_fail_before_start(tmp_path, model, problem):
    config = config_from_dict({"model": model, "output": {"video": None, "publish": None}})
    with pytest.raises(ConfigError) as err:
        check_before_start(config)
    assert problem in str(err.value)


def test_published_classes_keep_the_semantic_ids_and_append_unknown_things():
    labels = PanopticLabels.of(_spec("inst", ("background", "circle", "person", "square")),
                               _spec("sem", SCENE, "semantic"))
    assert labels.class_names == (*SCENE, "person")
    assert labels.thing_ids == (0, 1, 5, 2)
    assert labels.thing_classes == {1, 2, 5}
    assert labels.model_id == "inst@t+sem@t"
    assert labels.published_labels(np.array([3, 2, 1, 9])).tolist() == [2, 5, 1, 9]


def _instance_frame() -> InstanceFrame:
    """Two overlapping squares: the better one wins the overlap, the other keeps its rest."""
    a, b = np.ones((4, 4), bool), np.ones((4, 4), bool)
    instances = [Instance(0, 2, 0.9, (1, 1, 5, 5), {}), Instance(1, 1, 0.8, (3, 1, 7, 5), {})]
    return InstanceFrame(instances, [MaskCrop(1, 1, a), MaskCrop(3, 1, b)], np.zeros((2, 4), np.float32),
                         np.array([2, 1]), np.array([0.9, 0.8], np.float32))


def test_fused_frame_things_first_then_stuff_never_a_thing_class():
    labels = PanopticLabels.of(_spec("inst", SHAPES), _spec("sem", SCENE, "semantic"))
    class_map = np.full((8, 10), 3, np.uint8)  # sky
    class_map[6:, :] = 4  # road, 20 px
    class_map[0, 0] = 1  # a "circle" pixel of the semantic model: things never become stuff
    fused = panoptic_from_output(_instance_frame(), class_map, labels, PanopticParams(0.5, 0.5, 10))
    kinds = [(s.category_id, s.isthing, s.area) for s in fused.segments]
    assert kinds == [(2, True, 16), (1, True, 8), (3, False, 80 - 24 - 20 - 1), (4, False, 20)]
    assert fused.segment_map[0, 0] == 0  # void: the semantic model's thing pixel
    assert fused.segment_map[2, 4] == 1 and fused.segment_map[2, 6] == 2
    # a bigger stuff minimum drops the road
    fewer = panoptic_from_output(_instance_frame(), class_map, labels, PanopticParams(0.5, 0.5, 21))
    assert [s.category_id for s in fewer.segments] == [2, 1, 3]


def _handle(h: int = 8, w: int = 10) -> PreparedFrame:
    return PreparedFrame(FrameHandle("0", 3, 1, 2, h, w, 300, (1, 100), 5, 0), (3, 32, 32))


def test_raw_panoptic_round_trip_and_dispatch():
    rng = np.random.default_rng(1)
    message = RawPanoptic(_handle(), (32, 32), rng.random((2, 4), dtype=np.float32), rng.random(2, dtype=np.float32),
                          np.array([1, 2]), rng.random((2, 28, 28), dtype=np.float32), (24, 32),
                          rng.integers(0, 12, (24, 32), dtype=np.uint8))
    header, buffers = message.to_parts()
    back = raw_output_from_parts(header, [bytes(memoryview(b)) for b in buffers])
    assert isinstance(back, RawPanoptic) and back == message
    plain = RawInstances(message.frame, message.in_size, message.boxes, message.scores, message.labels,
                         message.mask_probs)
    assert type(raw_output_from_parts(*plain.to_parts())) is RawInstances
    header["map_shape"] = [24, 31]
    with pytest.raises(MessageError, match="class_map"):
        raw_output_from_parts(header, buffers)


@pytest.mark.parametrize("with_crops", [False, True])
def test_postprocessed_panoptic_round_trip(with_crops):
    segment_map = np.zeros((8, 10), np.uint32)
    segment_map[2:4, 2:4] = 1
    segments = ({"id": 1, "category_id": 2, "isthing": True, "score": 0.9, "area": 4, "bbox": [2, 2, 2, 2],
                 "instance": 0},)
    crops = {}
    if with_crops:
        rects, bits = PostprocessedFrame.pack_crops([MaskCrop(2, 2, np.ones((2, 2), bool))])
        crops = {"crop_rects": rects, "crop_bits": bits}
    message = PostprocessedFrame(_handle(), instances=[{"id": 0}], panoptic=segment_map, segments=segments, **crops)
    header, buffers = message.to_parts()
    back = PostprocessedFrame.from_parts(header, [bytes(memoryview(b)) for b in buffers])
    assert back == message and back.segments == segments
    with pytest.raises(MessageError, match="panoptic and segments go together"):
        PostprocessedFrame(_handle(), instances=[{"id": 0}], panoptic=segment_map)
    with pytest.raises(MessageError, match="panoptic"):
        PostprocessedFrame(_handle(), instances=[], panoptic=segment_map[:4], segments=())


def test_panoptic_result_on_the_wire_and_in_json():
    segment_map = np.array([[0, 1], [2, 2]], np.uint32)
    result = FrameResult("0", 1, 2, 2, "a+b", "panoptic", list(SCENE),
                         instances=[Instance(0, 1, 0.9, (0, 0, 2, 1), {}, track_id=7)], panoptic=segment_map,
                         segments=[{"id": 1, "category_id": 1, "isthing": True, "score": 0.9, "area": 1,
                                    "bbox": [1, 0, 1, 1], "instance": 0},
                                   {"id": 2, "category_id": 4, "isthing": False, "score": None, "area": 2,
                                    "bbox": [0, 1, 2, 1], "instance": None}])
    header, buffers = result.to_wire()
    pan = header["panoptic"]
    assert (pan["encoding"], pan["height"], pan["width"], pan["step"]) == ("uint32le", 2, 2, 8)
    assert np.frombuffer(buffers[pan["buffer"]], "<u4").reshape(2, 2).tolist() == segment_map.tolist()
    info = pan["segments_info"]
    assert [(s["class_name"], s["track_id"], s["isthing"]) for s in info] == [("circle", 7, True), ("road", None, False)]
    record = result.to_json()
    assert record["panoptic"]["segments_info"] == info and record["semantic"] is None
    plain = FrameResult("0", 1, 2, 2, "m", "instance", list(SHAPES))
    assert plain.to_wire()[0]["panoptic"] is None and plain.to_json()["panoptic"] is None


def test_default_config_is_not_panoptic():
    assert PipelineConfig().model.semantic is None


def test_subscriber_decodes_and_checks_the_panoptic_map():
    from pipeline import messages
    from pipeline.client import MalformedMessageError, decode_frame

    segment_map = np.arange(6, dtype=np.uint32).reshape(2, 3)
    result = FrameResult("0", 1, 3, 2, "a+b", "panoptic", list(SCENE), panoptic=segment_map,
                         segments=[{"id": k, "category_id": 3, "isthing": False, "score": None, "area": 1,
                                    "bbox": [0, 0, 1, 1], "instance": None} for k in range(1, 6)])
    header, buffers = result.to_wire()
    frame = decode_frame(messages.encode_envelope("0", header, buffers))
    np.testing.assert_array_equal(frame.segment_map, segment_map)
    assert [s["class_name"] for s in frame.segments] == ["sky"] * 5
    header["panoptic"]["step"] = 8  # rows of 2 pixels: the buffer no longer fits
    with pytest.raises(MalformedMessageError, match="panoptic"):
        decode_frame(messages.encode_envelope("0", header, buffers))


def test_panoptic_overlay_draws_stuff_lighter_than_things():
    from pipeline.ops.overlay import class_palette
    from pipeline.postprocess import STUFF_ALPHA, draw_panoptic

    labels = PanopticLabels.of(_spec("inst", SHAPES), _spec("sem", SCENE, "semantic"))
    class_map = np.full((64, 80), 3, np.uint8)  # sky everywhere the squares leave free
    fused = panoptic_from_output(_instance_frame(), class_map, labels, PanopticParams(0.5, 0.5, 10))
    palette = class_palette(len(labels.class_names))
    plain = np.zeros((64, 80, 3), np.uint8)
    draw_panoptic(plain, fused, labels.class_names, 0.5, palette, things=False)  # tracked runs: publish draws them
    expected = np.round(palette[3].astype(float) * 0.5 * STUFF_ALPHA)
    assert np.abs(plain[60, 75].astype(int) - expected).max() <= 2, (plain[60, 75], expected)
    assert (plain[2, 2] == 0).all()  # a thing's pixel: not stuff, and no thing drawn
    image = np.zeros_like(plain)
    draw_panoptic(image, fused, labels.class_names, 0.5, palette)
    assert (image[60, 75] == plain[60, 75]).all()  # stuff the same, away from the things
    assert (image[2, 2] != 0).any()  # the things are drawn


def test_one_prepared_input_serves_both_models_only_when_their_transforms_match():
    from dataclasses import replace

    from pipeline.inference import same_transform, semantic_model_config

    a = _spec("inst", SHAPES)
    assert same_transform(a, replace(a, name="sem", task="semantic", class_names=SCENE))
    for change in ({"min_size": 256}, {"max_size": 512}, {"image_mean": (0.4,) * 3}, {"size_divisible": 16}):
        assert not same_transform(a, replace(a, **change)), change
    model = config_from_dict({"model": {"name": "maskrcnn_demo+fcn8s_demo", "min_size": 600,
                                        "semantic_weights": "random", "backend": "onnxruntime"}}).model
    semantic = semantic_model_config(model)
    assert (semantic.name, semantic.weights, semantic.backend) == ("fcn8s_demo", "random", "onnxruntime")
    assert semantic.min_size is None and semantic.semantic is None  # its own input size; no recursion
    assert semantic_model_config(config_from_dict({}).model) is None
