"""Register/unregister leaves Blender as it found it, and repeats cleanly."""

import bpy

from conftest import ADDON_NAME


def _registered():
    return (hasattr(bpy.types.Scene, "trellis"), hasattr(bpy.types.WindowManager, "trellis_status"),
            hasattr(bpy.types, "VIEW3D_PT_trellis"), hasattr(bpy.ops.trellis, "generate") and
            _op_exists("trellis.generate"))


def _op_exists(idname):
    try:
        getattr(getattr(bpy.ops, idname.split(".")[0]), idname.split(".")[1]).get_rna_type()
        return True
    except (KeyError, AttributeError):
        return False


def test_enabled_addon_registers_everything(addon):
    assert all(_registered())
    assert ADDON_NAME in bpy.context.preferences.addons
    assert _op_exists("trellis.cancel") and _op_exists("trellis.setup_backend")
    settings = bpy.context.scene.trellis
    assert settings.outputs == "BOTH" and settings.image_source == "NONE"


def test_unregister_and_register_again(addon):
    module = addon
    module.unregister()
    assert not any(_registered())
    module.register()
    assert all(_registered())
    module.unregister()
    module.register()
    assert all(_registered())


def test_addon_never_imports_torch(addon):
    import sys

    assert "torch" not in sys.modules
    assert not any(name.startswith("trellis_backend") for name in sys.modules)


def test_panel_draws_in_every_state(addon):
    """Drawing must not raise whatever the status says (no UI in the bpy module, so call draw with a stub)."""
    from trellis_blender import panel

    class Layout:
        def __getattr__(self, name):
            return lambda *a, **k: Layout()

        def __setattr__(self, name, value):
            pass

    class Ctx:
        scene = bpy.context.scene
        window_manager = bpy.context.window_manager

    from trellis_blender.core import backend_setup

    st = bpy.context.window_manager.trellis_status
    setups = [{}, {"state": "running", "step": "Installing", "lines": ["Collecting torch"] * 5},
              {"state": "failed", "error": "pip failed", "hint": "check the network"}, {"state": "done", "lines": ["x"]}]
    saved = backend_setup.snapshot
    for i, state in enumerate(("IDLE", "STARTING", "RUNNING", "CANCELLING", "DONE", "FAILED", "CANCELLED")):
        backend_setup.snapshot = lambda i=i: setups[i % len(setups)]
        st.state, st.stage, st.step, st.total = state, "slat", 3, 25
        st.error_type, st.error_message, st.error_hint = "X", "went wrong " * 20, "do this " * 20
        stub = type("P", (), {"layout": Layout()})()
        try:
            panel.VIEW3D_PT_trellis.draw(stub, Ctx())
        finally:
            backend_setup.snapshot = saved
    st.state = "IDLE"


def test_bl_info_and_manifest_agree():
    import os
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    init = open(os.path.join(root, "addon", "__init__.py")).read()
    manifest = open(os.path.join(root, "addon", "blender_manifest.toml")).read()
    version = re.search(r'"version": \((\d+), (\d+), (\d+)\)', init).groups()
    assert re.search(r'^version = "(.*)"', manifest, re.M).group(1) == ".".join(version)
