#!/usr/bin/env bash
# The README's main job: set everything up, then segment the bundled sample with the
# bundled default model. Opens napari with the CryoSeg dock; with --headless [DIR] it
# writes the labels TIFF instead (no window needed).
set -euo pipefail
cd "$(dirname "$0")"
bash .ci/setup
if [ "${1:-}" = "--headless" ]; then
  exec .venv/bin/cryoseg-demo "$@"
fi
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && [ "$(uname)" = Linux ]; then
  echo "[demo] no display found: running under Xvfb (use --headless to only write the TIFF)"
  exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/cryoseg-demo "$@"
fi
exec .venv/bin/cryoseg-demo "$@"
