"""Region maths of "Regenerate selection": a box or a vertex selection -> the backend's region.

The generated object's local space is the SLAT sidecar's z-up unit cube
[-0.5, 0.5]^3 (the importer keeps it so), so a region is just coordinates in that
cube: an axis-aligned box, or the 64^3 voxels that selected vertices fall in.
"""

import numpy as np

GRID = 64
CUBE_CORNERS = np.array([[x, y, z, 1.0] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
NEIGHBOURS = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])


def box_region(to_local, size, box_name="box", object_name="object"):
    """A cube Empty (half size ``size``; ``to_local`` = object^-1 @ empty, 4x4) -> clipped AABB in object space."""
    corners = (np.asarray(to_local, dtype=np.float64) @ (CUBE_CORNERS * [size, size, size, 1.0]).T).T[:, :3]
    lo = np.maximum(-0.5, corners.min(axis=0))
    hi = np.minimum(0.5, corners.max(axis=0))
    if np.any(hi <= lo):
        raise ValueError("The box Empty '%s' does not overlap the object '%s'." % (box_name, object_name))
    return {"box_min": [float(v) for v in lo], "box_max": [float(v) for v in hi]}


def voxels_of_points(points, dilate=1):
    """Object-space points -> sorted 64^3 voxel indices, grown by ``dilate`` voxels (3x3x3 steps)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    cells = np.unique(np.clip(np.floor((points + 0.5) * GRID), 0, GRID - 1).astype(np.int64), axis=0)
    for _ in range(dilate):
        grown = (cells[:, None, :] + NEIGHBOURS[None]).reshape(-1, 3)
        cells = np.unique(grown[np.all((grown >= 0) & (grown < GRID), axis=1)], axis=0)
    return cells.tolist()
