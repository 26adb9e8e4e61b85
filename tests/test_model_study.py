"""The held-out model study (``pipeline.evaluation.model_study``) on one small clip per model:
its JSON, its refusals and skips, and that its figures are those of ``run_reference`` +
``evaluate_dir`` on the same clip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.weights import demo_weights_path
from pipeline.evaluate import evaluate_dir
from pipeline.evaluation import model_study, model_study_report
from pipeline.reference import run_reference
from pipeline.sinks.panoptic_png import frame_png_name, panoptic_folder, write_id_png

REPO = Path(__file__).resolve().parent.parent
PAIR = "maskrcnn_demo+fcn32s_demo"
MODELS = ["maskrcnn_demo", "fcn32s_demo", PAIR]
SKIPPED = "lraspp_mobilenet_v3_large"  # a torchvision model: it never has demo weights

pytestmark = pytest.mark.skipif(not demo_weights_path("maskrcnn_demo").is_file(), reason="no maskrcnn_demo weights")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.evaluation.model_study", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 2-step fcn32s_demo checkpoint, then the study on seed 7000 at 320x240, 2 frames."""
    tmp = tmp_path_factory.mktemp("model_study")
    ckpt = tmp / "fcn32s.pt"
    subprocess.run([sys.executable, "-m", "pipeline.training", "--model", "fcn32s_demo", "--seed", "1", "--out",
                    str(ckpt), "--steps", "2", "--batch-size", "2", "--size", "96x72", "--input", "72:96",
                    "--eval-frames", "0", "--threads", "1"], cwd=REPO, check=True, capture_output=True, timeout=300)
    proc = _cli("--models", *MODELS, SKIPPED, "--weights", f"fcn32s_demo={ckpt}", "--seeds", "7000",
                "--sizes", "320x240", "--frames", "2", "--clips", str(tmp / "clips"),
                "--json", str(tmp / "study.json"), "--markdown", str(tmp / "study.md"))
    assert proc.returncode == 0, proc.stderr
    return {"tmp": tmp, "ckpt": ckpt, "proc": proc, "study": json.loads((tmp / "study.json").read_text()),
            "markdown": (tmp / "study.md").read_text()}


def test_json_layout_and_summaries(ran: dict) -> None:
    study = ran["study"]
    assert {"command", "commit", "date", "machine", "seeds", "sizes", "frames", "fps", "held_out", "models",
            "skipped"} <= set(study)
    assert study["seeds"] == [7000] and study["sizes"] == ["320x240"] and study["frames"] == 2
    assert study["held_out"] is False and study["machine"]["cpu_count"] >= 1
    assert list(study["models"]) == MODELS
    tasks = {"maskrcnn_demo": "instance", "fcn32s_demo": "semantic", PAIR: "panoptic"}
    for name, entry in study["models"].items():
        assert {"task", "scene_kind", "model_ids", "weights", "clips", "summary", "seconds"} <= set(entry)
        assert entry["task"] == tasks[name] and entry["scene_kind"] == "panoptic"
        assert len(entry["clips"]) == 1 and entry["clips"][0]["clip"] == "panoptic/seed7000/320x240"
        assert entry["model_ids"] and all(i.startswith(name.split("+")[0]) for i in entry["model_ids"])
        for key, stat in entry["summary"].items():
            if key == "absent_class_share":
                assert 0 <= stat["mean"] <= stat["worst"] <= 1
            else:
                assert stat["worst"] <= stat["mean"], (name, key)
    assert study["models"][PAIR]["weights"] == {"maskrcnn_demo": "demo", "fcn32s_demo": str(ran["ckpt"])}
    assert set(study["models"]["maskrcnn_demo"]["summary"]) == {"mask_AP", "mask_AP50", "box_AP"}
    assert set(study["models"][PAIR]["summary"]) == {"PQ", "PQ_things", "PQ_stuff"}
    sem = study["models"]["fcn32s_demo"]
    pooled, clip = sem["pooled"], sem["clips"][0]["metrics"]
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou"):
        assert 0 <= pooled[key] <= 1
        assert pooled[key] == pytest.approx(clip[key], abs=1e-12)  # one clip: pooled = that clip
    assert pooled["pixels"] == 2 * 320 * 240
    assert {"sky", "wall", "grass", "road", "water"} <= set(pooled["per_class_iou"])  # stuff ids 7-11 scored
    assert sem["summary"]["absent_class_share"]["goal"] == 0.001


