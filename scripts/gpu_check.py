"""GPU check: the CUDA tests and benchmarks of segstream in one command, figures in one JSON.

Run it through ``scripts/gpu_check.sh`` (which finds a python to run this file with); see
that file for usage. This module needs only the standard library: it runs under any
python >= 3.9 and drives the project's own python (torch, CUDA, ...) as subprocesses.

What it does, in order (each step has a time budget; the whole run one budget, default 480 s):

1. resolve: probe candidate pythons (in parallel) for torch + CUDA and the project's
   modules; pick the best; plan an offline install from a wheelhouse (``.whl/``) for what
   is missing; check the plan against the project (registry models, weights, input sizes,
   ``pipeline.bench`` flags); record the machine (nvidia-smi, driver, CUDA, torch) and the
   commit.
2. install (only when something is missing and the wheelhouse has it):
   ``pip install --no-index --find-links .whl ...``.
3. the GPU tests (``pytest -m "gpu or tensorrt"``; ONNX Runtime's CUDA test, which is not
   marked, as its own step).
4. benchmarks (``python -m pipeline.bench --device cuda``), most important first: PyTorch
   CUDA for fcn_resnet50 (520x520) and maskrcnn_resnet50_fpn (800x1333) at batch 4, with
   inference alone at batch 1/4/8; then ONNX Runtime CUDA against PyTorch; then pipeline vs
   inference alone at batch 1 and 8; then TensorRT where ``import tensorrt`` works.

After every step the JSON file is rewritten, so a timeout or a kill still leaves the
figures gathered so far. Exit status: 0 all attempted steps passed; 1 a step failed, timed
out or had no time left; 2 the set-up cannot be resolved (one line on stderr says what);
130 interrupted.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import fnmatch
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BUDGET_S = 480.0
MIN_STEP_S = 15.0  # a step is not started with less time than this left
MIN_PYTHON = (3, 11)  # pyproject: requires-python >= 3.11
SCHEMA = 1

# import name -> (pip distribution, group). Groups: core (everything needs it), tests
# (pytest steps), onnx (ONNX Runtime and TensorRT steps), tensorrt (TensorRT steps).
MODULES: dict[str, tuple[str, str]] = {
    "torch": ("torch", "core"),
    "torchvision": ("torchvision", "core"),
    "numpy": ("numpy", "core"),
    "av": ("av", "core"),
    "cv2": ("opencv-python-headless", "core"),
    "zmq": ("pyzmq", "core"),
    "msgpack": ("msgpack", "core"),
    "pycocotools": ("pycocotools", "core"),
    "yaml": ("pyyaml", "core"),
    "pydantic": ("pydantic", "core"),
    "tqdm": ("tqdm", "core"),
    "setproctitle": ("setproctitle", "core"),
    "PIL": ("pillow", "core"),
    "pytest": ("pytest", "tests"),
    "pytest_timeout": ("pytest-timeout", "tests"),
    "onnx": ("onnx", "onnx"),
    "onnxscript": ("onnxscript", "onnx"),
    "onnxruntime": ("onnxruntime-gpu", "onnx"),
    "tensorrt": ("tensorrt", "tensorrt"),
}

# The benchmarked models: registry name, synthetic source size (W x H), resize.
MODELS: list[dict[str, Any]] = [
    {"key": "fcn", "name": "fcn_resnet50", "weights": "random", "size": (520, 520),
     "min_size": 520, "max_size": None, "input": (520, 520), "frames": 96},
    {"key": "maskrcnn", "name": "maskrcnn_resnet50_fpn", "weights": "random", "size": (1333, 800),
     "min_size": 800, "max_size": 1333, "input": (800, 1333), "frames": 48},
]  # fmt: skip
BATCH_SIZES = (1, 4, 8)
BENCH_FLAGS = ("--source", "--model", "--weights", "--backend", "--device", "--batch-size",
               "--max-frames", "--min-size", "--skip", "--compare-backends", "--batch-sizes",
               "--json")  # fmt: skip
GPU_MARKERS = "gpu or tensorrt"
ORT_CUDA_TEST = ("tests/test_onnxruntime_backend.py", "cuda")  # file, -k expression


def log(message: str, *, start: float | None = None) -> None:
    """One progress line on stdout (flushed), stamped with seconds since ``start``."""
    stamp = f" {time.monotonic() - start:6.1f}s" if start is not None else ""
    print(f"[gpu_check{stamp}] {message}", flush=True)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")  # noqa: UP017


# --------------------------------------------------------------------------- wheelhouse


def normalize_dist(name: str) -> str:
    """PEP 503 normalised distribution name (``opencv_python_headless`` -> ``opencv-python-headless``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Wheel:
    path: str
    dist: str  # normalised
    version: str
    python_tags: tuple[str, ...]
    abi_tags: tuple[str, ...]
    platform_tags: tuple[str, ...]


def parse_wheel_filename(filename: str) -> Wheel | None:
    """``torch-2.5.1+cu124-cp312-cp312-linux_x86_64.whl`` -> Wheel; None if not a wheel name."""
    base = os.path.basename(filename)
    if not base.endswith(".whl"):
        return None
    parts = base[:-4].split("-")
    if len(parts) not in (5, 6):
        return None
    dist, version = parts[0], parts[1]
    py, abi, plat = parts[-3], parts[-2], parts[-1]
    return Wheel(filename, normalize_dist(dist), version, tuple(py.split(".")),
                 tuple(abi.split(".")), tuple(plat.split(".")))  # fmt: skip


def wheel_fits(wheel: Wheel, version: tuple[int, int], machine: str = "") -> bool:
    """Whether pip could install ``wheel`` on CPython ``version`` (python tag and, roughly, platform)."""
    cp = f"cp{version[0]}{version[1]}"
    py_ok = any(
        t in (cp, "py3", f"py{version[0]}{version[1]}")
        or (t.startswith("cp3") and "abi3" in wheel.abi_tags and int(t[3:] or 0) <= version[1])
        for t in wheel.python_tags
    )
    if not py_ok:
        return False
    if machine and not any(p == "any" or p.endswith(machine) for p in wheel.platform_tags):
        return False
    return True


def scan_wheelhouse(directory: Path) -> list[Wheel]:
    if not directory.is_dir():
        return []
    wheels = [parse_wheel_filename(str(p)) for p in sorted(directory.glob("*.whl"))]
    return [w for w in wheels if w is not None]


# --------------------------------------------------------------------------- probing pythons

PROBE_SNIPPET = r"""
import importlib, importlib.util, json, sys
out = {"executable": sys.executable, "version": list(sys.version_info[:3]), "prefix": sys.prefix,
       "base_prefix": getattr(sys, "base_prefix", sys.prefix),
       "pip": importlib.util.find_spec("pip") is not None, "modules": {}}
for name in sys.argv[1:]:
    try:
        mod = importlib.import_module(name)
        out["modules"][name] = {"ok": True, "version": str(getattr(mod, "__version__", "") or ""),
                                "file": getattr(mod, "__file__", None)}
    except BaseException as exc:  # noqa: BLE001 - report whatever breaks an import
        out["modules"][name] = {"ok": False, "error": (type(exc).__name__ + ": " + str(exc))[:300]}
if out["modules"].get("torch", {}).get("ok"):
    import torch
    t = {"version": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": False,
         "devices": []}
    try:
        t["cuda_available"] = bool(torch.cuda.is_available())
        if t["cuda_available"]:
            t["devices"] = [{"name": torch.cuda.get_device_name(i),
                             "capability": list(torch.cuda.get_device_capability(i))}
                            for i in range(torch.cuda.device_count())]
            t["cudnn"] = torch.backends.cudnn.version()
    except BaseException as exc:  # noqa: BLE001
        t["cuda_error"] = (type(exc).__name__ + ": " + str(exc))[:300]
    out["torch"] = t
if out["modules"].get("onnxruntime", {}).get("ok"):
    import onnxruntime
    out["ort_providers"] = list(onnxruntime.get_available_providers())
print("GPU_CHECK_PROBE " + json.dumps(out))
"""


def candidate_pythons(explicit: str | None, env: dict[str, str], repo: Path) -> list[str]:
    """Interpreters worth probing, best guesses first, without duplicates."""
    if explicit:
        return [explicit]
    home = Path(env.get("HOME", str(Path.home())))
    names: list[str] = []
    for var in ("SEGSTREAM_PYTHON",):
        if env.get(var):
            names.append(env[var])
    for venv in (env.get("SEGSTREAM_VENV"), str(home / ".cache/segstream/venv"), str(repo / ".venv"),
                 env.get("VIRTUAL_ENV"), env.get("CONDA_PREFIX")):  # fmt: skip
        if venv:
            names.append(str(Path(venv) / "bin" / "python"))
    path = env.get("PATH", "")
    for exe in ("python3.13", "python3.12", "python3.11", "python3", "python"):
        found = shutil.which(exe, path=path)
        if found:
            names.append(found)
    names += ["/opt/conda/bin/python", "/usr/local/bin/python3", "/usr/bin/python3"]
    seen: set[str] = set()
    result = []
    for name in names:
        if not (os.path.isfile(name) and os.access(name, os.X_OK)):
            continue
        bindir = os.path.dirname(os.path.abspath(name))
        in_venv = os.path.isfile(os.path.join(os.path.dirname(bindir), "pyvenv.cfg"))
        key = os.path.dirname(bindir) if in_venv else os.path.realpath(name)
        if key not in seen:
            seen.add(key)
            result.append(name)
    return result


def probe_python(python: str, repo: Path, timeout: float = 90.0) -> dict[str, Any]:
    """What ``python`` can import (see PROBE_SNIPPET); ``{"error": ...}`` if it cannot run."""
    try:
        proc = subprocess.run([python, "-c", PROBE_SNIPPET, *MODULES], capture_output=True,
                              text=True, timeout=timeout, cwd=str(repo), env=step_env(repo))  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"executable": python, "error": f"{type(exc).__name__}: {exc}"}
    for line in proc.stdout.splitlines():
        if line.startswith("GPU_CHECK_PROBE "):
            data = json.loads(line[len("GPU_CHECK_PROBE "):])
            data["path"] = python
            return data
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"executable": python, "path": python, "error": f"probe failed (rc {proc.returncode}): {tail}"}


