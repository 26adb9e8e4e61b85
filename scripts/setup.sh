#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install the project into it.
# The venv lives outside the checkout so fresh clones (CI) reuse the multi-GB torch install.
# Prints the venv's python path on the last line of stdout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SEGSTREAM_VENV:-$HOME/.cache/segstream/venv}"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating virtual environment at $venv" >&2
    mkdir -p "$(dirname "$venv")"
    "$py" -m venv "$venv"
fi

# Reinstall only when the dependency list changed (the stamp holds pyproject's hash).
stamp="$venv/.segstream-deps"
want="$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] || ! "$venv/bin/python" -c "import pipeline, engines" 2>/dev/null; then
    echo "[setup] installing dependencies (first run downloads torch: several GB, a few minutes)" >&2
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q -e "$here[onnx,openvino,metrics,robotics,fleet,dev,peers]" >&2
    # evaluation peers without their opencv-python requirement (see pyproject's "peers")
    "$venv/bin/python" -m pip install -q --no-deps "trackers>=2.6,<3" "trackeval>=1.3,<2" >&2
    if "$venv/bin/python" -m pip show -q opencv-python >/dev/null 2>&1; then
        # a GUI cv2 build shares the headless one's files: put the headless one back
        "$venv/bin/python" -m pip uninstall -q -y opencv-python >&2
        "$venv/bin/python" -m pip install -q --force-reinstall --no-deps opencv-python-headless >&2
    fi
    echo "$want" > "$stamp"
else
    # The editable install points at whichever checkout installed it last; repoint cheaply.
    "$venv/bin/python" -m pip install -q --no-deps -e "$here" >&2
fi
echo "$venv/bin/python"