def test_progress_skip_and_markdown(ran: dict) -> None:
    err = ran["proc"].stderr.splitlines()
    assert [line for line in err if line.startswith("skip ")] == [
        f"skip {SKIPPED}: no demo weights at {demo_weights_path(SKIPPED)}"]
    assert ran["study"]["skipped"] == [{"model": SKIPPED, "reason": f"no demo weights at {demo_weights_path(SKIPPED)}"}]
    assert [line.split(":")[0] for line in err if line.startswith("[")] == [
        f"[{i}/3] {name} panoptic/seed7000/320x240" for i, name in enumerate(MODELS, 1)]
    md = ran["markdown"]
    assert "| pixel acc. | mean acc. | mean IU | f.w. IU | worst-clip mean IU |" in md
    assert "| fcn32s_demo | panoptic |" in md and "| maskrcnn_demo | panoptic |" in md and f"| {PAIR} |" in md
    assert md.count("Command: `python -m pipeline.evaluation.model_study --models") == 3
    assert md == model_study_report.render_markdown(ran["study"])


def test_figures_equal_run_reference_and_evaluate_dir(ran: dict) -> None:
    """The study's records and scores for a clip are run_reference's, scored by evaluate_dir."""
    clips, ckpt = ran["tmp"] / "clips", str(ran["ckpt"])
    clip = clips / "panoptic-7000-320x240-2f"
    for name, key, metric in (("maskrcnn_demo", ("segm", "AP"), "mask_AP"), ("fcn32s_demo", ("mean_iou",), "mean_iou"),
                              (PAIR, ("pq",), "PQ")):
        config = model_study.model_config(name, clip / "video.mp4", {"fcn32s_demo": ckpt})
        out = ran["tmp"] / "reference" / name / "results.jsonl"
        out.parent.mkdir(parents=True)
        records = []
        for result in run_reference(config):
            record = result.to_json()
            if result.panoptic is not None:
                record["panoptic"]["file_name"] = png = frame_png_name(result.stream, result.seq)
                write_id_png(panoptic_folder(out) / png, result.panoptic)
            records.append(json.loads(json.dumps(record)))
        out.write_text("".join(json.dumps(r) + "\n" for r in records))
        scored = evaluate_dir(clip, out)
        for k in key:
            scored = scored[k]
        assert ran["study"]["models"][name]["clips"][0]["metrics"][metric] == scored, name
        saved = (clips / "results" / name / "panoptic-7000-320x240-2f.jsonl").read_text().splitlines()
        assert [{**json.loads(line), "capture_ns": 0} for line in saved] == [{**r, "capture_ns": 0} for r in records]


def test_training_and_validation_seeds_are_refused(capsys: pytest.CaptureFixture) -> None:
    proc = _cli("--models", "maskrcnn_demo", "--seeds", "7000", "1500", "--frames", "2")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: seed 1500 is a training seed (1000-1999); held-out seeds are 7000-7009\n"
    assert model_study.main(["--seeds", "6500", "--frames", "2"]) == 2
    assert capsys.readouterr().err == (
        "error: seed 6500 is a validation seed (6000-6999); held-out seeds are 7000-7009\n")


def test_pooling_absent_share_and_summaries() -> None:
    """Pooled scores come from the summed confusion (not the mean of the clips'); worst is the
    min over clips (the max for the absent-class share)."""
    one, two = np.array([[9, 1], [0, 0]]), np.array([[0, 0], [2, 8]])  # class 1 absent from clip one, 0 from two
    assert model_study.absent_share(one) == (0.1, 1) and model_study.absent_share(two) == (0.2, 0)
    assert model_study.absent_share(np.array([[5, 0], [1, 4]])) == (0.0, None)
    pooled = model_study.pooled_scores([one, two], ["background", "circle"])
    assert pooled["pixel_accuracy"] == pytest.approx(17 / 20)
    assert pooled["mean_iou"] == pytest.approx((9 / 12 + 8 / 11) / 2)
    assert pooled["per_class_iou"] == {"background": pytest.approx(9 / 12), "circle": pytest.approx(8 / 11)}
    rows = [{"metrics": {"mean_iou": v, "pixel_accuracy": v, "mean_accuracy": v, "frequency_weighted_iou": v,
                         "absent_class_share": a}} for v, a in ((0.2, 0.0), (0.6, 0.002), (float("nan"), 0.0))]
    summary = model_study.summarize("semantic", rows)
    assert summary["mean_iou"] == {"mean": pytest.approx(0.4), "worst": 0.2, "clips": 2}  # NaN clip left out
    assert summary["absent_class_share"]["worst"] == 0.002 and summary["absent_class_share"]["meets_goal"] is False
