#!/usr/bin/env bash
# GPU quality runs for issue 3's acceptance numbers (run on a CUDA machine):
#  1. train on ISBI 2012 sections 00-23, evaluate membrane Dice on 24-29;
#  2. train on Drosophila VNC membranes (--classes 1), then on ISBI with k = 1 and 2 sections:
#     zero-shot vs fine-tune (--time-budget 30) vs from scratch (same sections, same budget),
#     evaluated on ISBI sections 06-29 (never used for adaptation).
# Usage: DATA=../shared/data OUT=results bash bench/quality_gpu_runs.sh
set -euo pipefail
DATA=${DATA:-../shared/data}; OUT=${OUT:-bench/results}; W=${WORK:-/tmp/cryoseg-quality}
PRESET=${PRESET:-thesis}; BUDGET=${BUDGET:-60}; FT_BUDGET=${FT_BUDGET:-30}
CRYOSEG="${PYTHON:-python3} -m napari_cryoseg.cli"
I=$DATA/isbi2012_em_membranes; V=$DATA/drosophila_vnc_sstem
rm -rf "$W"; mkdir -p "$OUT"
link() {  # link <dest> <first> <last>: ISBI sections first..last into dest/{images,masks}
  mkdir -p "$1/images" "$1/masks"
  for i in $(seq -f %02g "$2" "$3"); do
    ln -s "$(realpath $I/images/train_$i.tif)" "$1/images/"; ln -s "$(realpath $I/masks/train_$i.tif)" "$1/masks/"
  done
}
link $W/isbi_train 0 23; link $W/isbi_test 24 29
link $W/k1 0 0; link $W/k2 0 1; link $W/other 6 29
t0=$SECONDS
$CRYOSEG train --images $W/isbi_train/images --masks $W/isbi_train/masks --out $W/isbi.pt \
  --preset $PRESET --classes 1 --class-names membrane --time-budget $BUDGET --device cuda
echo "isbi train wall: $((SECONDS-t0)) s"
$CRYOSEG evaluate --model $W/isbi.pt --images $W/isbi_test/images --masks $W/isbi_test/masks \
  --classes 1 --json $OUT/isbi_train00-23_eval24-29.json
t0=$SECONDS
$CRYOSEG train --images $V/images --masks $V/masks --out $W/vnc.pt --preset $PRESET --classes 1 \
  --class-names membrane --time-budget $BUDGET --device cuda
echo "vnc train wall: $((SECONDS-t0)) s"
$CRYOSEG evaluate --model $W/vnc.pt --images $W/other/images --masks $W/other/masks --classes 1 \
  --json $OUT/fewshot_zero_shot.json
for k in 1 2; do
  $CRYOSEG finetune --model $W/vnc.pt --images $W/k$k/images --masks $W/k$k/masks --out $W/ft$k.pt \
    --time-budget $FT_BUDGET --classes 1 --device cuda
  $CRYOSEG evaluate --model $W/ft$k.pt --images $W/other/images --masks $W/other/masks --classes 1 \
    --json $OUT/fewshot_finetune_k$k.json
  $CRYOSEG train --images $W/k$k/images --masks $W/k$k/masks --out $W/scratch$k.pt --preset $PRESET \
    --classes 1 --class-names membrane --time-budget $FT_BUDGET --device cuda
  $CRYOSEG evaluate --model $W/scratch$k.pt --images $W/other/images --masks $W/other/masks \
    --classes 1 --json $OUT/fewshot_scratch_k$k.json
done
${PYTHON:-python3} - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for f in sorted(out.glob("*.json")):
    if f.name.startswith(("isbi_", "fewshot_")):
        d = json.loads(f.read_text())
        mean = d.get("mean", {})
        print(f"{f.stem:32s} membrane Dice {mean.get('mean_foreground_dice')}")
PY
