#!/usr/bin/env bash
# Set up (scripts/bootstrap.sh) and run a stream-spk command, e.g.
#   scripts/run.sh replay meeting.wav          scripts/run.sh gui
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/bootstrap.sh" >&2
exec "$here/${STREAM_SPK_VENV:-.venv}/bin/stream-spk" "$@"
