"""Closing small holes of a decoded mesh, as TRELLIS.2 does after its shape decoder.

The reference (``Mesh.fill_holes``, CuMesh, CUDA) finds the boundary loops -- chains of edges that
belong to one face only, through vertices with exactly two such edges -- and closes every loop whose
perimeter is below ``max_hole_perimeter`` (3e-2 of the unit cube) with one new vertex at the mean of
the loop's edge midpoints and a fan of triangles from it to each boundary edge.

trimesh has no such filler (``trimesh.repair.fill_holes`` closes only three- and four-edge holes), so
this is that rule in numpy/scipy. One difference, on purpose: each fan triangle is oriented against its
boundary edge's face (the reference keeps the edge's stored vertex order), so closed holes keep the
surface's winding.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

DEFAULT_MAX_HOLE_PERIMETER = 3e-2


def boundary_loops(faces: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(edges, loop_id)``: the directed boundary edges ``[E, 2]`` (as their face walks them) that form simple
    loops, and the loop each belongs to (0..L-1). Boundary chains through a vertex with more than two
    boundary edges (non-manifold boundaries) are not loops and are left out, as in the reference."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    faces = np.asarray(faces, np.int64)
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    n = int(faces.max()) + 1
    key = directed.min(axis=1) * n + directed.max(axis=1)  # one integer per undirected edge
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    edges = directed[counts[inverse.reshape(-1)] == 1]
    if len(edges) == 0:
        return edges.reshape(0, 2), np.zeros(0, np.int64)
    degree = np.bincount(edges.reshape(-1), minlength=n)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    loop_label = label[edges[:, 0]]
    # a component is a simple loop when each of its vertices has exactly two boundary edges
    bad = np.unique(label[np.flatnonzero(degree > 2)])
    keep = ~np.isin(loop_label, bad)
    edges, loop_label = edges[keep], loop_label[keep]
    _, loop_id = np.unique(loop_label, return_inverse=True)
    return edges, loop_id.reshape(-1)


def fill_small_holes(vertices: np.ndarray, faces: np.ndarray,
                     max_hole_perimeter: float = DEFAULT_MAX_HOLE_PERIMETER) -> Tuple[np.ndarray, np.ndarray]:
    """``(vertices, faces)`` with every boundary loop shorter than `max_hole_perimeter` closed by a fan around
    the mean of its edge midpoints (new vertices appended, new faces after the old ones)."""
    vertices = np.asarray(vertices)
    faces = np.asarray(faces, np.int64)
    if len(faces) == 0:
        return vertices, faces
    edges, loop_id = boundary_loops(faces)
    if len(edges) == 0:
        return vertices, faces
    v = vertices.astype(np.float64)
    lengths = np.linalg.norm(v[edges[:, 1]] - v[edges[:, 0]], axis=1)
    loops = int(loop_id.max()) + 1
    perimeter = np.bincount(loop_id, weights=lengths, minlength=loops)
    small = perimeter < max_hole_perimeter
    chosen = small[loop_id]
    if not chosen.any():
        return vertices, faces
    midpoints = (v[edges[:, 0]] + v[edges[:, 1]]) / 2
    sizes = np.bincount(loop_id, minlength=loops)
    centres = np.stack([np.bincount(loop_id, weights=midpoints[:, k], minlength=loops) for k in range(3)], 1)
    centres = centres / np.maximum(sizes, 1)[:, None]
    new_index = np.full(loops, -1, np.int64)
    new_index[small] = len(vertices) + np.arange(int(small.sum()))
    e = edges[chosen]
    fan = np.stack([e[:, 1], e[:, 0], new_index[loop_id[chosen]]], axis=1)
    out_vertices = np.concatenate([vertices, centres[small].astype(vertices.dtype)])
    return out_vertices, np.concatenate([faces, fan])
