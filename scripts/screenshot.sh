#!/usr/bin/env bash
# A PNG of the desktop app mid-replay, for the docs: runs the real window under Xvfb.
#
#   scripts/screenshot.sh [RECORDING] [PNG]
#
# RECORDING defaults to /work/shared/data/dev/dev_vctk4.wav (if present); PNG to docs/screenshot.png.
# Environment: AT (stream seconds of the shot, default 50), SPEED (replay speed, default 4),
# ENROLL_DIR (a folder of <name>/ sub-folders of speech; default /work/shared/data/enroll when
# present): the first two speakers found there are enrolled in a temporary store first, so the
# shot shows recognised (named) speakers next to anonymous ones.
set -euo pipefail
cd "$(dirname "$0")/.."
REC="${1:-/work/shared/data/dev/dev_vctk4.wav}"
OUT="${2:-docs/screenshot.png}"
AT="${AT:-50}"
SPEED="${SPEED:-4}"
if [ ! -f "$REC" ]; then
    echo "usage: scripts/screenshot.sh [RECORDING] [PNG]   (no recording at $REC)" >&2
    exit 2
fi
. "${STREAM_SPK_VENV:-.venv}/bin/activate"
mkdir -p "$(dirname "$OUT")"
WORK="$(mktemp -d)"
XPID=""
cleanup() {
    if [ -n "$XPID" ]; then kill "$XPID" 2>/dev/null || true; wait "$XPID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# A display: the user's, or our own Xvfb (xvfb-run may be missing).
if [ -z "${DISPLAY:-}" ]; then
    XVFB="$(command -v Xvfb || echo /usr/bin/Xvfb)"
    [ -x "$XVFB" ] || { echo "Xvfb not found (apt install xvfb)" >&2; exit 2; }
    N=99
    while [ -e "/tmp/.X11-unix/X$N" ] || [ -e "/tmp/.X$N-lock" ]; do N=$((N + 1)); done
    "$XVFB" ":$N" -screen 0 1400x900x24 -nolisten tcp >"$WORK/xvfb.log" 2>&1 &
    XPID=$!
    for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X$N" ] && break; sleep 0.1; done
    [ -e "/tmp/.X11-unix/X$N" ] || { echo "Xvfb did not start:" >&2; cat "$WORK/xvfb.log" >&2; exit 1; }
    export DISPLAY=":$N"
fi
unset QT_QPA_PLATFORM
if ! python -c "from PyQt5.QtWidgets import QApplication; QApplication([])" >"$WORK/qt.log" 2>&1; then
    echo "Qt cannot open a window on $DISPLAY (missing xcb libraries? apt install libxcb-icccm4" \
         "libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-render-util0 libxkbcommon-x11-0);" \
         "rendering offscreen instead" >&2
    export QT_QPA_PLATFORM=offscreen
fi

PROFILES="$WORK/profiles.sqlite3"
ENROLL_DIR="${ENROLL_DIR:-/work/shared/data/enroll}"
if [ -d "$ENROLL_DIR" ]; then
    names=(Alice Bob)
    k=0
    for dir in "$ENROLL_DIR"/*/; do
        [ "$k" -lt 2 ] || break
        files=("$dir"*.wav)
        [ -e "${files[0]}" ] || continue
        if stream-spk enroll "${names[$k]}" "${files[@]}" --profiles "$PROFILES" >"$WORK/enroll.log" 2>&1; then
            echo "enrolled ${names[$k]} from $dir" >&2
        else
            echo "enrolling from $dir failed (continuing):" >&2; tail -n 3 "$WORK/enroll.log" >&2
        fi
        k=$((k + 1))
    done
fi

stream-spk gui --replay "$REC" --speed "$SPEED" --profiles "$PROFILES" \
    --screenshot "$OUT" --screenshot-at "$AT" --exit-when-done
echo "wrote $OUT" >&2
