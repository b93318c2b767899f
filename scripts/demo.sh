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
  echo "[demo] no pipeline.json in $MODEL: pass a TRELLIS pipeline folder with MODEL_OVERRIDE=/path/to/folder" \
       "(models/trellis-embedded ships with the repository; git checkout models/ restores it)" >&2
  exit 2
fi
ARGS=(-- --prompt "$PROMPT" --model "$MODEL" --python .venv/bin/python --device auto --out "$OUT")
if command -v blender >/dev/null 2>&1; then
  blender -b --factory-startup -P blender_tests/batch_generate.py "${ARGS[@]}"
else
  .venv-blender/bin/python blender_tests/batch_generate.py "${ARGS[@]}"
fi
ls -l "$OUT"
