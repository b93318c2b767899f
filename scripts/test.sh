#!/usr/bin/env bash
# Runs every test from scratch: sets up the environments, then the backend suite (CPU; tests marked
# gpu skip themselves without CUDA) and the add-on tests inside Blender (bpy module + blender -b).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
status=0
.venv/bin/python -m pytest -q -p no:cacheprovider tests || status=$?
if [ "${TRELLIS_SKIP_BLENDER:-0}" != "1" ]; then
  .venv-blender/bin/python -m pytest -q -p no:cacheprovider blender_tests || status=$?
fi
exit $status
