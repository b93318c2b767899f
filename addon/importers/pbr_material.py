"""TRELLIS.2 PBR materials after Blender's glTF importer: the importer wires base colour, metallic,
roughness and alpha images into the Principled BSDF; this module makes the rest explicit and checkable.

- colour spaces: the base-colour image sRGB, every other image Non-Color (metallic-roughness data);
- alpha: blended rendering where the GLB's material is translucent (``alphaMode`` BLEND), opaque otherwise;
- images: packed into the .blend, or written beside it (``//<folder>/``) when the user chose that and the
  .blend has been saved (an unsaved file keeps them packed and says so).
"""

import os

import bpy

STORAGE_MODES = [
    ("PACK", "Pack into .blend", "Keep the texture images inside the .blend file"),
    ("BESIDE_BLEND", "Save beside .blend", "Write the texture images into a folder next to the saved .blend"),
]
TEXTURE_FOLDER = "trellis_textures"


def bsdf_of(material):
    if material is None or material.node_tree is None:
        return None
    return next((n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None)


def source_image(socket):
    """The image feeding a BSDF input, directly or through a Separate Color / RGB node."""
    if not socket.links:
        return None
    node = socket.links[0].from_node
    if node.type in ("SEPARATE_COLOR", "SEPRGB") and node.inputs[0].links:
        node = node.inputs[0].links[0].from_node
    return node.image if node.type == "TEX_IMAGE" else None


def is_pbr_material(material):
    """A material whose Principled BSDF takes its base colour from an image (a baked / TRELLIS.2 material)."""
    bsdf = bsdf_of(material)
    return bsdf is not None and source_image(bsdf.inputs["Base Color"]) is not None


def set_alpha_blend(material, blend):
    """Blended (translucent) or opaque rendering, for EEVEE Next (4.2+) and the legacy EEVEE."""
    if hasattr(material, "surface_render_method"):
        material.surface_render_method = "BLENDED" if blend else "DITHERED"
    if hasattr(material, "blend_method"):
        try:
            material.blend_method = "BLEND" if blend else "OPAQUE"
        except TypeError:
            pass


def _store_images(material, images, storage):
    """Pack `images`, or write them beside the saved .blend and point the material's nodes at those files;
    returns the mode actually used."""
    if storage == "BESIDE_BLEND" and bpy.data.filepath:
        folder = os.path.join(os.path.dirname(bpy.data.filepath), TEXTURE_FOLDER)
        os.makedirs(folder, exist_ok=True)
        for image in images:
            if image.packed_file is None:
                image.pack()
            stem = bpy.path.clean_name(os.path.splitext(image.name)[0])
            path, k = os.path.join(folder, stem + ".png"), 1
            while os.path.exists(path):
                k += 1
                path = os.path.join(folder, "%s_%d.png" % (stem, k))
            with open(path, "wb") as f:
                f.write(image.packed_file.data)
            on_disk = bpy.data.images.load(path, check_existing=False)
            on_disk.colorspace_settings.name = image.colorspace_settings.name
            on_disk.alpha_mode = image.alpha_mode
            on_disk.filepath = bpy.path.relpath(path)
            for node in material.node_tree.nodes:
                if node.type == "TEX_IMAGE" and node.image == image:
                    node.image = on_disk
            if image.users == 0:
                bpy.data.images.remove(image)
        return "BESIDE_BLEND"
    for image in images:
        if image.packed_file is None:
            image.pack()
    return "PACK"


def finish_pbr_material(material, storage="PACK"):
    """Colour spaces, alpha mode and image storage of one imported PBR material; returns a summary dict."""
    bsdf = bsdf_of(material)
    if bsdf is None:
        return None
    base = source_image(bsdf.inputs["Base Color"])
    data_images = {source_image(bsdf.inputs[name]) for name in ("Metallic", "Roughness")} - {None}
    if base is not None:
        base.colorspace_settings.name = "sRGB"
    for image in data_images:
        if image is not base:
            image.colorspace_settings.name = "Non-Color"
    alpha_linked = bool(bsdf.inputs["Alpha"].links)
    set_alpha_blend(material, alpha_linked)
    images = [i for i in [base, *sorted(data_images, key=lambda i: i.name)] if i is not None]
    summary = {"base_color": base.name if base else "", "data": sorted(i.name for i in data_images),
               "alpha_blend": alpha_linked}
    summary["storage"] = _store_images(material, images, storage)  # may replace the images by files on disk
    material["trellis_pbr"] = True
    return summary
