"""The add-on's Blender-free half: protocol, backend client, paths, backend set-up,
Gaussian PLY reading, region maths and request building.

Nothing in this package imports ``bpy`` or ``mathutils`` (``tests/test_addon_core.py``
imports every module with plain Python), and nothing here imports the bpy half of the
add-on: the dependency points one way only, from the bpy modules into ``core``.
"""
