#!/usr/bin/env bash
# Set up everything stream-spk needs, from scratch or incrementally: system audio libraries
# (when run as root with apt), a virtual environment in .venv with the CPU build of torch,
# the package with its extras, and the verified ECAPA-TDNN checkpoint in the user cache.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${STREAM_SPK_VENV:-.venv}
PY=${PYTHON:-python3}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=""
  # PortAudio for the microphone; Xvfb and Qt's xcb libraries for a real window on a headless box;
  # PulseAudio + ALSA's pulse plugin for the live-microphone test on a real sound stack
  # (tests/test_live_pulse.py runs a private daemon with a null sink; nothing is started here)
  for pkg in libportaudio2 xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 \
             libxcb-render-util0 libxkbcommon-x11-0 pulseaudio pulseaudio-utils libasound2-plugins; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    echo "[bootstrap] apt-get install$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV"
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"

stamp="$VENV/.stream-spk-installed"
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[bootstrap] installing Python packages"
  python -m pip install -q --upgrade pip
  # The CPU build first, so that the open torch range below never pulls a CUDA build.
  # On a CUDA machine install your torch build before running this script.
  python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
  python -m pip install -q -e ".[ui,mic,dev]"
  echo "$want" > "$stamp"
fi

stream-spk models fetch --quiet >/dev/null
echo "[bootstrap] ready: $(stream-spk models path)"
