"""TRELLIS for Blender: image/text to 3D with a bundled backend subprocess.

The add-on never imports torch: generation runs in ``python -m
trellis_backend.server`` (see client.py / protocol.py). Nothing at module level
imports bpy either, so the pure-Python parts (protocol, client, paths, PLY
reader) are importable and testable outside Blender.
"""

bl_info = {
    "name": "TRELLIS",
    "author": "TRELLIS for Blender contributors",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "3D Viewport > Sidebar (N) > TRELLIS",
    "description": "Generate 3D assets (mesh and Gaussians) from an image or a text prompt with TRELLIS",
    "category": "3D View",
    "doc_url": "",
    "tracker_url": "",
}

# Registration order matters: properties before the operators/panels that use them.
_MODULES = ("preferences", "properties", "operators", "operators_edit", "operators_batch", "operators_texture",
            "panel")


def _modules():
    import importlib

    return [importlib.import_module("." + name, __package__) for name in _MODULES]


def register():
    for module in _modules():
        module.register()


def unregister():
    from . import jobs

    jobs.shutdown_controller()
    for module in reversed(_modules()):
        module.unregister()
