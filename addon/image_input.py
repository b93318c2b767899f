"""Hand an image to the backend as a file path.

The backend is another process, so a Blender image datablock (generated,
packed, or edited in memory) is written out as a PNG first; an unmodified
image backed by a file on disk is passed through as-is.
"""

import os

import bpy
import numpy as np


def image_file_for_backend(image, out_dir, name):
    """Return a path the backend can read for ``image`` (writing ``<out_dir>/<name>.png`` if needed)."""
    if image.source == "FILE" and not image.packed_file and not image.is_dirty:
        path = bpy.path.abspath(image.filepath, library=image.library)
        if os.path.isfile(path):
            return os.path.normpath(path)
    width, height = image.size[:]
    if width == 0 or height == 0:
        raise ValueError("Image '%s' has no pixels (is the file missing?)" % image.name)
    pixels = np.empty(width * height * image.channels, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    if image.channels != 4:
        rgba = np.ones((width * height, 4), dtype=np.float32)
        chans = pixels.reshape(-1, image.channels)
        rgba[:, :3] = chans[:, :1] if image.channels < 3 else chans[:, :3]
        pixels = rgba.ravel()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name + ".png")
    copy = bpy.data.images.new("TRELLIS input (temporary)", width, height, alpha=True, float_buffer=image.is_float)
    try:
        copy.pixels.foreach_set(pixels)
        copy.filepath_raw = path
        copy.file_format = "PNG"
        copy.save()
    finally:
        bpy.data.images.remove(copy)
    return path