def probe_all(pythons: list[str], repo: Path) -> list[dict[str, Any]]:
    if not pythons:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(pythons))) as pool:
        return list(pool.map(lambda p: probe_python(p, repo), pythons))


def module_ok(probe: dict[str, Any], name: str) -> bool:
    return bool(probe.get("modules", {}).get(name, {}).get("ok"))


def ort_cuda(probe: dict[str, Any]) -> bool:
    return module_ok(probe, "onnxruntime") and "CUDAExecutionProvider" in probe.get("ort_providers", [])


def torch_cuda(probe: dict[str, Any]) -> bool:
    return bool(probe.get("torch", {}).get("cuda_available"))


def score_python(probe: dict[str, Any]) -> int:
    """Higher is better; negative: unusable."""
    if "error" in probe:
        return -1
    if tuple(probe["version"][:2]) < MIN_PYTHON:
        return -1
    score = 0
    if module_ok(probe, "torch"):
        score += 100
        if probe.get("torch", {}).get("cuda_build"):
            score += 100
        if torch_cuda(probe):
            score += 1000
    score += sum(module_ok(probe, m) for m in MODULES)
    score += 5 * ort_cuda(probe) + 5 * module_ok(probe, "tensorrt")
    return score


def choose_python(probes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best usable probe (ties: the earlier candidate), or None."""
    best, best_score = None, -1
    for probe in probes:
        score = score_python(probe)
        if score > best_score:
            best, best_score = probe, score
    return best


def describe_probe(probe: dict[str, Any]) -> str:
    if "error" in probe:
        return f"{probe.get('path', probe.get('executable'))}: {probe['error']}"
    version = ".".join(str(v) for v in probe["version"])
    parts = [f"{probe['path']} (Python {version}"]
    if tuple(probe["version"][:2]) < MIN_PYTHON:
        parts.append(f"too old, needs >= {'.'.join(map(str, MIN_PYTHON))}")
    t = probe.get("torch")
    if t:
        cuda = f"CUDA build {t['cuda_build']}" if t.get("cuda_build") else "CPU-only build"
        gpu = (", GPU: " + ", ".join(d["name"] for d in t["devices"])) if t.get("cuda_available") \
            else ", no usable GPU"
        parts.append(f"torch {t['version']}, {cuda}{gpu}")
    else:
        parts.append("no torch")
    return ", ".join(parts) + ")"


# --------------------------------------------------------------------------- install plan


@dataclass
class Resolution:
    """What the run will use and do; ``errors`` make the run (and a dry run) exit 2."""

    python: str | None = None
    probe: dict[str, Any] = field(default_factory=dict)
    install: list[str] = field(default_factory=list)  # pip specs (names or wheel paths)
    install_reasons: list[str] = field(default_factory=list)
    uninstall: list[str] = field(default_factory=list)
    target: str = "in-place"  # or "venv": create <repo>/.venv with --system-site-packages
    missing: list[str] = field(default_factory=list)  # lines: what is missing and why
    errors: list[str] = field(default_factory=list)
    features: dict[str, bool] = field(default_factory=dict)  # cuda, tests, ort_cuda, tensorrt
    feature_notes: dict[str, str] = field(default_factory=dict)


def resolve(probe: dict[str, Any] | None, wheels: list[Wheel], *, need_cuda: bool,
            wheel_dir: str = ".whl", machine: str = "") -> Resolution:  # fmt: skip
    """Decide what to install from ``wheels`` and which steps can run (pure function).

    ``need_cuda``: a real run needs torch to see a GPU; a dry run does not.
    """
    res = Resolution()
    if probe is None:
        res.errors.append(f"no python >= {'.'.join(map(str, MIN_PYTHON))} found to run the checks "
                          "(pass --python PATH)")  # fmt: skip
        return res
    res.python, res.probe = probe["path"], probe
    version = (int(probe["version"][0]), int(probe["version"][1]))
    by_dist: dict[str, list[Wheel]] = {}
    for wheel in wheels:
        if wheel_fits(wheel, version, machine):
            by_dist.setdefault(wheel.dist, []).append(wheel)
    res.target = "in-place" if probe.get("prefix") != probe.get("base_prefix") else "venv"

    def from_wheels(dist: str, why: str, replace: bool = False) -> bool:
        found = by_dist.get(normalize_dist(dist))
        if not found:
            return False
        chosen = sorted(found, key=lambda w: w.version)[-1]
        # A replacement goes in by file: pip then installs it even if another build of the
        # same version (2.5.1+cpu) is there; a plain name would count as already satisfied.
        spec = chosen.path if replace else normalize_dist(dist)
        if spec not in res.install:
            res.install.append(spec)
            res.install_reasons.append(f"{dist} ({why}) from {os.path.basename(chosen.path)}")
        return True

    def need(name: str) -> bool:
        """Ensure import ``name``; False (and a 'missing' line) if neither there nor in wheels."""
        if module_ok(probe, name):
            return True
        dist = MODULES[name][0]
        err = probe.get("modules", {}).get(name, {}).get("error", "not importable")
        if from_wheels(dist, f"import {name}: {err}"):
            return True
        res.missing.append(f"{dist} (import {name}: {err}; no fitting wheel in {wheel_dir}/)")
        return False

    core_ok = all([need(m) for m, (_, g) in MODULES.items() if g == "core"])
    # torch must be a CUDA build that sees the GPU (a real run); a CPU-only build is replaced
    # by a wheel from the wheelhouse if there is one.
    t = probe.get("torch", {})
    if module_ok(probe, "torch") and not t.get("cuda_build"):
        if from_wheels("torch", f"torch {t.get('version')} is CPU-only", replace=True):
            from_wheels("torchvision", "to match the CUDA torch", replace=True)
        elif need_cuda:
            res.missing.append(f"torch with CUDA (torch {t.get('version')} here is CPU-only; "
                               f"no torch wheel in {wheel_dir}/)")  # fmt: skip
            core_ok = False
    cuda_now = torch_cuda(probe)
    if need_cuda and module_ok(probe, "torch") and t.get("cuda_build") and not cuda_now:
        why = t.get("cuda_error") or "torch.cuda.is_available() is False"
        res.errors.append(f"torch {t.get('version')} (CUDA {t.get('cuda_build')}) sees no GPU: {why}")
    res.features["cuda"] = core_ok
    if not core_ok:
        res.errors.append("missing: " + "; ".join(res.missing))
        return res
    res.features["tests"] = all([need(m) for m in ("pytest", "pytest_timeout")])
    if not res.features["tests"]:
        res.errors.append("missing for the GPU tests: " + "; ".join(res.missing))
    onnx_ok = all([need(m) for m in ("onnx", "onnxscript")])
    res.feature_notes["onnx"] = "onnx, onnxscript importable" if onnx_ok else "onnx/onnxscript missing"
    # ONNX Runtime with its CUDA provider: onnxruntime-gpu.
    providers = probe.get("ort_providers", [])
    if ort_cuda(probe):
        res.features["ort_cuda"] = onnx_ok
        res.feature_notes["ort_cuda"] = "onnxruntime " + probe["modules"]["onnxruntime"]["version"] + \
            " with CUDAExecutionProvider"
    elif from_wheels("onnxruntime-gpu", "ONNX Runtime with CUDAExecutionProvider", replace=True):
        if module_ok(probe, "onnxruntime") and res.target == "in-place":
            res.uninstall.append("onnxruntime")  # CPU build: same package dir, remove it first
        res.features["ort_cuda"] = onnx_ok
        res.feature_notes["ort_cuda"] = "onnxruntime-gpu from the wheelhouse"
    else:
        res.features["ort_cuda"] = False
        here = (f"onnxruntime {probe['modules']['onnxruntime']['version']} has only "
                f"{', '.join(providers)}") if module_ok(probe, "onnxruntime") else "onnxruntime not importable"  # fmt: skip
        res.feature_notes["ort_cuda"] = (f"no CUDAExecutionProvider ({here}; no onnxruntime_gpu wheel "
                                         f"in {wheel_dir}/): ONNX Runtime steps skip")  # fmt: skip
    if not onnx_ok:
        res.features["ort_cuda"] = False
    # TensorRT: only where `import tensorrt` works (or a wheel is at hand).
    if module_ok(probe, "tensorrt"):
        res.features["tensorrt"] = onnx_ok
        res.feature_notes["tensorrt"] = f"tensorrt {probe['modules']['tensorrt']['version']}"
    elif from_wheels("tensorrt", "TensorRT steps"):
        res.features["tensorrt"] = onnx_ok
        res.feature_notes["tensorrt"] = "tensorrt from the wheelhouse"
    else:
        res.features["tensorrt"] = False
        res.feature_notes["tensorrt"] = "import tensorrt fails here: TensorRT steps skip"
    return res


def install_commands(res: Resolution, repo: Path, wheel_dir: Path, pip_python: str | None) -> list[list[str]]:
    """The commands the install step runs (empty when nothing is to be installed)."""
    if not res.install:
        return []
    assert res.python is not None
    cmds: list[list[str]] = []
    target_python = res.python
    if res.target == "venv":
        venv = repo / ".venv"
        target_python = str(venv / "bin" / "python")
        if not (venv / "bin" / "python").exists():
            cmds.append([res.python, "-m", "venv", "--system-site-packages", str(venv)])
    pip = [target_python, "-m", "pip"]
    if not res.probe.get("pip") and res.target == "in-place" and pip_python:
        pip = [pip_python, "-m", "pip", "--python", target_python]
    if res.uninstall:
        cmds.append([*pip, "uninstall", "-y", *res.uninstall])
    cmds.append([*pip, "install", "--no-index", "--find-links", str(wheel_dir), *res.install])
    return cmds


# --------------------------------------------------------------------------- steps


@dataclass
class Step:
    name: str
    title: str
    cmd: list[str]
    budget_s: float
    when: str | None = None  # feature that must be true (see Resolution.features)
    kind: str = "bench"  # "tests" | "bench" | "install"
    json_path: str | None = None  # bench figures written here by the command
    meta: dict[str, Any] = field(default_factory=dict)


def source_uri(model: dict[str, Any], frames: int) -> str:
    w, h = model["size"]
    return f"synthetic://?seed=11&size={w}x{h}&fps=30&frames={frames}"


def bench_cmd(python: str, model: dict[str, Any], backend: str, batch: int, *, compare: list[str],
              skip: tuple[str, ...], json_path: str, max_size_flag: bool) -> list[str]:  # fmt: skip
    frames = model["frames"]
    cmd = [python, "-m", "pipeline.bench", "--source", source_uri(model, frames), "--model", model["name"],
           "--weights", model["weights"], "--backend", backend, "--device", "cuda",
           "--batch-size", str(batch), "--max-frames", str(frames), "--min-size", str(model["min_size"])]  # fmt: skip
    if max_size_flag and model["max_size"]:
        cmd += ["--max-size", str(model["max_size"])]
    for s in skip:
        cmd += ["--skip", s]
    if compare:
        cmd += ["--compare-backends", *compare, "--batch-sizes", *(str(b) for b in BATCH_SIZES)]
    return [*cmd, "--json", json_path]


def build_steps(python: str, logs: Path, *, max_size_flag: bool) -> list[Step]:
    """Every step after resolve/install, most important first (pure function)."""
    steps = [
        Step("gpu-tests", 'GPU tests: pytest -m "gpu or tensorrt"',
             [python, "-m", "pytest", "-m", GPU_MARKERS, "-q", "-rs", "-p", "no:cacheprovider",
              "--timeout", "90"], 100, "tests", "tests"),
        Step("ort-cuda-test", "ONNX Runtime CUDA test (not marked gpu)",
             [python, "-m", "pytest", ORT_CUDA_TEST[0], "-k", ORT_CUDA_TEST[1], "-q", "-rs",
              "-p", "no:cacheprovider", "--timeout", "60"], 45, "ort_cuda", "tests"),
    ]  # fmt: skip

    def bench(name: str, title: str, model: dict[str, Any], backend: str, batch: int,
              compare: list[str], skip: tuple[str, ...], budget: float, when: str | None) -> Step:  # fmt: skip
        path = str(logs / f"{name}.json")
        cmd = bench_cmd(python, model, backend, batch, compare=compare, skip=skip, json_path=path,
                        max_size_flag=max_size_flag)  # fmt: skip
        meta = {"model": model["name"], "backend": backend, "batch_size": batch,
                "input": "x".join(map(str, model["input"])), "compare": compare}  # fmt: skip
        return Step(name, title, cmd, budget, when, "bench", path, meta)

    fcn, mask = MODELS
    no_seq = ("sequential", "hop")
    # 1. PyTorch CUDA, both models: inference alone + pipeline at batch 4, inference at 1/4/8.
    for m, budget in ((fcn, 60), (mask, 75)):
        steps.append(bench(f"torch-{m['key']}-b4", f"PyTorch CUDA {m['name']} b4: pipeline vs inference; "
                           "inference b1/4/8", m, "pytorch", 4, ["pytorch"], no_seq, budget, "cuda"))  # fmt: skip
    # 2. ONNX Runtime CUDA against PyTorch in one process (same frames).
    for m, budget in ((fcn, 75), (mask, 100)):
        steps.append(bench(f"ort-{m['key']}-b4", f"ONNX Runtime CUDA {m['name']} b4: pipeline vs inference; "
                           "ORT vs PyTorch b1/4/8", m, "onnxruntime", 4, ["pytorch", "onnxruntime"],
                           no_seq, budget, "ort_cuda"))  # fmt: skip
    # 3. Pipeline vs inference alone at batch 8 and 1 (PyTorch CUDA).
    for batch in (8, 1):
        for m, budget in ((fcn, 35), (mask, 45)):
            steps.append(bench(f"torch-{m['key']}-b{batch}", f"PyTorch CUDA {m['name']} b{batch}: pipeline "
                               "vs inference", m, "pytorch", batch, [], no_seq, budget, "cuda"))  # fmt: skip
    # 4. TensorRT (engine builds are slow: last).
    for m, budget in ((fcn, 120), (mask, 150)):
        steps.append(bench(f"trt-{m['key']}-b4", f"TensorRT {m['name']} b4: pipeline vs inference; "
                           "TensorRT vs PyTorch b1/4/8", m, "tensorrt", 4, ["pytorch", "tensorrt"],
                           no_seq, budget, "tensorrt"))  # fmt: skip
    return steps


def select_steps(steps: list[Step], only: list[str], skip: list[str]) -> list[Step]:
    """Filter by name or shell pattern (``torch-*``). A pattern matching nothing raises ValueError."""
    names = [s.name for s in steps]

    def matches(pattern: str, name: str) -> bool:
        return fnmatch.fnmatchcase(name, pattern)

    for pattern in [*only, *skip]:
        if not any(matches(pattern, n) for n in names):
            raise ValueError(f"unknown step '{pattern}' (steps: {', '.join(names)})")
    return [s for s in steps if (not only or any(matches(p, s.name) for p in only))
            and not any(matches(p, s.name) for p in skip)]  # fmt: skip


# --------------------------------------------------------------------------- running


def step_env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the command's process group, SIGKILL it after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, chars: int = 3000) -> str:
    try:
        data = path.read_bytes()[-chars:]
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


def run_command(cmd: list[str], timeout: float, log_path: Path, *, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd`` in its own process group with output to ``log_path``; kill it at ``timeout``.

    Returns ``{"status": "ok"|"failed"|"timeout", "rc", "seconds", "output_tail"}``.
    """
    t0 = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        out.write(f"$ {shlex.join(cmd)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=str(cwd), env=env, start_new_session=True)  # fmt: skip
        except OSError as exc:
            return {"status": "failed", "rc": None, "seconds": 0.0, "output_tail": f"cannot start: {exc}"}
        try:
            rc: int | None = proc.wait(timeout=max(0.1, timeout))
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            kill_group(proc)
            rc, status = proc.returncode, "timeout"
        except BaseException:
            kill_group(proc, grace=2.0)
            raise
    result = {"status": status, "rc": rc, "seconds": round(time.monotonic() - t0, 2),
              "output_tail": tail(log_path)}  # fmt: skip
    return result


def pytest_summary(text: str) -> str:
    """The last pytest summary line (``3 passed, 2 skipped in 12.3s``), or ''."""
    for line in reversed(text.splitlines()):
        s = line.strip().strip("=").strip()
        if re.search(r"\b(passed|failed|skipped|error|errors|deselected|no tests ran)\b", s) and " in " in s:
            return s
    return ""


def bench_summary(figures: dict[str, Any]) -> str:
    parts = []
    if "inference_fps" in figures:
        parts.append(f"inference {figures['inference_fps']:.1f} fps")
    if "pipeline_fps" in figures:
        parts.append(f"pipeline {figures['pipeline_fps']:.1f} fps")
    if "pipeline_vs_inference" in figures:
        parts.append(f"c/b {figures['pipeline_vs_inference']:.2f}")
    for r in figures.get("backends", []):
        parts.append(f"{r['backend']} b{r['batch_size']} {r['fps']:.1f}")
    return ", ".join(parts)


def parse_bench_output(text: str) -> dict[str, Any]:
    """Figures from pipeline.bench's printed lines: the fallback when it died before --json."""
    figures: dict[str, Any] = {}
    found = re.search(r"\(b\) inference alone\s+([0-9.]+) fps", text)
    if found:
        figures["inference_fps"] = float(found.group(1))
    found = re.search(r"\(c\) pipeline\s+([0-9.]+) fps(?:\s+\(latency p50 ([0-9.]+) ms, p95 ([0-9.]+) ms\))?", text)
    if found:
        figures["pipeline_fps"] = float(found.group(1))
        if found.group(2):
            figures["pipeline_latency_ms"] = {"p50": float(found.group(2)), "p95": float(found.group(3))}
    if "inference_fps" in figures and "pipeline_fps" in figures and figures["inference_fps"] > 0:
        figures["pipeline_vs_inference"] = figures["pipeline_fps"] / figures["inference_fps"]
    return figures


def summary_rows(steps: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Flat tables from the bench steps' figures: pipeline vs inference, and backends."""
    pipeline, backends = [], []
    for s in steps:
        fig = s.get("figures") or {}
        meta = s.get("meta") or {}
        if not fig:
            continue
        if "inference_fps" in fig or "pipeline_fps" in fig:
            pipeline.append({"step": s["name"], "model": meta.get("model"), "backend": meta.get("backend"),
                             "batch_size": meta.get("batch_size"), "input": meta.get("input"),
                             "inference_fps": fig.get("inference_fps"), "pipeline_fps": fig.get("pipeline_fps"),
                             "pipeline_vs_inference": fig.get("pipeline_vs_inference"),
                             "pipeline_latency_ms": fig.get("pipeline_latency_ms")})  # fmt: skip
        for r in fig.get("backends", []):
            backends.append({"step": s["name"], "model": meta.get("model"), "input": meta.get("input"), **r})
    return {"pipeline_vs_inference": pipeline, "backends": backends}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically (re)write ``path``: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Runner:
    """Runs steps against one deadline and rewrites the results file after each."""

    def __init__(self, results: dict[str, Any], out: Path, logs: Path, deadline: float, start: float,
                 repo: Path = REPO) -> None:  # fmt: skip
        self.results, self.out, self.logs, self.deadline, self.start = results, out, logs, deadline, start
        self.repo = repo
        self.failed = False

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.monotonic() - self.start, 1)
        self.results["summary"] = summary_rows(self.results["steps"])
        write_json(self.out, self.results)

    def run(self, step: Step, index: int, total: int, features: dict[str, bool]) -> dict[str, Any]:
        record: dict[str, Any] = {"name": step.name, "title": step.title, "kind": step.kind,
                                  "command": shlex.join(step.cmd), "budget_s": step.budget_s,
                                  "meta": step.meta, "started": now_iso()}  # fmt: skip
        self.results["steps"].append(record)
        left = self.deadline - time.monotonic()
        head = f"step {index}/{total} {step.name}"
        if step.when is not None and not features.get(step.when):
            record.update(status="skipped", reason=f"needs {step.when}")
            log(f"{head}: skipped ({step.when} not available)", start=self.start)
        elif left < MIN_STEP_S:
            record.update(status="skipped", reason=f"no time left ({left:.0f} s of the total budget)")
            self.failed = True
            log(f"{head}: skipped, no time left ({left:.0f} s)", start=self.start)
        else:
            timeout = min(step.budget_s, left)
            log(f"{head} (timeout {timeout:.0f}s): {step.title}", start=self.start)
            log(f"  $ {shlex.join(step.cmd)}", start=self.start)
            log_path = self.logs / f"{index:02d}-{step.name}.log"
            record["log"] = str(log_path)
            record["timeout_s"] = round(timeout, 1)
            if step.json_path:
                with contextlib.suppress(OSError):
                    os.unlink(step.json_path)
            record.update(run_command(step.cmd, timeout, log_path, cwd=self.repo, env=step_env(self.repo)))
            if step.json_path and os.path.exists(step.json_path):
                try:
                    record["figures"] = json.loads(Path(step.json_path).read_text())
                except (OSError, ValueError) as exc:
                    record["figures_error"] = str(exc)
            if step.kind == "bench" and not record.get("figures"):
                partial = parse_bench_output(tail(log_path, 20000))
                if partial:
                    record["figures"] = {**partial, "from_log": True}
            if record["status"] != "ok":
                self.failed = True
            detail = pytest_summary(record["output_tail"]) if step.kind == "tests" else \
                bench_summary(record.get("figures") or {})
            if record["status"] != "ok":
                last = [ln for ln in record["output_tail"].splitlines() if ln.strip()][-1:] or [""]
                detail = detail or last[0][-200:]
            log(f"  {step.name}: {record['status']} in {record['seconds']:.1f}s"
                + (f" (rc {record['rc']})" if record["status"] == "failed" else "")
                + (f": {detail}" if detail else ""), start=self.start)  # fmt: skip
        record["finished"] = now_iso()
        self.save()
        return record


# --------------------------------------------------------------------------- machine, commit

PROJECT_CHECK = r"""
import contextlib, io, json, sys
spec = json.loads(sys.argv[1])
out = {"models": [], "bench_flags": [], "errors": []}
try:
    from engines.registry import get_model_entry
    from engines.transform import target_size
    from engines.weights import resolve_weights
    from pipeline.sources import open_source
except BaseException as exc:
    out["errors"].append("cannot import the project: %s: %s" % (type(exc).__name__, exc))
    print("GPU_CHECK_PROJECT " + json.dumps(out)); raise SystemExit(0)
for m in spec["models"]:
    r = {"name": m["name"]}
    try:
        e = get_model_entry(m["name"])
        w = resolve_weights(m["name"], m["weights"])
        max_size = m["max_size"] or e.max_size
        with contextlib.closing(open_source(m["uri"])) as src:
            info = src.info()
        r.update(task=e.task, weights=w.tag, untrained=w.untrained, registry_min=e.min_size,
                 registry_max=e.max_size, source=[info.width, info.height],
                 input=list(target_size(info.height, info.width, m["min_size"], max_size)))
    except BaseException as exc:
        r["error"] = "%s: %s" % (type(exc).__name__, exc)
    out["models"].append(r)
try:
    import pipeline.bench as bench
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        bench.main(["--help"])
    import re
    out["bench_flags"] = sorted(set(re.findall(r"(--[a-z][a-z0-9-]*)", buf.getvalue())))
except BaseException as exc:
    out["errors"].append("pipeline.bench: %s: %s" % (type(exc).__name__, exc))
print("GPU_CHECK_PROJECT " + json.dumps(out))
"""


def check_project(python: str, repo: Path, timeout: float = 120.0) -> dict[str, Any]:
    spec = {"models": [{**m, "uri": source_uri(m, 4)} for m in MODELS]}
    try:
        proc = subprocess.run([python, "-c", PROJECT_CHECK, json.dumps(spec)], capture_output=True, text=True,
                              timeout=timeout, cwd=str(repo), env=step_env(repo))  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"models": [], "bench_flags": [], "errors": [f"project check: {exc}"]}
    for line in proc.stdout.splitlines():
        if line.startswith("GPU_CHECK_PROJECT "):
            return json.loads(line[len("GPU_CHECK_PROJECT "):])
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"models": [], "bench_flags": [], "errors": [f"project check failed: {last}"]}


