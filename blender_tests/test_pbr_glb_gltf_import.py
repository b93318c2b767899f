"""A TRELLIS.2 PBR GLB (backend's export_pbr) through Blender's own glTF importer: UVs, base colour
(sRGB) and metallic-roughness (Non-Color) images wired to the Principled BSDF; alpha when translucent."""

import bpy
import pytest

from conftest import bsdf_input_image, needs_backend, write_pbr_sphere_glb

def _import(path):
    bpy.ops.wm.read_homefile(use_empty=True)  # keeps the preferences (factory settings would disable the add-on for later tests)
    bpy.ops.import_scene.gltf(filepath=path)
    obj = [o for o in bpy.context.scene.objects if o.type == "MESH"][0]
    mat = obj.active_material
    bsdf = [n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED"][0]
    return obj, mat, bsdf


@needs_backend
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_pbr_glb_imports_with_principled_wiring(tmp_path, alpha):
    path = str(tmp_path / "pbr.glb")
    write_pbr_sphere_glb(path, alpha, texture_size=128)
    obj, mat, bsdf = _import(path)
    assert len(obj.data.uv_layers) == 1
    base = bsdf_input_image(bsdf.inputs["Base Color"])
    metal, rough = bsdf_input_image(bsdf.inputs["Metallic"]), bsdf_input_image(bsdf.inputs["Roughness"])
    assert base is not None and base.colorspace_settings.name == "sRGB"
    assert metal is not None and metal == rough and metal.colorspace_settings.name == "Non-Color"
    assert (bsdf_input_image(bsdf.inputs["Alpha"]) is not None) == (alpha < 1.0)
