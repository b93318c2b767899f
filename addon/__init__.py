"""TRELLIS for Blender: image/text to 3D with a bundled backend subprocess.

The add-on never imports torch: generation runs in ``python -m
trellis_backend.server`` (see core/client.py, core/protocol.py). Two halves:
``core/`` is plain Python (protocol, backend client, paths, backend set-up, PLY
reading, region maths, request building), testable outside Blender; the
modules beside it are the bpy half (properties, preferences, panel, operators,
job controller, importers) and import ``core``, never the other way round.
Nothing at this module's level imports bpy.
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
_MODULES = ("preferences", "properties", "operators", "operators_edit", "operators_batch", "panel")


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
