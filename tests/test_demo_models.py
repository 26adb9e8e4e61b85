"""Demo models: torchvision-compatible structure, reproducible training, committed checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engines.models.demo import (
    FCN_DEMO_INPUT,
    MASKRCNN_DEMO_INPUT,
    build_fcn_demo,
    build_maskrcnn_demo,
)
from pipeline import training as T
from pipeline.synthetic import CLASS_NAMES, EVAL_SEED, TRAIN_SEEDS

WEIGHTS = Path(__file__).resolve().parents[1] / "engines" / "weights"
K = len(CLASS_NAMES)
TINY = {"min_size": 72, "max_size": 96}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_input_constants():
    for const in (MASKRCNN_DEMO_INPUT, FCN_DEMO_INPUT):
        assert 256 <= const["min_size"] <= const["max_size"]


def test_maskrcnn_demo_structure():
    from torchvision.models.detection import MaskRCNN

    torch.manual_seed(0)
    model = build_maskrcnn_demo(K).eval()
    assert isinstance(model, MaskRCNN)
    assert model.transform.min_size == (MASKRCNN_DEMO_INPUT["min_size"],)
    assert model.transform.max_size == MASKRCNN_DEMO_INPUT["max_size"]
    heads = model.roi_heads
    c = model.backbone.out_channels
    with torch.no_grad():
        box = heads.box_predictor(heads.box_head(torch.randn(5, c, 7, 7)))
        assert box[0].shape == (5, K) and box[1].shape == (5, 4 * K)
        masks = heads.mask_predictor(heads.mask_head(torch.randn(3, c, 14, 14)))
        assert masks.shape == (3, K, 28, 28)
        model.transform.min_size, model.transform.max_size = (64,), 96
        out = model([torch.rand(3, 64, 96)])[0]
    assert set(out) == {"boxes", "labels", "scores", "masks"}


def test_fcn_demo_structure():
    torch.manual_seed(0)
    model = build_fcn_demo(K).eval()
    assert model.aux_classifier is None
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert set(out) == {"out"} and out["out"].shape == (2, K, 64, 96)


@pytest.mark.parametrize("name", ["maskrcnn_demo", "fcn_demo", "unet_demo", "fcn8s_demo"])
def test_training_is_reproducible(name):
    sizes = [(96, 72)]

    def run(seed):
        torch.manual_seed(seed)
        model = T.build(name)
        opt = T.make_optimizer(model, 1e-3, 1e-4)
        T.train_steps(
            name,
            model,
            opt,
            seed=seed,
            start=0,
            stop=2,
            steps=2,
            batch_size=2,
            sizes=sizes,
            lr=1e-3,
            warmup=1,
            input_size=TINY,
        )
        return model.state_dict()

    a, b, c = run(5), run(5), run(6)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_cli_help():
    from pipeline.training.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0


@pytest.mark.parametrize("name", ["maskrcnn_demo", "fcn_demo"])
def test_cli_trains_evaluates_and_writes_a_card(name, tmp_path, capsys):
    from engines.weights import build_model, resolve_weights
    from pipeline.training.__main__ import main

    out = tmp_path / f"{name}.pt"
    argv = ["--model", name, "--seed", "1", "--out", str(out), "--steps", "1", "--batch-size", "1",
            "--size", "96x72", "--input", "72:96", "--eval-frames", "1", "--log-every", "1"]  # fmt: skip
    assert main(argv) == 0
    assert not out.with_name(out.name + ".state").exists()
    loaded = resolve_weights(name, str(out))  # the pipeline's loader reads what training wrote
    assert loaded.meta["train_command"].startswith("python -m pipeline.training --model")
    assert loaded.meta["accuracy"]["eval_frames"] == [0]
    build_model(loaded)
    assert main(["--card", str(out)]) == 0
    card = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "python -m pipeline.training --model" in card and "## Held-out accuracy" in card
    assert "[train] step 1/1" in capsys.readouterr().out


def test_training_data_never_uses_held_out_seed():
    plan = [p for step in range(50) for p in T.batch_plan(0, step, 4, [(96, 72)])]
    assert all(seed in TRAIN_SEEDS for seed, _, _ in plan)
    assert EVAL_SEED not in TRAIN_SEEDS
    assert T.batch_plan(0, 3, 4, [(96, 72)]) == T.batch_plan(0, 3, 4, [(96, 72)])


# ------------------------------------------------------------------ committed checkpoints


SHIPPED = ("maskrcnn_demo", "fcn_demo", "fcn32s_demo", "fcn16s_demo", "fcn8s_demo", "unet_demo")  # demo weights in the repo


def test_checkpoints_small_and_well_formed():
    paths = [WEIGHTS / f"{name}.pt" for name in SHIPPED]
    for p in paths:
        assert p.is_file(), f"missing demo checkpoint {p}"
        assert (WEIGHTS / f"{p.stem}.md").is_file(), f"missing model card for {p.name}"
    every = list(WEIGHTS.glob("*.pt"))  # whatever else is there counts too
    assert sum(p.stat().st_size for p in every) <= 25 * 1024 * 1024, [p.name for p in every]
    for p in paths:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        assert ckpt["format"] == "segstream-checkpoint" and ckpt["version"] == 1
        assert ckpt["model"] == p.stem
        assert ckpt["class_names"] == list(T.get_task(p.stem).class_names)
        for key in ("train_command", "data_seed", "steps", "train_time_s", "torch", "accuracy"):
            assert key in ckpt["meta"], key
        model = T.build(p.stem)
        model.load_state_dict(ckpt["state_dict"])


def test_checkpoints_load_through_the_registry():
    weights = pytest.importorskip("engines.weights")
    for name in ("maskrcnn_demo", "fcn_demo"):
        loaded = weights.resolve_weights(name, "demo")
        assert tuple(loaded.class_names) == CLASS_NAMES and not loaded.untrained
        model = weights.build_model(loaded)
        assert not model.training


@pytest.fixture(scope="module")
def held_out():
    # A few frames of the held-out scene, spread over a minute (seed 7 is never trained on).
    return T.held_out_frames(EVAL_SEED, (640, 480), range(45, 1800, 225))


def test_maskrcnn_demo_held_out_accuracy(held_out):
    name, model, _ = T.load_checkpoint(WEIGHTS / "maskrcnn_demo.pt")
    acc = T.evaluate_frames(name, model, held_out)
    assert acc["mask_AP"] >= 0.75, acc
    assert acc["mask_AP50"] >= 0.95, acc


def test_fcn_demo_held_out_accuracy(held_out):
    name, model, _ = T.load_checkpoint(WEIGHTS / "fcn_demo.pt")
    acc = T.evaluate_frames(name, model, held_out)
    assert acc["mean_iou"] >= 0.90, acc


def test_maskrcnn_demo_holds_on_scenes_with_stuff():
    # fine-tuned on both scene kinds: a textured background no longer hides the shapes
    frames = T.held_out_frames(EVAL_SEED, (640, 480), range(45, 1800, 225), "panoptic")
    name, model, _ = T.load_checkpoint(WEIGHTS / "maskrcnn_demo.pt")
    acc = T.evaluate_frames(name, model, frames)
    assert acc["mask_AP"] >= 0.6 and acc["mask_AP50"] >= 0.8, acc


def test_fcn_skip_nets_keep_the_papers_order_on_held_out_frames():
    # the FCN paper's finding on our scenes: finer skips, better maps (FCN-8s > 16s > 32s)
    frames = T.held_out_frames(EVAL_SEED, (640, 480), range(45, 1800, 225), "panoptic")
    scores = {}
    for name in ("fcn32s_demo", "fcn16s_demo", "fcn8s_demo"):
        loaded_name, model, _ = T.load_checkpoint(WEIGHTS / f"{name}.pt")
        scores[name] = T.evaluate_frames(loaded_name, model, frames)["pixel_accuracy"]
    assert scores["fcn8s_demo"] > scores["fcn16s_demo"] > scores["fcn32s_demo"] >= 0.85, scores
