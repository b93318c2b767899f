"""Scene settings (saved with the .blend) and the runtime job status (not saved).

The panel draws from ``WindowManager.trellis_status`` so every state change
made by the timer on the main thread shows up on the next redraw, and tests
can read exactly what the user would see.
"""

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

from .importers import gaussian_nodes

OUTPUTS = [
    ("BOTH", "Both", "Mesh and Gaussians"),
    ("MESH", "Mesh", "Textured mesh (GLB)"),
    ("GAUSSIANS", "Gaussians", "3D Gaussian splats (PLY) as a point cloud"),
]
IMAGE_SOURCES = [
    ("NONE", "Prompt only", "Generate from the text prompt"),
    ("FILE", "Image file", "Generate from an image file on disk"),
    ("DATABLOCK", "Blender image", "Generate from an image loaded in this .blend"),
    ("MULTI", "Several images", "Generate one object from several images of it (files or Blender images)"),
]
IMAGE_ITEM_SOURCES = [("FILE", "File", "An image file on disk"), ("DATABLOCK", "Blender image", "An image in this .blend")]
MULTI_IMAGE_MODES = [
    ("stochastic", "Stochastic", "Each sampling step is conditioned on one of the images in turn (the reference's "
                                 "default; as fast as one image)"),
    ("multidiffusion", "Multidiffusion", "Every step averages the predictions for all images (slower: one "
                                         "prediction per image)"),
]
SPLAT_DISPLAYS = [
    ("GAUSSIANS", "Gaussian splats", "Each splat fades as its Gaussian does, as 3D Gaussian splatting renders it "
                                     "(EEVEE and Cycles)"),
    ("ELLIPSOIDS", "Ellipsoids", "Opaque ellipsoids at twice the Gaussians' size (a solid, readable look)"),
    ("POINTS", "Points", "One sphere per Gaussian: the fastest viewport"),
]
STATES = [(s, s.title(), "") for s in ("IDLE", "STARTING", "RUNNING", "CANCELLING", "DONE", "FAILED", "CANCELLED")]


def splat_objects(scene):
    return [o for o in scene.objects if o.get("trellis_kind") == "gaussians"]


def _apply_splat_display(settings, context):
    """Display choice and viewport limit apply to every splat object of the scene at once."""
    for obj in splat_objects(context.scene):
        gaussian_nodes.set_display(obj, settings.splat_display, settings.splat_viewport_limit)


class TRELLIS_ImageItem(bpy.types.PropertyGroup):
    """One of the several images of an object: a file, or an image datablock."""

    source: EnumProperty(name="Source", items=IMAGE_ITEM_SOURCES, default="FILE")
    path: StringProperty(name="Image", subtype="FILE_PATH")
    image: PointerProperty(name="Image", type=bpy.types.Image)


