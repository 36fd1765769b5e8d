#!/usr/bin/env bash
# Build the sdist and wheel, check both (twine, LICENSE inside), install the wheel with
# extras into a clean venv (CPU torch first) and run `cryoseg segment` and
# `npe2 validate --imports` there. Usage: bash .ci/check_wheel.sh [EXTRAS] (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
t_start=$SECONDS
EXTRAS="${1:-all}"
PY="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

t=$SECONDS
"$PY" -m venv "$work/build-env"
"$work/build-env/bin/pip" install -q --no-compile build twine \
  2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
"$work/build-env/bin/python" -m build --sdist --wheel --outdir "$work/dist" . >/dev/null 2>&1
"$work/build-env/bin/twine" check --strict "$work"/dist/*
wheel="$(ls "$work"/dist/*.whl)"
sdist="$(ls "$work"/dist/*.tar.gz)"
# (listings first: `grep -q` in a pipe would end it early and trip pipefail)
wheel_files="$("$work/build-env/bin/python" -m zipfile -l "$wheel")"
sdist_files="$(tar -tzf "$sdist")"
grep -qE 'dist-info/licenses/LICENSE' <<<"$wheel_files" || { echo "LICENSE missing from $wheel"; exit 1; }
grep -qE '^[^/]+/LICENSE$' <<<"$sdist_files" || { echo "LICENSE missing from $sdist"; exit 1; }
echo "[wheel] built and checked $(basename "$wheel") and $(basename "$sdist") (LICENSE in both): $((SECONDS-t))s"

# torch first: torch==2.13.0 is the CPU wheel (on this machine kind's disk; on CI the
# PyTorch CPU index via PIP_EXTRA_INDEX_URL/TORCH_INDEX). A bare `torch>=2.4` would pull CUDA.
t=$SECONDS
"$PY" -m venv "$work/venv"
V="$work/venv/bin"
pipi() { "$V/pip" install -q --no-compile "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }
if [ -n "${TORCH_INDEX:-}" ]; then pipi "${TORCH_SPEC:-torch}" --index-url "$TORCH_INDEX"
else pipi "${TORCH_SPEC:-torch==2.13.0}"; fi
pipi "${wheel}[${EXTRAS}]"
"$V/python" -c 'import torch; assert not torch.version.cuda, "a CUDA torch was installed"; print("[wheel] torch", torch.__version__)'
echo "[wheel] clean venv with napari-cryoseg[${EXTRAS}]: $((SECONDS-t))s"

t=$SECONDS
cd "$work"
"$V/python" - <<'PYEOF'
import numpy as np, tifffile
rng = np.random.default_rng(0)
tifffile.imwrite("img.tif", (rng.random((256, 256)) * 4000).astype(np.uint16))
PYEOF
"$V/cryoseg" segment img.tif --out out --device cpu
test -s out/img_labels.tif
"$V/npe2" validate --imports napari-cryoseg
echo "[wheel] cryoseg segment + npe2 validate --imports: $((SECONDS-t))s; total $((SECONDS-t_start))s"