def collect_tests(python: str, repo: Path, selection: list[str], timeout: float = 120.0) -> tuple[int, str]:
    """How many tests ``pytest --collect-only SELECTION`` selects, and its summary (or error)."""
    cmd = [python, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *selection]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(repo),
                              env=step_env(repo))  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, str(exc)
    found = re.search(r"(\d+)(?:/\d+)? tests? collected", proc.stdout)
    if proc.returncode not in (0, 5) or not found:
        last = ((proc.stdout + proc.stderr).strip().splitlines() or ["no output"])[-1]
        return -1, f"pytest --collect-only failed (rc {proc.returncode}): {last}"
    return int(found.group(1)), (proc.stdout.strip().splitlines() or [""])[-1]


def project_errors(project: dict[str, Any]) -> list[str]:
    """Problems with the planned models/flags (pure function over check_project's answer)."""
    errors = list(project.get("errors", []))
    flags = set(project.get("bench_flags", []))
    if flags or not errors:
        missing = [f for f in BENCH_FLAGS if f not in flags]
        if missing:
            errors.append(f"pipeline.bench lacks flags {' '.join(missing)}")
    by_name = {m["name"]: m for m in project.get("models", [])}
    for m in MODELS if not project.get("errors") else []:
        got = by_name.get(m["name"])
        if got is None:
            errors.append(f"{m['name']}: not checked")
        elif "error" in got:
            errors.append(f"{m['name']} --weights {m['weights']}: {got['error']}")
        elif tuple(got["input"]) != tuple(m["input"]):
            why = "" if "--max-size" in flags else f" (pipeline.bench has no --max-size; registry max {got['registry_max']})"
            errors.append(f"{m['name']}: a {m['size'][0]}x{m['size'][1]} frame becomes {got['input'][0]}x"
                          f"{got['input'][1]}, not {m['input'][0]}x{m['input'][1]}{why}")  # fmt: skip
    return errors


