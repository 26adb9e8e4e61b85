#!/usr/bin/env bash
# Set up, then run the pipeline (default: configs/default.yaml). Extra arguments go to run_pipeline.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$("$here/scripts/setup.sh" | tail -n 1)"
cd "$here"
exec "$python" run_pipeline.py "$@"
