#!/usr/bin/env bash
# One-shot set-up: system libraries the device drivers load, a virtualenv, the package.
# Usage: scripts/setup.sh [VENV_DIR]    (called by `make demo` / `make test`)
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}

# System libraries: libusb (pyrealsense2 loads it), OpenNI2 runtime with its Dummy/OniFile drivers
# (Asus Xtion), Chromium (headless check of the HTML reports). Optional: without them the
# matching tests skip with a reason.
SYS_PKGS="libusb-1.0-0 libopenni2-0 chromium"
missing=""
for p in $SYS_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ] && command -v apt-get >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=$(command -v sudo || true)
    if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
        echo "setup: installing system packages:$missing"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
        echo "setup: warning: cannot install$missing (not root, no sudo); tests needing them will skip" >&2
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch is pinned in pyproject.toml (CPU wheel where the machine provides one). Set
# PIP_EXTRA_INDEX_URL to your PyTorch CPU index to avoid a CUDA build on other machines.
"$VENV/bin/python" -m pip install -q -e ".[cpu,dev]"
touch "$VENV/.installed"
echo "setup: ok ($VENV)"