def nvidia_smi() -> dict[str, Any]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {"error": "nvidia-smi not found"}
    info: dict[str, Any] = {}
    try:
        q = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total,compute_cap",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30)  # fmt: skip
        keys = ("name", "driver", "memory", "compute_cap")
        info["gpus"] = []
        for line in q.stdout.splitlines():
            values = [x.strip() for x in line.split(",")]
            if line.strip():
                info["gpus"].append({k: values[i] for i, k in enumerate(keys) if i < len(values)})
        if q.returncode != 0:
            info["error"] = (q.stderr or q.stdout).strip()[-300:]
        head = subprocess.run([exe], capture_output=True, text=True, timeout=30).stdout
        found = re.search(r"CUDA Version:\s*([0-9.]+)", head)
        info["cuda_driver_version"] = found.group(1) if found else None
        found = re.search(r"Driver Version:\s*([0-9.]+)", head)
        info["driver_version"] = found.group(1) if found else None
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["error"] = str(exc)
    return info


def commit_info(repo: Path, env: dict[str, str]) -> dict[str, Any]:
    """``git rev-parse HEAD`` if git knows the tree; else SEGSTREAM_COMMIT, or a COMMIT file."""
    info: dict[str, Any] = {"sha": None, "source": None}
    if shutil.which("git") and (repo / ".git").exists():
        try:
            head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                  text=True, timeout=20)  # fmt: skip
            if head.returncode == 0:
                info.update(sha=head.stdout.strip(), source="git rev-parse HEAD")
                st = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=20)  # fmt: skip
                info["dirty_files"] = len(st.stdout.splitlines())
        except (OSError, subprocess.TimeoutExpired):
            pass
    if info["sha"] is None and env.get("SEGSTREAM_COMMIT"):
        info.update(sha=env["SEGSTREAM_COMMIT"].strip(), source="env SEGSTREAM_COMMIT")
    if info["sha"] is None:
        for name in ("COMMIT", ".commit", "REVISION"):
            p = repo / name
            if p.is_file():
                info.update(sha=p.read_text().strip().split()[0] if p.read_text().strip() else None,
                            source=f"file {name}")  # fmt: skip
                break
    info["tree_sha256"] = tree_hash(repo)
    return info