class TRELLIS_Settings(bpy.types.PropertyGroup):
    prompt: StringProperty(name="Prompt", description="Text describing the object to generate")
    image_source: EnumProperty(name="Condition", items=IMAGE_SOURCES, default="NONE")
    image_path: StringProperty(name="Image", subtype="FILE_PATH",
                               description="Image of the object (RGBA, or on a plain background)")
    image: PointerProperty(name="Image", type=bpy.types.Image)
    images: CollectionProperty(name="Images", type=TRELLIS_ImageItem,
                               description="Several images of the same object (condition 'Several images')")
    images_index: IntProperty(name="Active image", default=0, min=0)
    multi_image_mode: EnumProperty(name="Combine", items=MULTI_IMAGE_MODES, default="stochastic",
                                   description="How several images condition one generation")
    seed: IntProperty(name="Seed", default=0, min=0)
    custom_sampling: BoolProperty(name="Custom sampling", default=False,
                                  description="Override the model's own step counts and guidance strengths")
    ss_steps: IntProperty(name="Structure steps", default=25, min=1, max=500,
                          description="Sampling steps of stage 1 (sparse structure)")
    slat_steps: IntProperty(name="Detail steps", default=25, min=1, max=500,
                            description="Sampling steps of stage 2 (structured latent)")
    ss_cfg: FloatProperty(name="Structure guidance", default=7.5, min=0.0, max=50.0,
                          description="Classifier-free guidance strength of stage 1")
    slat_cfg: FloatProperty(name="Detail guidance", default=3.0, min=0.0, max=50.0,
                            description="Classifier-free guidance strength of stage 2")
    outputs: EnumProperty(name="Outputs", items=OUTPUTS, default="BOTH")
    splat_display: EnumProperty(name="Splat display", items=SPLAT_DISPLAYS, default="GAUSSIANS",
                                update=_apply_splat_display,
                                description="How Gaussian splat objects are shown (viewport and render)")
    splat_viewport_limit: IntProperty(name="Viewport splats", default=gaussian_nodes.DEFAULT_VIEWPORT_LIMIT,
                                      min=1, soft_max=1000000, update=_apply_splat_display,
                                      description="At most about this many splats per object in the viewport "
                                                  "(a random subset, for speed); renders always use all")
    # Region edit ("Regenerate selection", operators_edit.py)
    edit_prompt: StringProperty(name="New prompt",
                                description="Prompt for the selected region (empty: the object's own prompt/image)")
    edit_image_path: StringProperty(name="New image", subtype="FILE_PATH",
                                    description="Image condition for the selected region (optional)")
    edit_seed: IntProperty(name="Edit seed", default=1, min=0,
                           description="Seed of the region edit (change it for another variant)")
    edit_keep_structure: BoolProperty(name="Keep structure", default=False,
                                      description="Keep the occupied voxels; regenerate only their features "
                                                  "(colour/detail) inside the region")
    edit_margin: IntProperty(name="Blend margin", default=0, min=0, max=16,
                             description="Voxels over which the new features blend into the old ones")
    edit_region_source: EnumProperty(
        name="Region", default="AUTO",
        items=[("AUTO", "Auto", "Selected vertices in Edit Mode, else a selected box Empty"),
               ("BOX", "Box Empty", "The bounds of a selected Empty shown as a cube"),
               ("VERTICES", "Vertices", "The selected vertices of the object (Edit Mode), dilated by one voxel")])


class TRELLIS_Status(bpy.types.PropertyGroup):
    state: EnumProperty(items=STATES, default="IDLE")
    job_id: StringProperty()
    stage: StringProperty()
    step: IntProperty()
    total: IntProperty()
    message: StringProperty()
    error_type: StringProperty()
    error_message: StringProperty()
    error_hint: StringProperty()
    last_objects: StringProperty(description="Names of the objects the last job imported, ';'-separated")


register_classes, unregister_classes = bpy.utils.register_classes_factory((TRELLIS_ImageItem, TRELLIS_Settings,
                                                                                   TRELLIS_Status))

STATUS_FIELDS = ("job_id", "stage", "step", "total", "message", "last_objects")


def set_status(status, state=None, error=None, **fields):
    """The one writer of the job status the panel draws (controller, operators and region edit call it).

    ``state``: a STATES name, or None to keep it; ``error``: (type, message, hint) to show, () to
    clear, None to keep; ``fields``: any of STATUS_FIELDS.
    """
    unknown = set(fields) - set(STATUS_FIELDS)
    if unknown:
        raise TypeError("set_status got unknown field(s) %s" % ", ".join(sorted(unknown)))
    if state is not None:
        status.state = state
    if error is not None:
        status.error_type, status.error_message, status.error_hint = (tuple(error) + ("", "", ""))[:3]
    for name, value in fields.items():
        setattr(status, name, value)


def register():
    register_classes()
    bpy.types.Scene.trellis = PointerProperty(type=TRELLIS_Settings)
    bpy.types.WindowManager.trellis_status = PointerProperty(type=TRELLIS_Status)


def unregister():
    del bpy.types.WindowManager.trellis_status
    del bpy.types.Scene.trellis
    unregister_classes()
