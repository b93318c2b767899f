"""TRELLIS.2 in Blender (issue 17): a TRELLIS.2 GLB imports with its PBR material finished (colour spaces,
alpha blend, packed images), and "Texture selected mesh" on Suzanne and on a user mesh with UVs changes the
material only (vertex positions equal before/after, old material kept, one undo step); bad inputs leave the
scene unchanged. The backend runs for real on a tiny random TRELLIS.2 folder (CPU)."""

import os

import bpy
import numpy as np
import pytest

from conftest import (ADDON_NAME, bsdf_input_image, needs_backend, scene_fingerprint, status,  # noqa: F401
                      trellis2_folder, write_pbr_sphere_glb)


@pytest.fixture
def t2(addon, trellis2_folder):
    folder, png = trellis2_folder
    bpy.context.preferences.addons[ADDON_NAME].preferences.model_dir = folder
    settings = bpy.context.scene.trellis
    settings.image_source, settings.image_path, settings.seed = "FILE", png, 3
    settings.texture_resolution, settings.texture_size = 64, 32
    return folder, png


def _positions(obj):
    co = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)


def _make_active(obj):
    for o in bpy.context.scene.objects:
        o.select_set(False)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj


def _check_pbr(material):
    bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    base = bsdf_input_image(bsdf.inputs["Base Color"])
    metal, rough = bsdf_input_image(bsdf.inputs["Metallic"]), bsdf_input_image(bsdf.inputs["Roughness"])
    assert base is not None and base.colorspace_settings.name == "sRGB" and base.packed_file is not None
    assert metal is not None and metal == rough and metal.colorspace_settings.name == "Non-Color"
    return bsdf


def _texture_and_check(obj, added_uv=False):
    bpy.ops.ed.undo_push(message="test: initial")
    marker = bpy.data.objects.new("UndoMarker", None)
    bpy.context.scene.collection.objects.link(marker)
    bpy.ops.ed.undo_push(message="test: before texturing")
    _make_active(obj)
    name, before = obj.name, _positions(obj)
    old_materials = [m.name if m else None for m in obj.data.materials]
    objects_before = sorted(o.name for o in bpy.data.objects)
    assert bpy.ops.trellis.texture_selected(run_mode="SYNC") == {"FINISHED"}, status().error_message
    obj = bpy.data.objects[name]
    assert np.array_equal(_positions(obj), before)  # geometry untouched
    assert sorted(o.name for o in bpy.data.objects) == objects_before  # no new objects
    assert "TRELLIS" not in bpy.data.collections
    mats = [m.name if m else None for m in obj.data.materials]
    assert mats[:-1] == old_materials and mats[-1].startswith("TRELLIS textured")
    index = np.empty(len(obj.data.polygons), np.int32)
    obj.data.polygons.foreach_get("material_index", index)
    assert np.all(index == len(mats) - 1)
    _check_pbr(obj.data.materials[-1])
    assert (obj.data.uv_layers.active.name == "TRELLIS UV") == added_uv
    assert bpy.ops.ed.undo() == {"FINISHED"}
    obj = bpy.data.objects[name]
    assert [m.name if m else None for m in obj.data.materials] == old_materials
    assert np.array_equal(_positions(obj), before) and "UndoMarker" in bpy.data.objects
    assert bool(obj.data.uv_layers) != added_uv  # the added UV map is part of the same undo step


@needs_backend
def test_texture_suzanne_changes_the_material_only(t2):
    bpy.ops.mesh.primitive_monkey_add(location=(1, 2, 0))
    obj = bpy.context.active_object
    obj.modifiers.new("subsurf", "SUBSURF").levels = 1  # evaluated with modifiers, object space
    mat = bpy.data.materials.new("artist material")
    obj.data.materials.append(mat)
    _texture_and_check(obj)


@needs_backend
def test_texture_user_mesh_with_uvs(t2):
    bpy.ops.mesh.primitive_uv_sphere_add(segments=16, ring_count=8, location=(-2, 0, 1))
    obj = bpy.context.active_object
    obj.scale = (1.0, 2.0, 0.5)
    assert obj.data.uv_layers
    _texture_and_check(obj)


@needs_backend
def test_texture_mesh_without_uvs_gets_a_uv_map(t2):
    bpy.ops.mesh.primitive_cube_add(size=1.5)
    obj = bpy.context.active_object
    while obj.data.uv_layers:
        obj.data.uv_layers.remove(obj.data.uv_layers[0])
    _texture_and_check(obj, added_uv=True)


@needs_backend
def test_bad_inputs_leave_the_scene_unchanged(t2):
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    bpy.ops.object.empty_add()
    empty = bpy.context.active_object
    faceless = bpy.data.objects.new("Faceless", bpy.data.meshes.new("Faceless"))
    faceless.data.from_pydata([(0, 0, 0), (1, 0, 0)], [(0, 1)], [])
    bpy.context.scene.collection.objects.link(faceless)
    cases = [(empty, "not a mesh"), (faceless, "no faces")]
    for obj, words in cases:
        _make_active(obj)
        before = scene_fingerprint()
        with pytest.raises(RuntimeError, match=words):  # the operator reports an error (raised under bpy)
            bpy.ops.trellis.texture_selected(run_mode="SYNC")
        assert words in status().error_message and scene_fingerprint() == before
    _make_active(cube)
    bpy.context.scene.trellis.image_source = "NONE"
    before = scene_fingerprint()
    with pytest.raises(RuntimeError, match="reference image"):
        bpy.ops.trellis.texture_selected(run_mode="SYNC")
    assert scene_fingerprint() == before


@needs_backend
def test_trellis2_generate_imports_a_finished_pbr_material(t2, tmp_path):
    """Default panel settings (Outputs 'Both', no custom sampling) work with a TRELLIS.2 folder."""
    assert bpy.ops.trellis.generate(run_mode="SYNC") == {"FINISHED"}, status().error_message
    obj = bpy.data.objects[status().last_objects.split(";")[0]]
    material = obj.active_material
    bsdf = _check_pbr(material)
    assert material.get("trellis_pbr")
    translucent = bool(bsdf.inputs["Alpha"].links)
    if hasattr(material, "surface_render_method"):
        assert material.surface_render_method == ("BLENDED" if translucent else "DITHERED")


@needs_backend
@pytest.mark.parametrize("alpha, storage", [(1.0, "PACK"), (0.5, "BESIDE_BLEND")])
def test_import_finishes_the_pbr_material(addon, tmp_path, alpha, storage):
    from trellis_blender import importers

    path = str(tmp_path / "pbr.glb")
    write_pbr_sphere_glb(path, alpha, texture_size=64)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    bpy.context.preferences.addons[ADDON_NAME].preferences.texture_storage = storage
    (obj,) = importers.import_result(bpy.context, {"glb": path}, {"outputs": "MESH", "image": "x.png"})
    material = obj.active_material
    bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    base, data = bsdf_input_image(bsdf.inputs["Base Color"]), bsdf_input_image(bsdf.inputs["Metallic"])
    assert base.colorspace_settings.name == "sRGB" and data.colorspace_settings.name == "Non-Color"
    assert bool(bsdf.inputs["Alpha"].links) == (alpha < 1)
    if hasattr(material, "surface_render_method"):
        assert material.surface_render_method == ("BLENDED" if alpha < 1 else "DITHERED")
    for image in (base, data):
        if storage == "PACK":
            assert image.packed_file is not None
        else:
            assert image.packed_file is None and image.filepath.startswith("//trellis_textures")
            assert os.path.isfile(bpy.path.abspath(image.filepath)) and tuple(image.size) == (64, 64)  # loads
