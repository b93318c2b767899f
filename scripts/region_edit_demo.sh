#!/usr/bin/env bash
# Region edit with the embedded model, from the command line, and a before/after picture:
#   generate a chair -> regenerate only the voxels above the seat with a new prompt -> render both.
# Usage: bash scripts/region_edit_demo.sh [OUT_DIR]   (after scripts/setup.sh; CPU, about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/region_edit}
MODEL=${MODEL:-models/trellis-embedded}
PROMPT=${PROMPT:-"a red chair with a tall back and four thin legs"}
EDIT_PROMPT=${EDIT_PROMPT:-"a blue chair with a tall back"}
BOX=${BOX:-"-0.5,-0.5,0.05,0.5,0.5,0.5"}   # object space (z up): everything above the seat
SEED=${SEED:-1}
mkdir -p "$OUT"
.venv/bin/python -m trellis_backend generate --model "$MODEL" --prompt "$PROMPT" --seed "$SEED" --out "$OUT" \
    --name before --device cpu --quiet
.venv/bin/python -m trellis_backend edit --from "$OUT/before.slat.npz" --model "$MODEL" --box="$BOX" \
    --prompt "$EDIT_PROMPT" --seed "$SEED" --keep-structure --formats glb,ply --out "$OUT" --name after \
    --device cpu --quiet
.venv-blender/bin/python scripts/render_pair.py "$OUT/before.glb" "$OUT/after.glb" "$OUT/region_edit.png"