def tree_hash(repo: Path) -> str:
    """SHA-256 over the project's source files (path + content): identifies a tree without git."""
    h = hashlib.sha256()
    for top in ("pipeline", "engines", "tests", "scripts", "configs"):
        for p in sorted((repo / top).rglob("*")):
            if p.is_file() and p.suffix in (".py", ".sh", ".yaml", ".toml") and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(repo)).encode() + b"\0" + p.read_bytes() + b"\0")
    for name in ("pyproject.toml", "run_pipeline.py"):
        if (repo / name).is_file():
            h.update(name.encode() + b"\0" + (repo / name).read_bytes() + b"\0")
    return h.hexdigest()


def machine_info(probe: dict[str, Any], smi: dict[str, Any]) -> dict[str, Any]:
    t = probe.get("torch", {})
    mods = probe.get("modules", {})

    def ver(name: str) -> str | None:
        return mods[name]["version"] if mods.get(name, {}).get("ok") else None

    gpus = smi.get("gpus") or []
    return {
        "hostname": socket.gethostname(), "platform": platform.platform(), "cpus": os.cpu_count(),
        "gpu_name": gpus[0]["name"] if gpus else None, "gpus": gpus,
        "driver_version": smi.get("driver_version") or (gpus[0].get("driver") if gpus else None),
        "cuda_version": smi.get("cuda_driver_version"), "nvidia_smi_error": smi.get("error"),
        "python": ".".join(str(v) for v in probe.get("version", [])), "python_path": probe.get("path"),
        "torch": t.get("version"), "torch_cuda": t.get("cuda_build"), "cudnn": t.get("cudnn"),
        "torch_devices": t.get("devices"), "torchvision": ver("torchvision"),
        "onnxruntime": ver("onnxruntime"), "ort_providers": probe.get("ort_providers"),
        "tensorrt": ver("tensorrt"),
    }  # fmt: skip


