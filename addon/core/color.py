"""sRGB <-> linear (IEC 61966-2-1) for colours in [0, 1].

Blender's colour attributes, materials and glTF's COLOR_0 hold linear values; a
3DGS PLY's DC term and image pixels are sRGB display values. Every conversion
between the two goes through here.
"""

import numpy as np


def srgb_to_linear(c):
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c):
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)
