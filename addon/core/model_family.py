"""Which model family a chosen folder holds, read from its pipeline.json without Blender or torch, and what
the panel offers for it: TRELLIS text or image folders (prompt or image, Gaussians, sampling overrides),
TRELLIS.2 folders (one image, a PBR mesh, a resolution mode; texturing of an existing mesh)."""

import json
import os

TRELLIS2_NAMES = ("Trellis2ImageTo3DPipeline",)
EMBEDDED = "embedded"       # no folder chosen: the embedded TRELLIS models answer prompts and images
TRELLIS_TEXT = "trellis-text"
TRELLIS_IMAGE = "trellis-image"
TRELLIS2 = "trellis2"
RESOLUTION_MODES = ("512", "1024", "1024_cascade", "1536_cascade")  # the backend's (protocol.RESOLUTION_MODES)


def folder_family(folder):
    """One of the constants above for `folder` ('' when it has no readable pipeline.json)."""
    if not folder:
        return EMBEDDED
    try:
        with open(os.path.join(folder, "pipeline.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return ""
    args = config.get("args", {}) if isinstance(config, dict) else {}
    if config.get("name") in TRELLIS2_NAMES or (isinstance(args, dict) and "shape_slat_sampler" in args):
        return TRELLIS2
    if isinstance(args, dict) and "text_cond_model" in args:
        return TRELLIS_TEXT
    return TRELLIS_IMAGE


def default_resolution_mode(folder):
    """pipeline.json's ``default_pipeline_type`` of a TRELLIS.2 folder (the release's: 1024_cascade)."""
    try:
        with open(os.path.join(folder, "pipeline.json")) as f:
            mode = json.load(f).get("args", {}).get("default_pipeline_type", "1024_cascade")
    except (OSError, ValueError, AttributeError):
        return "1024_cascade"
    return mode if mode in RESOLUTION_MODES else "1024_cascade"


def offers(family):
    """What the panel shows for a family: {'prompt', 'image', 'gaussians', 'sampling', 'resolution', 'texture'}."""
    if family == TRELLIS2:
        return {"image", "resolution", "texture"}
    if family == TRELLIS_TEXT:
        return {"prompt", "gaussians", "sampling"}
    if family == TRELLIS_IMAGE:
        return {"image", "gaussians", "sampling"}
    return {"prompt", "image", "gaussians", "sampling"}


def generate_params_for_family(family, params, resolution_mode="DEFAULT"):
    """Generate request params cut to what the family takes: a TRELLIS.2 folder gets the mesh output only, no
    TRELLIS sampling overrides, and the resolution mode unless 'DEFAULT'. Raises ValueError when the family
    cannot answer (a TRELLIS.2 folder and no image)."""
    if family != TRELLIS2:
        return params
    if not params.get("image"):
        raise ValueError("TRELLIS.2 generates from an image: choose an image file or a Blender image.")
    if isinstance(params["image"], list):
        raise ValueError("TRELLIS.2 takes one image: keep a single image in the list.")
    out = {k: v for k, v in params.items()
           if k not in ("prompt", "ss_steps", "slat_steps", "ss_cfg", "slat_cfg", "multi_image_mode")}
    out["formats"] = ["mesh"]
    if resolution_mode and resolution_mode != "DEFAULT":
        if resolution_mode not in RESOLUTION_MODES:
            raise ValueError("unknown TRELLIS.2 resolution mode %r" % resolution_mode)
        out["resolution"] = resolution_mode
    return out