# --------------------------------------------------------------------------- command line


class OneLineParser(argparse.ArgumentParser):
    """Usage errors: one line on stderr, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"gpu_check: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def default_out(env: dict[str, str]) -> Path:
    return Path(env["OUT"]) / "gpu_check.json" if env.get("OUT") else Path("gpu_check.json")


def parse_args(argv: list[str] | None, env: dict[str, str]) -> argparse.Namespace:
    p = OneLineParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="resolve and print the plan; run nothing")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default: $OUT/gpu_check.json if OUT is set, else gpu_check.json)")
    p.add_argument("--python", help="use this python (default: probe the usual places)")
    p.add_argument("--wheels", type=Path, default=None, help="wheelhouse for offline installs (default: <repo>/.whl)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="total seconds (default 480)")
    p.add_argument("--only", action="append", default=[], metavar="STEP", help="run only these steps (NAME or pattern, e.g. torch-*)")
    p.add_argument("--skip", action="append", default=[], metavar="STEP", help="leave out these steps")
    p.add_argument("--no-install", action="store_true", help="report what is missing; install nothing")
    args = p.parse_args(argv)
    if args.budget <= 0:
        p.error("--budget must be positive")
    args.out = (args.out or default_out(env)).expanduser().absolute()
    args.wheels = (args.wheels or REPO / ".whl").expanduser().absolute()
    args.only = [s for v in args.only for s in v.split(",") if s]
    args.skip = [s for v in args.skip for s in v.split(",") if s]
    return args


def check_writable(path: Path) -> str | None:
    """None if ``path`` can be written (tested with a temporary file), else why not."""
    if path.is_dir():
        return f"{path} is a directory"
    parent = path.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    if parent.exists():
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(parent))
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            return f"cannot write in {parent}: {exc.strerror}"
    elif not os.access(existing, os.W_OK):
        return f"cannot create {parent}: {existing} is not writable"
    return None


def fail(message: str, results: dict[str, Any] | None = None, out: Path | None = None) -> int:
    print(f"gpu_check: error: {message}", file=sys.stderr, flush=True)
    if results is not None and out is not None:
        results.update(status="error", error=message, finished=now_iso())
        with contextlib.suppress(OSError):
            write_json(out, results)
    return 2


def main(argv: list[str] | None = None) -> int:
    env = dict(os.environ)
    args = parse_args(argv, env)
    start = time.monotonic()
    deadline = start + args.budget
    dry = args.dry_run
    logs = args.out.with_name(args.out.stem + ".logs")
    write_problem = check_writable(args.out)
    if write_problem:
        return fail(f"output {args.out}: {write_problem}")
    try:  # step names are known before anything is probed
        select_steps(build_steps("python", logs, max_size_flag=False), args.only, args.skip)
    except ValueError as exc:
        return fail(str(exc))

    log(f"{'dry run: ' if dry else ''}repo {REPO}, out {args.out}, budget {args.budget:.0f}s", start=start)
    pythons = candidate_pythons(args.python, env, REPO)
    log(f"probing {len(pythons)} python(s): {', '.join(pythons) or 'none'}", start=start)
    probes = probe_all(pythons, REPO)
    for pr in probes:
        log(f"  {describe_probe(pr)}", start=start)
    chosen = choose_python(probes)
    wheels = scan_wheelhouse(args.wheels)
    log(f"wheelhouse {args.wheels}: " + (f"{len(wheels)} wheel(s)" if wheels else "none"), start=start)
    res = resolve(chosen, wheels, need_cuda=not dry, wheel_dir=str(args.wheels), machine=platform.machine())
    smi = nvidia_smi()
    results: dict[str, Any] = {
        "schema": SCHEMA, "tool": "scripts/gpu_check.sh", "status": "running", "dry_run": dry,
        "started": now_iso(), "finished": None, "budget_s": args.budget, "elapsed_s": 0.0,
        "commit": commit_info(REPO, env), "machine": machine_info(chosen or {}, smi),
        "python": res.python, "candidates": [describe_probe(p) for p in probes],
        "install": {"specs": res.install, "reasons": res.install_reasons, "uninstall": res.uninstall,
                    "target": res.target, "missing": res.missing},
        "features": res.features, "feature_notes": res.feature_notes, "steps": [], "summary": {},
    }  # fmt: skip
    m = results["machine"]
    log(f"machine: GPU {m['gpu_name'] or '-'} (driver {m['driver_version'] or '-'}, CUDA {m['cuda_version'] or '-'}), "
        f"torch {m['torch'] or '-'} (CUDA build {m['torch_cuda'] or '-'}), {m['cpus']} CPUs; "
        f"commit {results['commit']['sha'] or 'unknown'} ({results['commit']['source'] or 'no git, no COMMIT file'})",
        start=start)  # fmt: skip
    if dry and smi.get("error"):
        log(f"  {smi['error']} (fine for a dry run)", start=start)
    out_for_errors = None if dry else args.out
    if res.errors:
        return fail(res.errors[0], results, out_for_errors)

    python = res.python
    assert python is not None
    pip_python = next((p["path"] for p in probes if p.get("pip")), None)
    install = install_commands(res, REPO, args.wheels, pip_python)
    for reason in res.install_reasons:
        log(f"  install: {reason}", start=start)
    for line in res.missing:
        log(f"  missing: {line}", start=start)
    for key in ("ort_cuda", "tensorrt"):
        log(f"  {key}: {'yes' if res.features.get(key) else 'no'} - {res.feature_notes.get(key, '')}", start=start)

    # The project side: models, weights, sizes, bench flags (with the python as it is now;
    # in a real run after the install, again with the installed one).
    def project_check(py: str) -> tuple[dict[str, Any], list[str]]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            checked = pool.submit(check_project, py, REPO)
            gpu_tests = pool.submit(collect_tests, py, REPO, ["-m", GPU_MARKERS])
            ort_test = pool.submit(collect_tests, py, REPO, [ORT_CUDA_TEST[0], "-k", ORT_CUDA_TEST[1]])
            project = checked.result()
            collected = {"gpu-tests": gpu_tests.result(), "ort-cuda-test": ort_test.result()}
        project["tests_selected"] = {k: n for k, (n, _) in collected.items()}
        for name, (count, text) in collected.items():
            if count < 1:
                project.setdefault("errors", []).append(f"{name}: selects no test ({text})")
            else:
                log(f"  {name}: {text}", start=start)
        for pm in project.get("models", []):
            if "error" not in pm:
                log(f"  model {pm['name']} --weights random ({pm['weights']}, {pm['task']}): "
                    f"{pm['source'][0]}x{pm['source'][1]} frame -> input {pm['input'][0]}x{pm['input'][1]} "
                    f"(registry min {pm['registry_min']}, max {pm['registry_max']})", start=start)  # fmt: skip
        return project, project_errors(project)

    project: dict[str, Any] = {}
    if not dry and install and not args.no_install:
        pass  # checked after the install below
    else:
        project, errors = project_check(python)
        results["project"] = project
        deferred = install and all(e.startswith("cannot import the project") for e in project.get("errors", []))
        if errors and dry and deferred and project.get("errors"):
            log(f"  project check deferred until after the install ({errors[0]})", start=start)
        elif errors:
            return fail(errors[0], results, out_for_errors)
    max_size_flag = "--max-size" in project.get("bench_flags", [])
    steps = select_steps(build_steps(python, logs, max_size_flag=max_size_flag), args.only, args.skip)
    if install:
        steps.insert(0, Step("install", "offline install from the wheelhouse",
                             [shlex.join(c) for c in install], 150, None, "install"))  # fmt: skip

    if dry:
        return print_plan(args, results, res, steps, python, max_size_flag, start)

    # ---- the real run
    results["plan"] = [{"name": s.name, "command": shlex.join(s.cmd) if s.kind != "install" else s.cmd,
                        "budget_s": s.budget_s, "when": s.when} for s in steps]  # fmt: skip
    runner = Runner(results, args.out, logs, deadline, start)
    runner.save()
    interrupted = False

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        if install:
            steps.pop(0)
            if args.no_install:
                return fail("needs an install (--no-install given): " + "; ".join(res.install_reasons), results, args.out)
            record = {"name": "install", "kind": "install", "budget_s": 150.0, "started": now_iso(),
                      "commands": [shlex.join(c) for c in install]}  # fmt: skip
            results["steps"].append(record)
            log(f"step install (timeout {min(150.0, deadline - time.monotonic()):.0f}s): "
                f"{len(res.install)} package(s) from {args.wheels}", start=start)  # fmt: skip
            for cmd in install:
                log(f"  $ {shlex.join(cmd)}", start=start)
                outcome = run_command(cmd, min(150.0, deadline - time.monotonic()), logs / "00-install.log",
                                      cwd=REPO, env=step_env(REPO))  # fmt: skip
                record.update(outcome)
                if outcome["status"] != "ok":
                    runner.save()
                    last = [ln for ln in outcome["output_tail"].splitlines() if ln.strip()][-1:] or [""]
                    return fail(f"install failed ({outcome['status']}): {last[0][-300:]}", results, args.out)
            new_python = str(REPO / ".venv" / "bin" / "python") if res.target == "venv" else python
            after = probe_python(new_python, REPO)
            res2 = resolve(after, [], need_cuda=True)
            results.update(python=new_python, machine=machine_info(after, smi), features=res2.features,
                           feature_notes=res2.feature_notes)  # fmt: skip
            record["after"] = describe_probe(after)
            log(f"  installed; now {describe_probe(after)}", start=start)
            if res2.errors:
                return fail(res2.errors[0], results, args.out)
            res, python = res2, new_python
            project, errors = project_check(python)
            results["project"] = project
            if errors:
                return fail(errors[0], results, args.out)
            max_size_flag = "--max-size" in project.get("bench_flags", [])
            steps = select_steps(build_steps(python, logs, max_size_flag=max_size_flag), args.only, args.skip)
            runner.save()
        for i, step in enumerate(steps, 1):
            runner.run(step, i, len(steps), res.features)
    except KeyboardInterrupt:
        interrupted = True
    results["finished"] = now_iso()
    results["status"] = "interrupted" if interrupted else ("failed" if runner.failed else "ok")
    runner.save()
    print_summary(results, start)
    log(f"results: {args.out} (status {results['status']})", start=start)
    return 130 if interrupted else (1 if runner.failed else 0)


def print_plan(args: argparse.Namespace, results: dict[str, Any], res: Resolution, steps: list[Step],
               python: str, max_size_flag: bool, start: float) -> int:  # fmt: skip
    """The dry run's answer: every step, its condition and exact command; exit 0."""
    print("plan:", flush=True)
    print(f"  python: {python}", flush=True)
    if not max_size_flag:
        print("  note: pipeline.bench has no --max-size; maskrcnn_resnet50_fpn keeps the registry's "
              "max_size 1333 (checked above)", flush=True)  # fmt: skip
    for n, step in enumerate(steps, 1):
        if step.kind == "install":
            print(f"  {n:2d}. install (budget {step.budget_s:.0f}s): would install "
                  + ", ".join(res.install_reasons), flush=True)  # fmt: skip
            for c in step.cmd:
                print(f"        $ {c}", flush=True)
            continue
        cond = "always" if step.when in (None, "cuda", "tests") else f"if {step.when}"
        here = "runs" if step.when is None or res.features.get(step.when) else \
            f"would skip here: {res.feature_notes.get(step.when, step.when + ' not available')}"
        if step.when == "tensorrt":
            cond = "if import tensorrt works"
        elif step.when == "ort_cuda":
            cond = "if onnxruntime has CUDAExecutionProvider"
        print(f"  {n:2d}. {step.name} (budget {step.budget_s:.0f}s, {cond}; {here}): {step.title}", flush=True)
        print(f"        $ {shlex.join(step.cmd)}", flush=True)
    total = sum(s.budget_s for s in steps)
    print(f"  budgets add up to {total:.0f}s; the run stops starting steps at {args.budget:.0f}s total "
          f"(later steps are skipped and recorded as such)", flush=True)  # fmt: skip
    print(f"  results: {args.out} (rewritten after every step), logs: {args.out.with_name(args.out.stem + '.logs')}/",
          flush=True)  # fmt: skip
    log("dry run: every step resolves; nothing was run", start=start)
    return 0


def print_summary(results: dict[str, Any], start: float) -> None:
    summary = results.get("summary") or {}
    for row in summary.get("pipeline_vs_inference", []):
        inf, pipe, ratio = row.get("inference_fps"), row.get("pipeline_fps"), row.get("pipeline_vs_inference")
        log(f"  {row['model']:<22} {row['backend']:<12} b{row['batch_size']} {row['input']}: inference "
            f"{inf if inf is None else round(inf, 1)} fps, pipeline {pipe if pipe is None else round(pipe, 1)} fps, "
            f"c/b {ratio if ratio is None else round(ratio, 2)}", start=start)  # fmt: skip
    for row in summary.get("backends", []):
        log(f"  {row['model']:<22} {row['backend']:<12} b{row['batch_size']}: {row['fps']:.1f} fps, "
            f"latency p50 {row['latency_ms_p50']:.1f} ms", start=start)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
