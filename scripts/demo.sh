#!/usr/bin/env bash
# The main job: set up, then generate an asset from a prompt with the embedded default model in
# headless Blender, saving .blend, .glb (and .ply) and a rendered .png under out/demo/.
#   bash scripts/demo.sh "a red chair with four thin legs"
set -euo pipefail
cd "$(dirname "$0")/.."
PROMPT=${1:-"a red chair with four thin legs"}
OUT=${OUT:-out/demo}
bash scripts/setup.sh
MODEL=${MODEL_OVERRIDE:-models/trellis-embedded}
if [ ! -f "$MODEL/pipeline.json" ]; then
  echo "[demo] $MODEL is missing: train it (docs/MODEL_CARD.md) or pass a TRELLIS folder with MODEL=...; " \
       "falling back to a tiny random-weight model so the whole path still runs" >&2
  MODEL=out/tiny-random-text
  .venv/bin/python -m trellis_backend make-random-model --kind text --out "$MODEL" >/dev/null
fi
ARGS=(-- --prompt "$PROMPT" --model "$MODEL" --python .venv/bin/python --device auto --out "$OUT")
if command -v blender >/dev/null 2>&1; then
  blender -b --factory-startup -P blender_tests/batch_generate.py "${ARGS[@]}"
else
  .venv-blender/bin/python blender_tests/batch_generate.py "${ARGS[@]}"
fi
ls -l "$OUT"
