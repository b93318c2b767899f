"""INRIA 3D Gaussian Splatting PLY -> activated arrays in Blender's z-up frame.

The PLY stores logits and logs (opacity, scale) and the spherical-harmonics DC
term; this turns them into what they mean (opacity in [0, 1], scales in world
units, unit quaternions, colours) so the Blender side only copies arrays.
The DC term gives the sRGB display colour (0.2821 * f_dc + 0.5, as 3DGS renders
it); Blender's colour attributes are linear, so it is converted.
"""

import numpy as np

from .color import srgb_to_linear
from .ply_reader import read_ply

SH_C0 = 0.28209479177387814

# The backend writes the INRIA layout the way the reference TRELLIS does:
# ply = (x, -z, y) of the z-up object space. Blender is z-up, so undo it.
PLY_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
PLY_TO_BLENDER_QUAT = np.array([np.sqrt(0.5), -np.sqrt(0.5), 0.0, 0.0])  # (w, x, y, z) of the matrix above


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def quat_multiply(a, b):
    """Hamilton product of (w, x, y, z) quaternions, broadcasting over rows."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, dtype=np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, dtype=np.float64), -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def quat_to_euler_xyz(q):
    """(w, x, y, z) -> Blender 'XYZ' Euler angles (R = Rz Ry Rx), vectorised."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    r00 = 1 - 2 * (y * y + z * z)
    r10 = 2 * (x * y + w * z)
    r20 = 2 * (x * z - w * y)
    r21 = 2 * (y * z + w * x)
    r22 = 1 - 2 * (x * x + y * y)
    return np.stack([np.arctan2(r21, r22), np.arcsin(np.clip(-r20, -1.0, 1.0)), np.arctan2(r10, r00)], axis=-1)


def load_gaussians(path):
    """Read an INRIA 3DGS PLY and return activated arrays in Blender's z-up frame."""
    _, props = read_ply(path)
    needed = ["x", "y", "z", "opacity", "scale_0", "scale_1", "scale_2",
              "rot_0", "rot_1", "rot_2", "rot_3", "f_dc_0", "f_dc_1", "f_dc_2"]
    missing = [p for p in needed if p not in props]
    if missing:
        raise ValueError("%s is not a 3D Gaussian Splatting PLY (missing %s)" % (path, ", ".join(missing)))
    f = {k: props[k].astype(np.float64) for k in needed}
    xyz = np.stack([f["x"], f["y"], f["z"]], axis=-1) @ PLY_TO_BLENDER.T
    quat = np.stack([f["rot_0"], f["rot_1"], f["rot_2"], f["rot_3"]], axis=-1)
    quat /= np.maximum(np.linalg.norm(quat, axis=-1, keepdims=True), 1e-12)
    quat = quat_multiply(PLY_TO_BLENDER_QUAT, quat)
    rgb = srgb_to_linear(SH_C0 * np.stack([f["f_dc_0"], f["f_dc_1"], f["f_dc_2"]], axis=-1) + 0.5)
    return {
        "position": xyz,
        "opacity": _sigmoid(f["opacity"]),
        "scale": np.exp(np.stack([f["scale_0"], f["scale_1"], f["scale_2"]], axis=-1)),
        "rotation": quat,
        "color": np.concatenate([rgb, np.ones((len(rgb), 1))], axis=-1),
    }
