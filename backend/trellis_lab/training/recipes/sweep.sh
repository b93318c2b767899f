#!/usr/bin/env bash
# Sampler settings of the embedded model, chosen on validation records (held-out split, records
# START..START+N-1, never the reported 0..59): stage-1 guidance by the image structures (category,
# IoU; stage 1 only), stage-2 guidance by the text colours. One line per setting in $OUT/sweep.md.
#   MODEL=$W/pipe/trellis-embedded OUT=dir bash backend/trellis_lab/training/recipes/sweep.sh
set -u
export PYTHONPATH=backend:kernels PYTHONUNBUFFERED=1
MODEL=${MODEL:-models/trellis-embedded}
START=${START:-1000}
N=${N:-60}
DEVICE=${DEVICE:-cuda}
SS_CFGS=${SS_CFGS:-5 7.5 10}
SLAT_CFGS=${SLAT_CFGS:-3 5 7.5}
mkdir -p "$OUT/sweep"
summary() {  # name results.json -> one table line
  python3 - "$1" "$2" >> "$OUT/sweep.md" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
cells = []
for k in ("text", "image"):
    if k in r:
        s = r[k]["summary"]
        cells.append(f"{k}: cat {s['category_accuracy']:.1%}"
                     + ("" if r.get("structure_only") else f", colour {s['color_accuracy']:.1%}")
                     + (f", IoU solid {s['mean_solid_iou']:.3f} shell {s['mean_iou']:.3f}" if "mean_iou" in s else ""))
print(f"| {name} | " + "; ".join(cells) + " |")
PY
}
echo "| setting (validation records $START..$((START + N - 1))) | result |" > "$OUT/sweep.md"
echo "| --- | --- |" >> "$OUT/sweep.md"
params() { echo "{\"steps\": 12, \"cfg_strength\": $1, \"cfg_interval\": [0.5, 1.0], \"rescale_t\": 3.0}"; }
one() {  # name dir evaluate-args...: one validation run and its table line
  local name=$1 d=$2
  shift 2
  python3 -m trellis_lab.training.evaluate --model "$MODEL" --n "$N" --start "$START" --batch 30 \
      --device "$DEVICE" --out "$d" "$@" > "$d.log" 2>&1 && summary "$name" "$d/results.json"
}
for cfg in $SS_CFGS; do
  one "stage 1 cfg $cfg (structure only)" "$OUT/sweep/ss_cfg_$cfg" --image-model "$MODEL-image" --structure-only \
      --ss-params "$(params "$cfg")"
done
for cfg in $SLAT_CFGS; do
  one "stage 2 cfg $cfg (text)" "$OUT/sweep/slat_cfg_$cfg" --image-model none --slat-params "$(params "$cfg")"
done
cat "$OUT/sweep.md"
