"""A TRELLIS.2 PBR GLB (backend's export_pbr) through Blender's own glTF importer: UVs, base colour
(sRGB) and metallic-roughness (Non-Color) images wired to the Principled BSDF; alpha when translucent."""

import bpy
import pytest

from conftest import needs_backend, run_backend

WRITE_PBR_GLB = r"""
import sys
import numpy as np, trimesh
from trellis_backend.representations.ovoxel import flexible_dual_grid_to_mesh, mesh_to_flexible_dual_grid
from trellis_backend.representations.ovoxel.pbr_voxels import PbrVoxels
from trellis_backend.pipeline.export_pbr import write_pbr_glb
path, alpha = sys.argv[1], float(sys.argv[2])
G = 32
sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
c, d, i = mesh_to_flexible_dual_grid(sphere.vertices, sphere.faces, G)
attrs = np.zeros((len(c), 6), np.float32)
attrs[:, 0], attrs[:, 3], attrs[:, 4], attrs[:, 5] = 1.0, 0.25, 0.75, alpha
v, f = flexible_dual_grid_to_mesh(c, d * G - c.float(), i, None, grid_size=G)
write_pbr_glb(path, v, f, PbrVoxels(c.numpy(), attrs, G), face_budget=1000, texture_size=128)
"""


def _import(path):
    bpy.ops.wm.read_homefile(use_empty=True)  # keeps the preferences (factory settings would disable the add-on for later tests)
    bpy.ops.import_scene.gltf(filepath=path)
    obj = [o for o in bpy.context.scene.objects if o.type == "MESH"][0]
    mat = obj.active_material
    bsdf = [n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED"][0]
    return obj, mat, bsdf


def _source_image(socket):
    """The image node feeding a BSDF input, directly or through a Separate Color node."""
    if not socket.links:
        return None
    node = socket.links[0].from_node
    if node.type == "SEPARATE_COLOR":
        node = node.inputs[0].links[0].from_node
    return node.image if node.type == "TEX_IMAGE" else None


@needs_backend
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_pbr_glb_imports_with_principled_wiring(tmp_path, alpha):
    path = str(tmp_path / "pbr.glb")
    run_backend(WRITE_PBR_GLB, path, str(alpha))
    obj, mat, bsdf = _import(path)
    assert len(obj.data.uv_layers) == 1
    base = _source_image(bsdf.inputs["Base Color"])
    metal, rough = _source_image(bsdf.inputs["Metallic"]), _source_image(bsdf.inputs["Roughness"])
    assert base is not None and base.colorspace_settings.name == "sRGB"
    assert metal is not None and metal == rough and metal.colorspace_settings.name == "Non-Color"
    assert (_source_image(bsdf.inputs["Alpha"]) is not None) == (alpha < 1.0)
