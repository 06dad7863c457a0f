#!/usr/bin/env bash
# Set up (scripts/bootstrap.sh) and run the whole test suite, real-model tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
. "${STREAM_SPK_VENV:-.venv}/bin/activate"
export QT_QPA_PLATFORM=offscreen
exec python -m pytest "$@"
