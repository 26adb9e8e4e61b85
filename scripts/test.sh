#!/usr/bin/env bash
# Set up, then run the test suite. Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# System packages for the live-stream tests (a real RTSP server) and the preview's browser
# test (Chromium); without them those tests skip with the reason, everything else still runs.
"$here/scripts/install-test-deps.sh" || echo "[test] could not install test system packages; RTSP tests will skip" >&2
python="$("$here/scripts/setup.sh" | tail -n 1)"
cd "$here"
exec "$python" -m pytest "$@"
