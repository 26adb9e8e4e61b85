"""The resource plan: thread budgets per stage from the usable cores, config overrides, and
that stage processes really start with them (passive OpenMP wait, pool sizes)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import make_video, small_config

from pipeline.config import config_from_dict
from pipeline.errors import ConfigError
from pipeline.resources import (
    LIGHT_STAGES,
    MODEL_STAGE,
    ResourcePlan,
    StageBudget,
    _cgroup_quota_cores,
    plan_resources,
)


@pytest.mark.parametrize("cores, model, codec", [(1, 1, 1), (2, 2, 1), (4, 4, 1), (16, 16, 4)])
def test_model_stage_gets_the_cores_light_stages_one_thread(cores, model, codec):
    plan = plan_resources(cores)
    assert plan.budget(MODEL_STAGE).threads == model
    for stage in LIGHT_STAGES:
        assert plan.budget(stage).threads == 1
        assert plan.budget(stage).cpus is None
    assert plan.budget("publish").codec_threads == codec
    assert plan.budget("capture").codec_threads == 1


def test_overrides_and_bounds():
    plan = plan_resources(8, model_threads=3, light_threads=2, codec_threads=5)
    assert plan.budget(MODEL_STAGE).threads == 3
    assert {plan.budget(s).threads for s in LIGHT_STAGES} == {2}
    assert plan.budget("publish").codec_threads == 5
    assert plan_resources(2, model_threads=64).budget(MODEL_STAGE).threads == 2  # never more than the cores


def test_pinning_splits_cores_only_when_there_are_enough():
    plan = plan_resources(4, pin_cpus=True, allowed_cpus=(0, 1, 2, 3))
    assert plan.budget(MODEL_STAGE).cpus == (0, 1, 2)
    assert plan.budget(MODEL_STAGE).threads == 3
    assert all(plan.budget(s).cpus == (3,) for s in LIGHT_STAGES)
    small = plan_resources(2, pin_cpus=True, allowed_cpus=(0, 1))
    assert all(b.cpus is None for b in small.stages.values())


def test_environment_sets_passive_wait_and_pool_sizes():
    env = StageBudget(threads=3, codec_threads=2, cpus=(1, 2)).environment()
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "3"
    assert env["SEGSTREAM_CODEC_THREADS"] == "2" and env["SEGSTREAM_CPUS"] == "1,2"


def test_plan_round_trips_through_the_run_plan_json():
    plan = plan_resources(4, pin_cpus=True, allowed_cpus=(0, 1, 2, 3))
    assert ResourcePlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


@pytest.mark.parametrize("text, cores", [("max 100000", None), ("150000 100000", 1.5), ("50000 100000", 0.5)])
def test_cgroup_v2_quota(tmp_path, text, cores):
    (tmp_path / "cpu.max").write_text(text + "\n")
    assert _cgroup_quota_cores(tmp_path) == cores


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_quota_cores(tmp_path) == 3.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cgroup_quota_cores(tmp_path) is None


def test_config_section_auto_and_errors():
    assert config_from_dict({"resources": "auto"}).resources.model_threads is None
    assert config_from_dict({"resources": {"model_threads": 2}}).resources.model_threads == 2
    with pytest.raises(ConfigError, match=r"resources.model_threads"):
        config_from_dict({"resources": {"model_threads": 0}})
    with pytest.raises(ConfigError, match=r"unknown key 'resources.threads'"):
        config_from_dict({"resources": {"threads": 2}})


def _stage_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_stage_processes_start_with_their_budget(tmp_path):
    """Run a real pipeline and read each stage process's environment while it runs."""
    import threading

    from pipeline.resources import usable_cores
    from pipeline.supervisor import Supervisor

    video = make_video(tmp_path / "in.mp4", 60, 160, 120, "libx264", 25)
    config = small_config(video, tmp_path, resources={"model_threads": 2, "codec_threads": 1})
    supervisor = Supervisor(config)
    seen: dict[str, dict[str, str]] = {}

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(seen) < 5:
            for name, state in supervisor.stages.items():
                if state.process is not None and state.process.poll() is None and name not in seen:
                    try:
                        seen[name] = _stage_environ(state.process.pid)
                    except OSError:
                        pass
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    report = supervisor.run()
    watcher.join(timeout=5)
    model = str(min(2, usable_cores()))
    assert set(seen) == {"capture", "preprocess", "infer", "postprocess", "publish"}
    for name, env in seen.items():
        assert env["OMP_WAIT_POLICY"] == "PASSIVE", name
        assert env["OMP_NUM_THREADS"] == (model if name == "infer" else "1"), name
    assert report["resources"]["stages"]["infer"]["threads"] == int(model)
    assert report["stages"]["infer"]["threads"] == int(model) and report["stages"]["publish"]["threads"] == 1
    for name, stage in report["stages"].items():
        assert stage["core_ms_per_frame"] is not None and stage["core_ms_per_frame"] > 0, name


def test_light_stages_yield_to_the_model_but_a_live_capture_does_not():
    plan = plan_resources(2)
    assert plan.budget(MODEL_STAGE).nice == 0
    assert {plan.budget(s).nice for s in LIGHT_STAGES} == {10}
    live = plan_resources(2, live=True)
    assert live.budget("capture").nice == 0 and live.budget("publish").nice == 10
    assert {b.nice for b in plan_resources(2, light_nice=0).stages.values()} == {0}
    assert ResourcePlan.from_dict(json.loads(json.dumps(live.to_dict()))) == live
