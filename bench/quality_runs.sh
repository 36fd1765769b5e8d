#!/usr/bin/env bash
# Quality runs for issue 3's acceptance numbers, on any device (cuda, or cpu with a smaller
# preset and longer budgets):
#  1. train on ISBI 2012 sections 00-23, evaluate membrane Dice on 24-29 (plain and with
#     test-time augmentation);
#  2. train on Drosophila VNC membranes (--classes 1) -- or reuse VNC_MODEL -- then for
#     k in KS: zero-shot vs fine-tune (--time-budget FT_BUDGET) on ISBI sections 00..k-1
#     vs training from scratch on the same sections with the same budget, all evaluated
#     on ISBI sections 06-29 (never used for adaptation).
# Usage: DATA=../shared/data OUT=bench/results/quality_cpu DEVICE=cpu PRESET=small \
#        BUDGET=900 VNC_BUDGET=420 FT_BUDGET=30 KS="1 2 4" STEPS="isbi fewshot" \
#        SEED=0 FT_ARGS="--holdout-layout rows" SCRATCH=1 bash bench/quality_runs.sh
set -euo pipefail
DATA=${DATA:-../shared/data}; OUT=${OUT:-bench/results}; W=${WORK:-/tmp/cryoseg-quality}
DEVICE=${DEVICE:-auto}; PRESET=${PRESET:-thesis}; BUDGET=${BUDGET:-60}
VNC_BUDGET=${VNC_BUDGET:-$BUDGET}; FT_BUDGET=${FT_BUDGET:-30}; KS=${KS:-"1 2"}
STEPS=${STEPS:-"isbi fewshot"}; ELASTIC=${ELASTIC:-0}; TRAIN_ARGS=${TRAIN_ARGS:-}
SEED=${SEED:-0}; FT_ARGS=${FT_ARGS:-}; SCRATCH=${SCRATCH:-1}
CRYOSEG="${PYTHON:-python3} -m napari_cryoseg.cli"
I=$DATA/isbi2012_em_membranes; V=$DATA/drosophila_vnc_sstem
mkdir -p "$OUT" "$W"
link() {  # link <dest> <first> <last>: ISBI sections first..last into dest/{images,masks}
  rm -rf "$1"; mkdir -p "$1/images" "$1/masks"
  for i in $(seq -f %02g "$2" "$3"); do
    ln -s "$(realpath $I/images/train_$i.tif)" "$1/images/"; ln -s "$(realpath $I/masks/train_$i.tif)" "$1/masks/"
  done
}
evaluate() {  # evaluate <model> <set> <json> [extra args]
  local model=$1 set=$2 json=$3; shift 3
  $CRYOSEG evaluate --model "$model" --images $W/$set/images --masks $W/$set/masks --classes 1 \
    --device $DEVICE --json "$json" "$@"
}
link $W/isbi_train 0 23; link $W/isbi_test 24 29; link $W/other 6 29
for k in $KS; do link $W/k$k 0 $((k - 1)); done
if [[ " $STEPS " == *" isbi "* ]]; then
  t0=$SECONDS
  $CRYOSEG train --images $W/isbi_train/images --masks $W/isbi_train/masks --out $W/isbi.pt \
    --preset $PRESET --classes 1 --class-names membrane --time-budget $BUDGET --device $DEVICE \
    --elastic $ELASTIC --overwrite $TRAIN_ARGS
  echo "isbi train wall: $((SECONDS-t0)) s" | tee $OUT/isbi_train_wall.txt
  evaluate $W/isbi.pt isbi_test $OUT/isbi_train00-23_eval24-29.json
  evaluate $W/isbi.pt isbi_test $OUT/isbi_train00-23_eval24-29_tta8.json --tta 8
fi
if [[ " $STEPS " == *" fewshot "* ]]; then
  VNC_MODEL=${VNC_MODEL:-$W/vnc.pt}
  if [[ ! -f $VNC_MODEL ]]; then
    t0=$SECONDS
    $CRYOSEG train --images $V/images --masks $V/masks --out $VNC_MODEL --preset $PRESET \
      --classes 1 --class-names membrane --time-budget $VNC_BUDGET --device $DEVICE \
      --elastic $ELASTIC $TRAIN_ARGS
    echo "vnc train wall: $((SECONDS-t0)) s" | tee $OUT/vnc_train_wall.txt
  fi
  evaluate $VNC_MODEL other $OUT/fewshot_zero_shot.json
  for k in $KS; do
    $CRYOSEG finetune --model $VNC_MODEL --images $W/k$k/images --masks $W/k$k/masks \
      --out $W/ft$k.pt --time-budget $FT_BUDGET --classes 1 --device $DEVICE --overwrite \
      --seed $SEED $FT_ARGS | tee $OUT/fewshot_finetune_k$k.log
    evaluate $W/ft$k.pt other $OUT/fewshot_finetune_k$k.json
    [[ $SCRATCH == 1 ]] || continue
    $CRYOSEG train --images $W/k$k/images --masks $W/k$k/masks --out $W/scratch$k.pt \
      --preset $PRESET --classes 1 --class-names membrane --time-budget $FT_BUDGET \
      --device $DEVICE --seed $SEED --overwrite
    evaluate $W/scratch$k.pt other $OUT/fewshot_scratch_k$k.json
  done
fi
${PYTHON:-python3} - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for f in sorted(out.glob("*.json")):
    if f.name.startswith(("isbi_", "fewshot_")):
        d = json.loads(f.read_text())
        mean = d.get("mean", {})
        print(f"{f.stem:40s} membrane Dice {mean.get('mean_foreground_dice'):.4f}")
PY
