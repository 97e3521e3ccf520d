#!/usr/bin/env bash
# The Debian packages lmms builds against (FFmpeg for video frames, clang for its bindings),
# and Chromium with chromedriver, which the web UI's browser test (tests/serve_browser.rs) drives.
# Installs only what is missing; needs root (or sudo) the first time.
set -euo pipefail
PACKAGES=(pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev libswscale-dev
    chromium chromium-driver)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
