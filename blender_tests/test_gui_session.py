"""A real interactive Blender window (Debian's blender under Xvfb): Generate returns at once, the timer
imports the result, our main-thread work stays tiny, and the panel is screenshotted mid-job and after.

Skipped unless `blender` and `xvfb-run` exist (apt-get install blender python3-numpy xvfb xauth).
"""

import json
import os
import shutil
import subprocess

import pytest

from conftest import BACKEND_PYTHON, HERE, needs_backend

pytestmark = [needs_backend, pytest.mark.blender_binary,
              pytest.mark.skipif(not (shutil.which("blender") and shutil.which("xvfb-run")),
                                 reason="needs the blender binary and xvfb-run")]


def test_interactive_generate_keeps_ui_responsive(real_models, tmp_path):
    env = dict(os.environ, BLENDER_USER_CONFIG=str(tmp_path / "config"), BLENDER_USER_SCRIPTS=str(tmp_path / "scripts"),
               TRELLIS_BLENDER_DATA_DIR=str(tmp_path / "data"))
    empty = str(tmp_path / "empty.blend")  # opening a file skips the splash screen
    subprocess.run(["blender", "-b", "--factory-startup", "--python-expr",
                    "import bpy; bpy.ops.wm.read_factory_settings(use_empty=True); "
                    "bpy.ops.wm.save_as_mainfile(filepath=%r)" % empty], env=env, check=True, capture_output=True,
                   timeout=120)
    out = tmp_path / "gui"
    proc = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "blender", "--factory-startup", empty,
                           "-P", os.path.join(HERE, "gui_session.py"), "--", "--model", real_models["text"],
                           "--python", BACKEND_PYTHON, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=1800)  # the session's own deadline is 1500 s
    result_file = out / "gui_result.json"
    assert result_file.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert result["operator"] == ["FINISHED"] and result["returned_after_s"] < 0.5  # Generate does not block
    assert "timeout" not in result and result["state"] == "DONE", result
    assert len(result["objects"]) == 2 and result["saw_running"]
    stats = result["controller_stats"]
    assert stats["max_pump_s"] < 0.05, stats  # applying events never holds the UI
    assert stats["import_s"] < 10, stats
    for shot in result["shots"]:
        assert os.path.getsize(shot) > 10000
    keep = os.environ.get("TRELLIS_GUI_SHOTS")  # copy the screenshots somewhere for docs
    if keep:
        os.makedirs(keep, exist_ok=True)
        for shot in result["shots"]:
            shutil.copy(shot, keep)
