"""Colours as the user asked for them: a known sRGB colour goes into the backend's GLB / PLY writers and
comes out of a Cycles render of the imported object (Standard view transform) within a few units."""

import math

import bpy
import numpy as np
import pytest

from conftest import needs_backend, run_backend
from render_helpers import ortho_camera, render_srgb, uniform_world

pytestmark = needs_backend

RED = (214, 26, 15)  # the demo chair's GLB colour that rendered salmon-pink (242, 107, 101) before the fix
TEAL = (40, 150, 140)

WRITE_BOX_GLB = r"""
import sys
import numpy as np
import trimesh
from trellis_backend.pipeline.export import write_glb
path, r, g, b = sys.argv[1], *map(int, sys.argv[2:5])
box = trimesh.creation.box(extents=(0.6, 0.6, 0.6))
class Mesh:  # what the pipeline hands write_glb: vertices, faces (z-up object space)
    vertices, faces = np.asarray(box.vertices), np.asarray(box.faces)
write_glb(path, Mesh(), colors=np.tile(np.array([r, g, b]) / 255.0, (len(box.vertices), 1)))
"""


def _diffuse_only(material):
    """No specular layer, so a white uniform world renders the albedo itself (the test isolates colour)."""
    bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    name = "Specular IOR Level" if "Specular IOR Level" in bsdf.inputs else "Specular"
    bsdf.inputs[name].default_value = 0.0


@pytest.mark.parametrize("srgb", [RED, TEAL])
def test_glb_vertex_colour_renders_as_written(addon, tmp_path, srgb):
    from trellis_blender import importers

    path = str(tmp_path / "box.glb")
    run_backend(WRITE_BOX_GLB, path, *map(str, srgb))
    (obj,) = importers.import_result(bpy.context, {"glb": path}, {"outputs": "MESH", "prompt": "box"})
    _diffuse_only(obj.active_material)
    scene = bpy.context.scene
    uniform_world(scene)
    ortho_camera(scene, (0.0, -3.0, 0.0), (math.pi / 2, 0.0, 0.0), 0.4)  # the -y face fills the frame
    px = render_srgb(scene, resolution=16, samples=32)
    got = np.median(px[4:12, 4:12, :3].reshape(-1, 3), axis=0)
    assert np.abs(got - srgb).max() <= 3, (got, srgb)
    # the viewport (Solid / Material preview) colour is the same linear colour
    linear = np.where(np.array(srgb) / 255 <= 0.04045, np.array(srgb) / 255 / 12.92,
                      ((np.array(srgb) / 255 + 0.055) / 1.055) ** 2.4)
    assert np.allclose(obj.active_material.diffuse_color[:3], linear, atol=2e-3)
