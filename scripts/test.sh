#!/usr/bin/env bash
# Runs every test from scratch: sets up the environments, then the backend suite (CPU; tests marked
# gpu skip themselves without CUDA) and the add-on tests inside Blender: all of them with bpy 4.5 LTS
# (plus Debian's blender binary for blender -b and the Xvfb session), then again with bpy 5.0 except
# those that run the binary (they do not depend on the bpy module), to stay within CI's time.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
status=0
.venv/bin/python -m pytest -q -p no:cacheprovider tests || status=$?
if [ "${TRELLIS_SKIP_BLENDER:-0}" != "1" ]; then
  .venv-blender/bin/python -m pytest -q -p no:cacheprovider blender_tests || status=$?
  if [ -x .venv-blender5/bin/python ] && [ "${TRELLIS_SKIP_BPY5:-0}" != "1" ]; then
    .venv-blender5/bin/python -m pytest -q -p no:cacheprovider -W "error:.*is expected to be removed:DeprecationWarning" \
      -m "not blender_binary" blender_tests || status=$?
  fi
fi
exit $status
