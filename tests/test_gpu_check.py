"""scripts/gpu_check.sh: the dry run on this CPU machine, usage errors, and the pure logic of
scripts/gpu_check.py (wheelhouse, choice of python, install plan, steps, runner, JSON)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


gc = _load()


def run_script(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)  # fmt: skip


# --------------------------------------------------------------------------- the script


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "x.json"
    return run_script("--dry-run", "--out", str(out)), out


def test_dry_run_resolves_every_step_and_prints_the_plan(dry_run) -> None:
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "plan:" in text and "every step resolves" in text
    assert not out.exists()  # a dry run writes nothing
    names = ["gpu-tests", "ort-cuda-test", "torch-fcn-b4", "torch-maskrcnn-b4", "ort-fcn-b4",
             "ort-maskrcnn-b4", "torch-fcn-b8", "torch-maskrcnn-b8", "torch-fcn-b1",
             "torch-maskrcnn-b1", "trt-fcn-b4", "trt-maskrcnn-b4"]  # fmt: skip
    for name in names:
        assert f". {name} (budget" in text, name
    commands = [line.strip()[2:] for line in text.splitlines() if line.strip().startswith("$ ")]
    assert any("-m pytest -m 'gpu or tensorrt'" in c for c in commands)
    bench = [c for c in commands if "-m pipeline.bench" in c]
    assert len(bench) == 10 and all("--device cuda" in c and "--weights random" in c for c in bench)
    for model, size, min_size in (("maskrcnn_resnet50_fpn", "1333x800", 800), ("fcn_resnet50", "520x520", 520)):
        mine = [c for c in bench if f"--model {model} " in c]
        assert mine and all(f"size={size}" in c and f"--min-size {min_size}" in c for c in mine)
        assert {f"--batch-size {b} " in c for c in mine for b in (1, 4, 8)} >= {True}
        for b in (1, 4, 8):
            assert any(f"--batch-size {b} " in c for c in mine), (model, b)
        for backend in ("pytorch", "onnxruntime", "tensorrt"):
            assert any(f"--backend {backend} " in c for c in mine), (model, backend)
        assert any("--batch-sizes 1 4 8" in c for c in mine)
    # torch CUDA always, ONNX Runtime CUDA and TensorRT on a condition
    assert "ort-fcn-b4 (budget 75s, if onnxruntime has CUDAExecutionProvider" in text
    assert "trt-maskrcnn-b4 (budget 150s, if import tensorrt works" in text
    assert "800x1333" in text and "520x520 frame -> input 520x520" in text


def test_bogus_option_is_one_line_and_exit_2() -> None:
    proc = run_script("--bogus", timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "--bogus" in proc.stderr


def test_unwritable_output_is_one_line_and_exit_2(tmp_path) -> None:
    proc = run_script("--dry-run", "--out", str(tmp_path), timeout=60)  # a directory
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"gpu_check: error: output {tmp_path}: {tmp_path} is a directory"]


def test_unknown_step_is_exit_2(tmp_path) -> None:
    proc = run_script("--dry-run", "--out", str(tmp_path / "x.json"), "--python", sys.executable,
                      "--only", "nope", timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("gpu_check: error: unknown step 'nope'")


# --------------------------------------------------------------------------- pure logic


def test_default_out_follows_OUT() -> None:
    assert gc.default_out({"OUT": "/results"}) == Path("/results/gpu_check.json")
    assert gc.default_out({}) == Path("gpu_check.json")


def test_wheel_names_and_fit() -> None:
    w = gc.parse_wheel_filename(".whl/torch-2.5.1+cu124-cp312-cp312-linux_x86_64.whl")
    assert (w.dist, w.version, w.python_tags) == ("torch", "2.5.1+cu124", ("cp312",))
    assert gc.wheel_fits(w, (3, 12), "x86_64") and not gc.wheel_fits(w, (3, 11), "x86_64")
    assert not gc.wheel_fits(w, (3, 12), "aarch64")
    o = gc.parse_wheel_filename("opencv_python_headless-4.10.0.84-cp37-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert o.dist == "opencv-python-headless" and gc.wheel_fits(o, (3, 12), "x86_64")
    p = gc.parse_wheel_filename("tqdm-4.66.5-py3-none-any.whl")
    assert gc.wheel_fits(p, (3, 11), "aarch64")
    assert gc.parse_wheel_filename("notes.txt") is None


def probe(*, missing=(), torch_cuda="12.4", gpu=True, providers=("CPUExecutionProvider",), venv=True,
          version=(3, 12, 3), path="/py") -> dict:  # fmt: skip
    mods = {m: ({"ok": False, "error": f"ModuleNotFoundError: No module named '{m}'"} if m in missing
                else {"ok": True, "version": "1.0"}) for m in gc.MODULES}  # fmt: skip
    p = {"path": path, "executable": path, "version": list(version), "prefix": "/venv" if venv else "/usr",
         "base_prefix": "/usr", "pip": True, "modules": mods}  # fmt: skip
    if "torch" not in missing:
        p["torch"] = {"version": "2.5.1" + ("" if torch_cuda else "+cpu"), "cuda_build": torch_cuda,
                      "cuda_available": gpu and bool(torch_cuda), "devices": [{"name": "NVIDIA H200"}] if gpu else []}  # fmt: skip
    if "onnxruntime" not in missing:
        p["ort_providers"] = list(providers)
    return p


def wheels(*names: str) -> list:
    return [gc.parse_wheel_filename(f"/r/.whl/{n}") for n in names]


def test_resolve_everything_there() -> None:
    res = gc.resolve(probe(missing=("tensorrt",), providers=("CUDAExecutionProvider", "CPUExecutionProvider")),
                     [], need_cuda=True)  # fmt: skip
    assert res.errors == [] and res.install == []
    assert res.features == {"cuda": True, "tests": True, "ort_cuda": True, "tensorrt": False}
    assert "import tensorrt fails" in res.feature_notes["tensorrt"]


def test_resolve_says_exactly_what_is_missing() -> None:
    res = gc.resolve(probe(missing=("av", "zmq")), wheels("av-13.1.0-cp312-cp312-manylinux_2_17_x86_64.whl"),
                     need_cuda=True, machine="x86_64")  # fmt: skip
    assert res.install == ["av"]
    assert len(res.errors) == 1 and "pyzmq (import zmq: ModuleNotFoundError" in res.errors[0]
    assert "av" not in res.errors[0].split("pyzmq")[0].replace("missing: ", "")


def test_resolve_replaces_cpu_builds_from_the_wheelhouse() -> None:
    res = gc.resolve(probe(torch_cuda=None, gpu=False, missing=("pytest_timeout",)),
                     wheels("torch-2.5.1-cp312-cp312-manylinux1_x86_64.whl",
                            "torchvision-0.20.1-cp312-cp312-linux_x86_64.whl",
                            "pytest_timeout-2.3.1-py3-none-any.whl",
                            "onnxruntime_gpu-1.20.1-cp312-cp312-manylinux_2_27_x86_64.whl"),
                     need_cuda=True, machine="x86_64")  # fmt: skip
    # a replacement goes in by file (2.5.1 vs 2.5.1+cpu), a missing module by name
    assert res.install[:2] == ["/r/.whl/torch-2.5.1-cp312-cp312-manylinux1_x86_64.whl",
                               "/r/.whl/torchvision-0.20.1-cp312-cp312-linux_x86_64.whl"]  # fmt: skip
    assert "pytest-timeout" in res.install and res.install[-1].endswith(".whl")
    assert res.uninstall == ["onnxruntime"]  # CPU build in the same venv: removed first
    assert res.features["ort_cuda"] and res.errors == []
    cmds = gc.install_commands(res, Path("/r"), Path("/r/.whl"), None)
    assert cmds[0] == ["/py", "-m", "pip", "uninstall", "-y", "onnxruntime"]
    assert cmds[1][:6] == ["/py", "-m", "pip", "install", "--no-index", "--find-links"]


def test_resolve_cpu_torch_without_wheels_is_an_error_only_for_a_real_run() -> None:
    p = probe(torch_cuda=None, gpu=False)
    assert gc.resolve(p, [], need_cuda=False).errors == []
    errors = gc.resolve(p, [], need_cuda=True).errors
    assert errors and "torch with CUDA (torch 2.5.1+cpu here is CPU-only" in errors[0]
    no_gpu = gc.resolve(probe(gpu=False), [], need_cuda=True).errors
    assert no_gpu and "sees no GPU" in no_gpu[0]


def test_system_python_installs_into_a_venv(tmp_path) -> None:
    res = gc.resolve(probe(venv=False, missing=("msgpack",)), wheels("msgpack-1.1.0-cp312-cp312-linux_x86_64.whl"),
                     need_cuda=True)  # fmt: skip
    assert res.target == "venv"
    cmds = gc.install_commands(res, tmp_path, tmp_path / ".whl", None)
    assert cmds[0] == ["/py", "-m", "venv", "--system-site-packages", str(tmp_path / ".venv")]
    assert cmds[1][0] == str(tmp_path / ".venv" / "bin" / "python") and cmds[1][-1] == "msgpack"


def test_choose_python_prefers_a_gpu_and_skips_old_or_broken() -> None:
    old = probe(version=(3, 9, 1), path="/old")
    cpu = probe(gpu=False, torch_cuda=None, path="/cpu")
    gpu = probe(path="/gpu", missing=("av",))
    assert gc.choose_python([{"path": "/x", "error": "boom"}, old, cpu, gpu])["path"] == "/gpu"
    assert gc.choose_python([old, {"path": "/x", "error": "boom"}]) is None
    assert gc.resolve(None, [], need_cuda=False).errors[0].startswith("no python >= 3.11")


def test_steps_cover_both_models_batches_and_backends(tmp_path) -> None:
    steps = gc.build_steps("/py", tmp_path, max_size_flag=True)
    bench = [s for s in steps if s.kind == "bench"]
    got = {(s.meta["model"], s.meta["backend"], s.meta["batch_size"]) for s in bench}
    for model in ("fcn_resnet50", "maskrcnn_resnet50_fpn"):
        assert {(model, "pytorch", b) for b in (1, 4, 8)} <= got
        assert (model, "onnxruntime", 4) in got and (model, "tensorrt", 4) in got
    mask = next(s for s in bench if s.name == "torch-maskrcnn-b4")
    assert mask.cmd[mask.cmd.index("--max-size") + 1] == "1333"
    assert "--max-size" not in gc.build_steps("/py", tmp_path, max_size_flag=False)[3].cmd
    assert [s.when for s in steps if s.name.startswith("trt-")] == ["tensorrt", "tensorrt"]
    # cheap and important first: tests, then PyTorch, then ORT, ..., TensorRT last
    assert steps[0].name == "gpu-tests" and steps[-1].name == "trt-maskrcnn-b4"
    assert [s.name for s in gc.select_steps(steps, ["torch-*"], ["torch-*-b1"])] == [
        "torch-fcn-b4", "torch-maskrcnn-b4", "torch-fcn-b8", "torch-maskrcnn-b8"]
    with pytest.raises(ValueError, match="unknown step 'x'"):
        gc.select_steps(steps, [], ["x"])


def test_project_errors_name_the_problem() -> None:
    good = {"errors": [], "bench_flags": list(gc.BENCH_FLAGS),
            "models": [{"name": "fcn_resnet50", "input": [520, 520], "registry_max": 2048},
                       {"name": "maskrcnn_resnet50_fpn", "input": [800, 1333], "registry_max": 1333}]}  # fmt: skip
    assert gc.project_errors(good) == []
    bad = json.loads(json.dumps(good))
    bad["bench_flags"].remove("--skip")
    bad["models"][1] = {"name": "maskrcnn_resnet50_fpn", "input": [750, 1250], "registry_max": 1250}
    errors = gc.project_errors(bad)
    assert errors[0] == "pipeline.bench lacks flags --skip"
    assert "becomes 750x1250, not 800x1333 (pipeline.bench has no --max-size; registry max 1250)" in errors[1]
    bad["models"][0] = {"name": "fcn_resnet50", "error": "ModelError: unknown model"}
    assert any("fcn_resnet50 --weights random: ModelError" in e for e in gc.project_errors(bad))


def test_parse_outputs() -> None:
    text = ("(b) inference alone        41.20 fps\n"
            "(c) pipeline               30.90 fps  (latency p50 120 ms, p95 180 ms)\n")  # fmt: skip
    fig = gc.parse_bench_output(text)
    assert fig["inference_fps"] == 41.2 and fig["pipeline_latency_ms"] == {"p50": 120.0, "p95": 180.0}
    assert fig["pipeline_vs_inference"] == pytest.approx(30.9 / 41.2)
    assert gc.pytest_summary("....\n===== 3 passed, 2 skipped in 12.30s =====\n") == "3 passed, 2 skipped in 12.30s"


def test_run_command_kills_the_group_at_the_timeout(tmp_path) -> None:
    child = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print('started', flush=True); time.sleep(60)"
    t0 = time.monotonic()
    out = gc.run_command([sys.executable, "-c", child], 2.0, tmp_path / "a.log", cwd=tmp_path, env=gc.step_env(REPO))
    assert out["status"] == "timeout" and time.monotonic() - t0 < 15
    assert "started" in out["output_tail"]
    ok = gc.run_command([sys.executable, "-c", "print('hi')"], 10, tmp_path / "b.log", cwd=tmp_path, env={})
    assert ok["status"] == "ok" and ok["rc"] == 0
    bad = gc.run_command([sys.executable, "-c", "raise SystemExit(3)"], 10, tmp_path / "c.log", cwd=tmp_path, env={})
    assert bad["status"] == "failed" and bad["rc"] == 3


def test_runner_writes_partial_results_after_every_step(tmp_path) -> None:
    out, logs = tmp_path / "r.json", tmp_path / "logs"
    fig = logs / "b.json"
    script = (f"import json; json.dump({{'inference_fps': 10.0, 'pipeline_fps': 8.0, 'pipeline_vs_inference': 0.8, "
              f"'backends': [{{'backend': 'pytorch', 'batch_size': 1, 'fps': 9.0, 'latency_ms_p50': 111.0}}]}}, "
              f"open({str(fig)!r}, 'w'))")  # fmt: skip
    steps = [
        gc.Step("b", "bench", [sys.executable, "-c", script], 30, "cuda", "bench", str(fig),
                {"model": "fcn_resnet50", "backend": "pytorch", "batch_size": 4, "input": "520x520"}),
        gc.Step("ort", "ort", [sys.executable, "-c", "pass"], 30, "ort_cuda"),
        gc.Step("slow", "slow", [sys.executable, "-c", "import time; time.sleep(30)"], 1.5, None),
        gc.Step("late", "late", [sys.executable, "-c", "pass"], 30, None),
    ]  # fmt: skip
    start = time.monotonic()
    results = {"steps": []}
    runner = gc.Runner(results, out, logs, start + 40, start, repo=REPO)
    seen = []
    for i, step in enumerate(steps[:3], 1):
        runner.run(step, i, 4, {"cuda": True, "ort_cuda": False})
        seen.append([s["status"] for s in json.loads(out.read_text())["steps"]])
    assert seen == [["ok"], ["ok", "skipped"], ["ok", "skipped", "timeout"]]
    runner.deadline = time.monotonic() + 5  # under MIN_STEP_S left
    runner.run(steps[3], 4, 4, {})
    data = json.loads(out.read_text())
    assert data["steps"][3]["status"] == "skipped" and "no time left" in data["steps"][3]["reason"]
    assert runner.failed
    row = data["summary"]["pipeline_vs_inference"][0]
    assert (row["model"], row["batch_size"], row["pipeline_fps"]) == ("fcn_resnet50", 4, 8.0)
    assert data["summary"]["backends"][0]["fps"] == 9.0
    assert data["steps"][0]["command"].startswith(sys.executable)
    assert not list(tmp_path.glob(".r.json.*"))  # atomic writes leave no temporaries
