"""The ``tracking`` synthetic scene kind: determinism, exact ground truth, and the events
multi-object tracking is scored on (crossings, occlusions, exits and re-entries, varying
speed), checked on the rendered ground truth of 150-frame clips at several seeds and sizes."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from pipeline.synthetic import SyntheticScene
from pipeline.synthetic.shapes import BOUND_FACTOR, CIRCLE
from pipeline.synthetic.tracking import ACT_S, EVENTS_END_S, HIDE_MAX_S, make_act

FPS = 30.0
CLIP = 150  # frames: 5 s, the first act's events all happen in it
SEEDS = (0, 1, 5, 17, 123)
SIZES = ((640, 480), (1280, 720), (320, 240))


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _frame_digests(scene: SyntheticScene, index: int) -> tuple[str, str, str, str]:
    fr = scene.frame(index)
    return _digest(fr.image), _digest(fr.class_map), _digest(fr.masks), _digest(fr.instance_ids)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_frames_different_seeds_differ():
    a = SyntheticScene(5, 160, 120, FPS, kind="tracking")
    first = [_frame_digests(a, i) for i in (47, 3, 120)]
    for i in (0, 200, 9):  # other frames in between: no hidden state
        a.frame(i)
    assert [_frame_digests(a, i) for i in (47, 3, 120)] == first
    b = SyntheticScene(5, 160, 120, FPS, kind="tracking")  # a fresh scene, frames out of order
    assert [_frame_digests(b, i) for i in (120, 3, 47)] == first[::-1]
    for seed in (6, 7):
        other = SyntheticScene(seed, 160, 120, FPS, kind="tracking")
        digests = [_frame_digests(other, i) for i in (47, 3, 120)]
        assert all(d[0] != f[0] and d[1] != f[1] for d, f in zip(digests, first, strict=True))
    # same seed, other kind: another scene
    assert _frame_digests(SyntheticScene(5, 160, 120, FPS), 47)[1] != first[0][1]


def test_deterministic_across_processes():
    """Nothing depends on the process (hash seeds, caches, import order)."""
    code = (
        "import hashlib; from pipeline.synthetic import SyntheticScene; "
        "f = SyntheticScene(17, 96, 72, 30.0, kind='tracking').frame(77); "
        "print(hashlib.sha256(f.image.tobytes() + f.masks.tobytes()).hexdigest())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(h)},
        ).stdout.strip()
        for h in (1, 2)
    }
    here = SyntheticScene(17, 96, 72, 30.0, kind="tracking").frame(77)
    assert outs == {hashlib.sha256(here.image.tobytes() + here.masks.tobytes()).hexdigest()}


def test_default_kind_is_unchanged():
    """``kind=default`` (explicit, or by URI) is the training scene: a golden frame of
    ``tests/test_synthetic.py`` still comes out bit for bit."""
    from pipeline.sources.synthetic import SyntheticSource

    for scene in (
        SyntheticScene(7, 640, 480, 30.0, kind="default"),
        SyntheticSource("synthetic://?seed=7&kind=default").scene,
    ):
        frame = scene.frame(45)
        assert _digest(frame.image) == "fc6ae6f56135ca67"
        assert _digest(frame.class_map) == "3b8d78d1921ff9af"


def test_truth_is_the_frames_ground_truth():
    scene = SyntheticScene(1, 200, 150, FPS, kind="tracking")
    for i in (0, 44, 101, 149, 400):
        fr, gt = scene.frame(i), scene.truth(i)
        assert gt.image is None
        for name in ("masks", "labels", "instance_ids", "class_map"):
            np.testing.assert_array_equal(getattr(gt, name), getattr(fr, name))


def test_bad_kind_is_rejected():
    with pytest.raises(ValueError, match="kind"):
        SyntheticScene(0, 64, 48, kind="chaos")


# ----------------------------------------------------------------- exact ground truth


def _bound(trk) -> float:
    return trk.r * BOUND_FACTOR[trk.label]


def _placement(trk, t: float) -> str:
    """'inside' (bounding circle entirely in the canvas), 'outside' (entirely out) or 'edge'."""
    x, y, _ = trk.pose(t)
    b = _bound(trk)
    w, h = 4.0 / 3.0, 1.0
    if b <= x <= w - b and b <= y <= h - b:
        return "inside"
    if x < -b or x > w + b or y < -b or y > h + b:
        return "outside"
    return "edge"


def test_ground_truth_is_exact():
    """Masks disjoint, class map their union, ids of live tracks with their labels, nothing
    annotated for a track entirely outside the frame, and something for every track that is
    in the frame and in front of everything there."""
    scene = SyntheticScene(5, 256, 192, FPS, kind="tracking")
    for i in range(0, 450, 7):
        fr = scene.truth(i)
        n = len(fr.instance_ids)
        assert n >= 1
        alive = {trk.track_id: trk for trk in scene.tracks_at(fr.time)}
        for tid, label in zip(fr.instance_ids.tolist(), fr.labels.tolist(), strict=True):
            assert alive[tid].label == label
            assert _placement(alive[tid], fr.time) != "outside"
        top = max(alive.values(), key=lambda trk: trk.z)
        if _placement(top, fr.time) == "inside":
            assert top.track_id in fr.instance_ids
        assert np.all(fr.masks.reshape(n, -1).any(axis=1))
        assert fr.masks.sum(axis=0).max() <= 1
        expected = np.zeros_like(fr.class_map)
        for m, lab in zip(fr.masks, fr.labels, strict=True):
            expected[m] = lab
        np.testing.assert_array_equal(fr.class_map, expected)


# -------------------------------------------------------- events, by construction (geometry)


def _covered_radius(occluder) -> float:
    """Radius of the disk a circle or square occluder covers whatever its rotation."""
    return occluder.r if occluder.label == CIRCLE else occluder.r / math.sqrt(2.0)


@pytest.mark.parametrize("seed", range(0, 400, 13))
def test_every_act_scripts_its_events(seed):
    """The guarantees hold in canvas geometry (so at every frame size) for many acts."""
    bg = np.full(3, 0.5)
    for act in (-1, 0, 3):
        a = make_act(seed, act, bg)
        occluder, hidden, cross_a, cross_b = a.tracks[:4]
        start = act * ACT_S
        ts = np.arange(start, start + EVENTS_END_S, 1.0 / 120.0)
        # crossing: the centres meet; the boxes of their bounding circles are apart before
        _, _, t_meet = a.events.crossing
        assert math.dist(cross_a.pose(t_meet)[:2], cross_b.pose(t_meet)[:2]) < 1e-9
        gap = np.abs(np.subtract(cross_a.pose(start)[:2], cross_b.pose(start)[:2])).max()
        assert gap > _bound(cross_a) + _bound(cross_b) + 0.02
        front, back = sorted((cross_a, cross_b), key=lambda trk: -trk.z)
        assert _bound(front) < 0.9 * back.r  # the one behind shows around the one in front
        # occlusion: entirely inside the occluder (in front of it) for 0.3 .. 1 s
        _, h0, h1 = a.events.hidden
        assert occluder.z > hidden.z and 0.3 < h1 - h0 <= HIDE_MAX_S
        for t in np.linspace(h0, h1, 25):
            d = math.dist(hidden.pose(t)[:2], occluder.pose(t)[:2])
            assert d + _bound(hidden) <= _covered_radius(occluder) + 1e-12
        near = [t for t in ts if math.dist(hidden.pose(t)[:2], occluder.pose(t)[:2]) < occluder.r]
        assert near[-1] - near[0] <= HIDE_MAX_S + 1e-9
        # exit: entirely off the canvas in between, in it before and after
        _, o0, o1 = a.events.offscreen
        assert all(_placement(cross_a, t) == "outside" for t in np.linspace(o0, o1, 25)[1:-1])
        assert _placement(cross_a, start) == "inside" and _placement(cross_a, o1 + 0.3) != "outside"
        assert max(t_meet, h1, o1) < start + EVENTS_END_S
        # the occlusion zone and the crossing zone never touch while events happen
        for p, q in itertools.product((occluder, hidden), (cross_a, cross_b)):
            for t in ts[::4]:
                assert math.dist(p.pose(t)[:2], q.pose(t)[:2]) > _bound(p) + _bound(q)


# --------------------------------------------------------- events, on rendered ground truth


@dataclass
class Seen:
    box: np.ndarray  # x0, y0, x1, y1 (pixel edges)
    centre: np.ndarray  # mask centroid
    area: int


def _clip(seed: int, size: tuple[int, int]) -> tuple[SyntheticScene, tuple[dict[int, Seen], ...]]:
    scene = SyntheticScene(seed, *size, FPS, kind="tracking")
    frames = []
    for i in range(CLIP):
        fr = scene.truth(i)
        seen = {}
        for k, (tid, box) in enumerate(zip(fr.instance_ids.tolist(), fr.boxes(), strict=True)):
            x0, y0, x1, y1 = (int(v) for v in box)
            ys, xs = np.nonzero(fr.masks[k, y0:y1, x0:x1])
            seen[tid] = Seen(box, np.array([xs.mean() + x0, ys.mean() + y0]), len(xs))
        frames.append(seen)
    return scene, tuple(frames)


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def _crossing_pairs(frames) -> list[tuple[int, int]]:
    """Pairs whose boxes are apart, then overlap, then are apart again (both annotated)."""
    ids = sorted({tid for seen in frames for tid in seen})
    found = []
    for a, b in itertools.combinations(ids, 2):
        states = [_overlap(s[a].box, s[b].box) for s in frames if a in s and b in s]
        if False in states and True in states[states.index(False) :]:
            first_overlap = states.index(True, states.index(False))
            if False in states[first_overlap:]:
                found.append((a, b))
    return found


def _gaps(frames, tid: int) -> list[tuple[int, int]]:
    """(last frame seen, next frame seen) for every run of frames a track is missing from."""
    present = [i for i, seen in enumerate(frames) if tid in seen]
    return [(p, q) for p, q in itertools.pairwise(present) if q - p > 1]


def _track(scene: SyntheticScene, tid: int, index: int):
    return {trk.track_id: trk for trk in scene.tracks_at(index / FPS)}[tid]


def _episodes(scene, frames) -> tuple[list, list]:
    """Occlusions (missing while entirely in the frame) and exits (entirely out of it for a
    while), as (track id, last seen, seen again)."""
    occlusions, exits = [], []
    for tid in sorted({tid for seen in frames for tid in seen}):
        for p, q in _gaps(frames, tid):
            where = {_placement(_track(scene, tid, i), i / FPS) for i in range(p + 1, q)}
            if where == {"inside"}:
                occlusions.append((tid, p, q))
            elif "outside" in where:
                exits.append((tid, p, q))
    return occlusions, exits


def _speed_varies(frames, scale: float) -> list[int]:
    """Tracks whose frame-to-frame centroid displacement, over frames where they are fully
    visible (area near their largest), goes from (near) still to clearly moving."""
    varying = []
    for tid in sorted({tid for seen in frames for tid in seen}):
        largest = max(seen[tid].area for seen in frames if tid in seen)
        full = [
            i for i, seen in enumerate(frames) if tid in seen and seen[tid].area >= 0.9 * largest
        ]
        steps = [
            float(np.linalg.norm(frames[j][tid].centre - frames[i][tid].centre))
            for i, j in itertools.pairwise(full)
            if j == i + 1
        ]
        if len(steps) >= 10 and min(steps) < 0.5 * scale and max(steps) > 3.0 * scale:
            varying.append(tid)
    return varying


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("seed", SEEDS)
def test_clip_has_crossing_occlusion_exit_and_varying_speed(seed, size):
    scene, frames = _clip(seed, size)
    events = scene.motion.act(0).events
    crossing = _crossing_pairs(frames)
    assert crossing, "no two objects' boxes overlap and then separate"
    assert tuple(sorted(events.crossing[:2])) in crossing

    occlusions, exits = _episodes(scene, frames)
    assert occlusions, "no object disappears inside the frame and comes back"
    hidden = [(p, q) for tid, p, q in occlusions if tid == events.hidden[0]]
    assert hidden, "the scripted occlusion did not show"
    p, q = hidden[0]
    assert 0.3 * FPS <= q - p - 1 <= HIDE_MAX_S * FPS + 1  # missing for ~0.3 .. 1 s

    assert exits, "no object leaves the frame and comes back"
    assert events.offscreen[0] in {tid for tid, _, _ in exits}

    assert _speed_varies(frames, size[1] / 480.0), "no object changes speed"


# ----------------------------------------------------------------------- source and CLI


def test_source_kind_parameter():
    from pipeline.errors import SourceError
    from pipeline.sources.synthetic import SyntheticSource

    src = SyntheticSource("synthetic://?seed=5&kind=tracking&size=96x72&frames=3")
    assert src.kind == "tracking" and src.scene.kind == "tracking"
    assert src.info().extra["scene_kind"] == "tracking"
    reference = SyntheticScene(5, 96, 72, 30.0, kind="tracking")
    np.testing.assert_array_equal(list(src.frames())[2].image, reference.frame(2).image)
    np.testing.assert_array_equal(src.ground_truth(2).masks, reference.frame(2).masks)
    assert SyntheticSource("synthetic://?size=32x24").scene.kind == "default"
    assert SyntheticSource("synthetic://?size=32x24", kind="tracking").kind == "tracking"
    with pytest.raises(SourceError, match="kind"):
        SyntheticSource("synthetic://?kind=bouncy")


@pytest.mark.parametrize("kind", ["tracking", "default"])
def test_cli_writes_track_ids(tmp_path, kind):
    pytest.importorskip("av")
    from pycocotools.coco import COCO

    from pipeline.synthetic.__main__ import main

    out = tmp_path / kind
    args = ["--seed", "5", "--frames", "4", "--size", "96x72", "--out", str(out), "--quiet"]
    assert main([*args, "--kind", kind]) == 0
    coco = json.loads((out / "instances.json").read_text())
    assert coco["info"]["kind"] == kind
    assert coco["annotations"] and all("track_id" in ann for ann in coco["annotations"])
    scene = SyntheticScene(5, 96, 72, 30.0, kind=kind)
    api = COCO(str(out / "instances.json"))
    for i in range(4):
        truth = scene.truth(i)
        anns = api.loadAnns(api.getAnnIds(imgIds=[i]))
        assert sorted(a["track_id"] for a in anns) == truth.instance_ids.tolist()
        for ann in anns:
            k = truth.instance_ids.tolist().index(ann["track_id"])
            np.testing.assert_array_equal(api.annToMask(ann).astype(bool), truth.masks[k])


def test_cli_help_documents_the_kinds(capsys):
    from pipeline.synthetic.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "--kind" in text and "tracking" in text and "track_id" in text
