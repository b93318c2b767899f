"""The headless batch script: .blend + .glb + non-empty .png, with the bpy wheel and Debian's blender binary."""

import json
import os
import shutil
import subprocess
import sys

import bpy
import numpy as np
import pytest

from conftest import BACKEND_PYTHON, HERE, needs_backend

SCRIPT = os.path.join(HERE, "batch_generate.py")
pytestmark = needs_backend


def _run(cmd, timeout=900):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BATCH_RESULT ")]
    assert lines, "no BATCH_RESULT (rc %s):\n%s\n%s" % (proc.returncode, proc.stdout[-4000:], proc.stderr[-3000:])
    return proc.returncode, json.loads(lines[-1][len("BATCH_RESULT "):])


def _args(model, out, *extra):
    return ["--", "--prompt", "a red chair", "--model", model, "--python", BACKEND_PYTHON, "--device", "cpu",
            "--out", str(out), "--resolution", "96", "--samples", "4", *extra]


def _check_outputs(result):
    for key in ("blend", "glb", "png"):
        assert os.path.getsize(result[key]) > 0, key
    img = bpy.data.images.load(result["png"])
    px = np.array(img.pixels[:]).reshape(-1, 4)[:, :3]
    background = np.median(px, axis=0)
    assert np.mean(np.abs(px - background).sum(1) > 0.05) > 0.002, "render shows nothing but background"
    bpy.data.images.remove(img)


def test_batch_with_bpy_module(real_models, tmp_path):
    code, result = _run([sys.executable, SCRIPT, *_args(real_models["text"], tmp_path / "out")])
    assert code == 0 and result["ok"], result
    _check_outputs(result)


@pytest.mark.blender_binary
@pytest.mark.skipif(shutil.which("blender") is None, reason="no blender binary (apt-get install blender python3-numpy)")
def test_batch_with_blender_binary(real_models, tmp_path):
    code, result = _run(["blender", "-b", "--factory-startup", "-P", SCRIPT,
                         *_args(real_models["text"], tmp_path / "out")])
    assert code == 0 and result["ok"], result
    _check_outputs(result)


def test_batch_failure_exits_nonzero_with_reason(tmp_path):
    code, result = _run([sys.executable, SCRIPT, *_args(str(tmp_path / "no-model"), tmp_path / "out")])
    assert code == 1 and not result["ok"] and "no-model" in result["message"]
