"""Panoptic results on disk (``pipeline.sinks.panoptic_png``) and their scoring by
``python -m pipeline.evaluate`` (task ``panoptic``): the ground truth itself, written as
pipeline records + PNGs, scores PQ 1; a frame shift or a removed segment lowers it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.evaluate import evaluate_dir
from pipeline.evaluation.panoptic import evaluate_panoptic, read_id_png, rgb_to_id_map
from pipeline.evaluation.records import SCHEMA, EvaluationError
from pipeline.sinks.panoptic_png import (
    frame_png_name,
    id_map_to_rgb,
    panoptic_folder,
    write_id_png,
)

REPO = Path(__file__).resolve().parent.parent
FRAMES = 6


@pytest.fixture(scope="module")
def gt_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("panoptic_gt")
    cmd = [sys.executable, "-m", "pipeline.synthetic", "--kind", "panoptic", "--seed", "5"]
    cmd += ["--frames", str(FRAMES), "--size", "320x240", "--out", str(out), "--quiet"]
    subprocess.run(cmd, check=True, cwd=REPO, timeout=120, capture_output=True)
    assert (out / "panoptic.json").is_file()
    return out


def _gt(gt_dir: Path) -> dict:
    return json.loads((gt_dir / "panoptic.json").read_text())


def _write_results(gt_dir, results: Path, *, seq_shift=0, drop=None, stream="0") -> Path:
    """The ground truth as panoptic records + PNGs (what the publish stage writes);
    ``drop(frame, segment) -> bool``: segments left out (their pixels become void)."""
    gt = _gt(gt_dir)
    names = ["background"] * (max(c["id"] for c in gt["categories"]) + 1)
    for c in gt["categories"]:
        names[c["id"]] = c["name"]
    lines = []
    for ann in gt["annotations"]:
        seq = ann["image_id"] + seq_shift
        ids = read_id_png(gt_dir / "panoptic" / ann["file_name"])
        segments = []
        for s in ann["segments_info"]:
            if drop is not None and drop(ann["image_id"], s):
                ids[ids == s["id"]] = 0
                continue
            seg = {"id": s["id"], "category_id": s["category_id"], "isthing": bool(s["isthing"])}
            seg |= {"class_name": names[s["category_id"]], "score": 1.0}
            seg |= {"area": s["area"], "bbox": s["bbox"]}
            if "track_id" in s:
                seg["track_id"] = s["track_id"]
            segments.append(seg)
        name = frame_png_name(stream, seq)
        write_id_png(panoptic_folder(results) / name, ids)
        h, w = ids.shape
        pan = {"height": h, "width": w, "file_name": name, "segments_info": segments}
        lines.append({
            "schema": SCHEMA, "version": {"major": 1, "minor": 0}, "stream": stream,
            "seq": seq, "width": w, "height": h, "model": "gt@0+gt@0", "task": "panoptic",
            "class_names": names, "instances": [], "semantic": None, "panoptic": pan,
        })  # fmt: skip
    with results.open("a") as fh:
        fh.writelines(json.dumps(rec) + "\n" for rec in lines)
    return results


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.evaluate", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ----------------------------------------------------------------------------- the sink


def test_panoptic_folder_and_png_names():
    assert panoptic_folder(Path("out/results.jsonl")) == Path("out/results.panoptic")
    assert panoptic_folder("out/results") == Path("out/results.panoptic")
    assert panoptic_folder("out/a.b.jsonl") == Path("out/a.b.panoptic")
    assert frame_png_name("0", 12) == "0/000012.png"
    assert frame_png_name("cam-1", 1234567) == "cam-1/1234567.png"


@pytest.mark.parametrize("stream", ["", "a/b", "a\\b", "..", "x..y", ".hidden", "/abs"])
def test_bad_stream_ids_rejected(stream):
    with pytest.raises(ValueError, match="stream id"):
        frame_png_name(stream, 0)


def test_negative_seq_rejected():
    with pytest.raises(ValueError):
        frame_png_name("0", -1)


@pytest.mark.parametrize("dtype", [np.uint32, np.int64, np.uint16])
def test_id_png_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(3)
    top = min(np.iinfo(dtype).max, (1 << 24) - 1)
    ids = rng.integers(0, top, size=(37, 53), endpoint=True).astype(dtype)
    ids[0, 0], ids[0, 1], ids[0, 2] = 0, top, 256 + 7
    path = tmp_path / "deep" / "er" / "f.png"
    write_id_png(path, ids)
    back = read_id_png(path)
    assert back.dtype == np.uint32 and back.shape == ids.shape
    np.testing.assert_array_equal(back, ids.astype(np.uint32))
    np.testing.assert_array_equal(rgb_to_id_map(id_map_to_rgb(ids)), ids.astype(np.uint32))
    assert id_map_to_rgb(np.array([[1 + 2 * 256 + 3 * 65536]]))[0, 0].tolist() == [1, 2, 3]
    write_id_png(path, np.zeros((37, 53), dtype=dtype))  # overwrite in place
    assert not read_id_png(path).any()
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.png"]  # no temporary left


@pytest.mark.parametrize("bad", [np.array([[1 << 24]]), np.array([[-1]]), np.zeros((2, 2, 3))])
def test_id_png_rejects_bad_maps(tmp_path, bad):
    with pytest.raises(ValueError):
        write_id_png(tmp_path / "x.png", bad)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------- evaluation


def test_ground_truth_as_results_scores_pq_one(gt_dir, tmp_path):
    results = _write_results(gt_dir, tmp_path / "results.jsonl")
    assert (tmp_path / "results.panoptic" / "0" / "000005.png").is_file()
    out = evaluate_dir(gt_dir, results)
    assert out["task"] == "panoptic" and out["frames"] == FRAMES
    assert out["frames_predicted"] == FRAMES and out["frames_missing"] == 0
    for part in ("all", "things", "stuff"):
        assert out[part]["n"] > 0
        assert (out[part]["pq"], out[part]["sq"], out[part]["rq"]) == pytest.approx((1, 1, 1))
    assert out["pq"] == pytest.approx(1.0)


def test_shift_by_one_frame(gt_dir, tmp_path):
    plain = _write_results(gt_dir, tmp_path / "plain.jsonl")
    with pytest.warns(UserWarning, match="not in the ground truth"):
        off = evaluate_dir(gt_dir, plain, shift=1)
    assert off["pq"] < 0.99 and off["frames_missing"] == 1
    late = _write_results(gt_dir, tmp_path / "late.jsonl", seq_shift=1)
    with pytest.warns(UserWarning, match="1 prediction record"):
        assert evaluate_dir(gt_dir, late)["pq"] < 0.99
    assert evaluate_dir(gt_dir, late, shift=1)["pq"] == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["things", "stuff"])
def test_removed_segment_lowers_pq(gt_dir, tmp_path, kind):
    isthing = kind == "things"
    first = next(
        s for s in _gt(gt_dir)["annotations"][2]["segments_info"] if bool(s["isthing"]) == isthing
    )
    results = _write_results(
        gt_dir, tmp_path / "r.jsonl", drop=lambda i, s: i == 2 and s["id"] == first["id"]
    )
    out = evaluate_dir(gt_dir, results)
    other = "stuff" if isthing else "things"
    assert out[kind]["pq"] < 1.0 and out[kind]["rq"] < 1.0
    assert out[other]["pq"] == pytest.approx(1.0)
    assert out["pq"] < 1.0
    assert sum(c["fn"] for c in out["per_class"].values()) == 1


def test_save_coco_panoptic_reads_back(gt_dir, tmp_path):
    results = _write_results(
        gt_dir, tmp_path / "r.jsonl", drop=lambda i, s: i in (1, 4) and s["isthing"]
    )
    coco = tmp_path / "export" / "pred.json"
    out = evaluate_dir(gt_dir, results, save_coco_panoptic=coco)
    assert out["coco_panoptic"] == str(coco) and (coco.with_suffix("") / "000003.png").is_file()
    data = json.loads(coco.read_text())
    assert [a["image_id"] for a in data["annotations"]] == list(range(FRAMES))
    seg = data["annotations"][0]["segments_info"][0]
    assert set(seg) == {"id", "category_id", "iscrowd", "area", "bbox"} and seg["iscrowd"] == 0
    gt_cats = {c["id"]: c for c in _gt(gt_dir)["categories"]}
    for c in data["categories"]:
        assert (c["name"], c["isthing"]) == (gt_cats[c["id"]]["name"], gt_cats[c["id"]]["isthing"])
    again = evaluate_panoptic(gt_dir, coco)
    assert 0 < out["pq"] < 1
    for part in ("all", "things", "stuff"):
        assert again[part]["pq"] == pytest.approx(out[part]["pq"])


def test_several_streams_and_missing_panoptic_rejected(gt_dir, tmp_path):
    results = _write_results(gt_dir, tmp_path / "r.jsonl", stream="cam1")
    _write_results(gt_dir, results, stream="cam2")
    with pytest.raises(EvaluationError, match="cam1, cam2"):
        evaluate_dir(gt_dir, results)
    bare = tmp_path / "bare.jsonl"
    rec = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    bare.write_text(json.dumps({**rec, "panoptic": None}) + "\n")
    with pytest.raises(EvaluationError, match="no 'panoptic'"):
        evaluate_dir(gt_dir, bare, task="panoptic")
    with pytest.raises(EvaluationError, match="needs panoptic results"):
        evaluate_dir(gt_dir, bare, task="instance", save_coco_panoptic=tmp_path / "x.json")


# ------------------------------------------------------------------------------ the CLI


def test_cli_scores_and_errors(gt_dir, tmp_path):
    results = _write_results(gt_dir, tmp_path / "results.jsonl")
    done = _cli("--gt", str(gt_dir), "--pred", str(results), "--indent", "0")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["task"] == "panoptic" and out["pq"] == pytest.approx(1.0)

    gone = panoptic_folder(results) / frame_png_name("0", 3)
    gone.unlink()
    done = _cli("--gt", str(gt_dir), "--pred", str(results))
    assert done.returncode == 2 and not done.stdout
    assert len(_error_lines(done.stderr)) == 1 and str(gone) in _error_lines(done.stderr)[0]

    no_pan = tmp_path / "not_panoptic"
    shutil.copytree(gt_dir, no_pan, ignore=shutil.ignore_patterns("panoptic*"))
    done = _cli("--gt", str(no_pan), "--pred", str(results), "--task", "panoptic")
    assert done.returncode == 2
    (line,) = _error_lines(done.stderr)
    assert "is not panoptic ground truth" in line
    assert "python -m pipeline.synthetic --kind panoptic" in line
