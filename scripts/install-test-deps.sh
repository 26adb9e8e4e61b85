#!/usr/bin/env bash
# Install the system packages the live-source tests need: a real RTSP server
# (GStreamer's gst-rtsp-server, driven by the system python3 through PyGObject) and
# the elements it uses (videotestsrc, x264enc, rtph264pay); and headless Chromium with its
# WebDriver for the live preview's browser test (tests/test_preview.py, through Selenium).
#
# Idempotent and quiet: does nothing when everything is present; runs `apt-get update`
# at most once. Needs root (or sudo) and Debian/Ubuntu; elsewhere it says what is
# missing and exits 0, so the tests that need the server skip with that reason.
set -euo pipefail

packages=(
    python3-gi                      # PyGObject for /usr/bin/python3
    gir1.2-gstreamer-1.0            # Gst typelib
    gir1.2-gst-plugins-base-1.0     # GstVideo/GstApp typelibs
    gir1.2-gst-rtsp-server-1.0      # GstRtspServer typelib (+ libgstrtspserver)
    gstreamer1.0-plugins-base       # videotestsrc, videoconvert
    gstreamer1.0-plugins-good       # rtph264pay, rtp/rtsp elements
    gstreamer1.0-plugins-ugly       # x264enc
    chromium                        # the live preview's browser test
    chromium-driver                 # /usr/bin/chromedriver, for Selenium
)

check() {
    /usr/bin/python3 - <<'PY' 2>/dev/null
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer  # noqa: F401
Gst.init(None)
missing = [e for e in ("videotestsrc", "videoconvert", "x264enc", "rtph264pay")
           if Gst.ElementFactory.find(e) is None]
raise SystemExit(1 if missing else 0)
PY
}

browser() {
    [ -x /usr/bin/chromedriver ] && command -v chromium >/dev/null 2>&1
}

if [ -x /usr/bin/python3 ] && check && browser; then
    exit 0
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ! command -v apt-get >/dev/null 2>&1; then
    echo "[install-test-deps] no apt-get: install GStreamer's RTSP server bindings and Chromium by hand (${missing[*]:-see script})" >&2
    exit 0
fi

sudo=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "[install-test-deps] not root and no passwordless sudo: cannot install ${missing[*]:-packages}; RTSP and browser tests will skip" >&2
        exit 0
    fi
fi

export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
    echo "[install-test-deps] installing ${missing[*]}" >&2
    if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        "${sudo[@]}" apt-get update -qq >/dev/null
        "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

if ! check; then
    echo "[install-test-deps] GStreamer RTSP server still not usable after install; RTSP tests will skip" >&2
fi
if ! browser; then
    echo "[install-test-deps] chromium/chromedriver still missing after install; browser tests will skip" >&2
fi
exit 0
