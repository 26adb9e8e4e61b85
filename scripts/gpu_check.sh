#!/usr/bin/env bash
# gpu_check.sh: the CUDA tests and benchmarks of segstream in one command, on a GPU machine
# with no network; every figure goes into one JSON file.
#
#   scripts/gpu_check.sh [--dry-run] [--out PATH] [--python PATH] [--wheels DIR]
#                        [--budget SECONDS] [--only STEP[,STEP]] [--skip STEP[,STEP]] [--no-install]
#
#   --dry-run     resolve everything and print the plan (pythons, modules, what would be
#                 installed, the exact commands, the models' input sizes, the output path);
#                 runs nothing and needs no GPU. Exit 0, or 2 with one line saying what fails.
#   --out PATH    results JSON (default: $OUT/gpu_check.json when OUT is set, else
#                 ./gpu_check.json). Rewritten after every step; logs go to <stem>.logs/.
#   --python      use this interpreter (default: probe $SEGSTREAM_PYTHON, $SEGSTREAM_VENV,
#                 ~/.cache/segstream/venv, ./.venv, $VIRTUAL_ENV, $CONDA_PREFIX, python3.x on
#                 PATH, /opt/conda, /usr/bin; the one whose torch sees a GPU wins).
#   --wheels DIR  wheelhouse for the offline install (default: ./.whl). Whatever the chosen
#                 python lacks (a project dependency, a CUDA build of torch, onnxruntime-gpu,
#                 tensorrt) is installed from it with `pip install --no-index --find-links DIR`,
#                 into the chosen venv, or into ./.venv (--system-site-packages) for a system
#                 python. Without a fitting wheel the run says exactly which package is missing.
#   --budget S    total time (default 480 s). Each step has its own timeout too; a step that
#                 would start with under 15 s left is skipped and recorded as such.
#   --only/--skip step names (or PREFIX*), e.g. --only 'torch-*' or --skip trt-maskrcnn-b4.
#
# Steps, cheapest and most important first (the dry run prints them with their commands):
#   install (only if needed) -> gpu-tests (pytest -m "gpu or tensorrt") -> ort-cuda-test ->
#   torch-{fcn,maskrcnn}-b4 (pipeline vs inference alone at batch 4, inference at 1/4/8) ->
#   ort-{fcn,maskrcnn}-b4 (ONNX Runtime CUDA vs PyTorch, if onnxruntime has CUDA) ->
#   torch-{fcn,maskrcnn}-b{8,1} (pipeline vs inference) -> trt-{fcn,maskrcnn}-b4 (if
#   `import tensorrt` works). Models: fcn_resnet50 --weights random on a 520x520 synthetic
#   scene (input 520x520), maskrcnn_resnet50_fpn --weights random on 1333x800 (input
#   800x1333: min-size 800, max-size 1333).
#
# Exit status: 0 every attempted step passed; 1 a step failed, timed out or ran out of
# time; 2 set-up cannot be resolved (one line on stderr); 130 interrupted.
#
# The commit recorded is `git rev-parse HEAD` where .git exists, else $SEGSTREAM_COMMIT,
# else the first word of a COMMIT file at the repo root (write one when copying the tree
# without .git: `git rev-parse HEAD > COMMIT`); a hash of the source tree is recorded too.
#
# Preparing a wheelhouse on a machine with network, for a Python 3.12 x86_64 GPU box:
#   pip download -d .whl --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#       torch torchvision numpy av opencv-python-headless pyzmq msgpack pycocotools pyyaml \
#       pydantic tqdm setproctitle pillow pytest pytest-timeout onnx onnxscript onnxruntime-gpu
#
# The logic lives in scripts/gpu_check.py (standard library only); this wrapper only finds
# a python >= 3.9 to run it with.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

runner=""
for cand in "${SEGSTREAM_PYTHON:-}" python3 python /usr/bin/python3 /usr/local/bin/python3 /opt/conda/bin/python; do
    [ -n "$cand" ] || continue
    command -v "$cand" >/dev/null 2>&1 || continue
    if "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' >/dev/null 2>&1; then
        runner="$(command -v "$cand")"
        break
    fi
done
if [ -z "$runner" ]; then
    echo "gpu_check: error: no python >= 3.9 found to run scripts/gpu_check.py (set SEGSTREAM_PYTHON)" >&2
    exit 2
fi

cd "$here"
exec "$runner" "$here/scripts/gpu_check.py" "$@"
