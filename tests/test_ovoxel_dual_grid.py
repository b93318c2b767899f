"""O-Voxel flexible dual grid beyond the golden cases: a sphere's round trip and the training mesh's gradients."""
import numpy as np
import torch
import trimesh

from trellis_backend.representations.ovoxel import flexible_dual_grid_to_mesh, mesh_to_flexible_dual_grid

G = 32


def _sphere_voxels(radius=0.4):
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    coords, dual, inter = mesh_to_flexible_dual_grid(sphere.vertices, sphere.faces, G)
    return sphere, coords, dual, inter, None


def test_round_trip_sphere_stays_close():
    sphere, coords, dual, inter, _ = _sphere_voxels()
    vertices, faces = flexible_dual_grid_to_mesh(coords, dual * G - coords.float(), inter, None, grid_size=G)
    out = trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=False)
    from scipy.spatial import cKDTree

    np.random.seed(0)
    a, b = out.sample(100_000), sphere.sample(100_000)   # dense, so sample spacing stays far below a voxel
    chamfer = cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean()
    assert chamfer < 0.2 / G, f"Chamfer {chamfer:.4g} (voxel {1 / G:.4g})"
    radii = np.linalg.norm(vertices.numpy(), axis=1)
    assert np.abs(radii - 0.4).max() < 1.0 / G


def test_dual_offsets_inside_voxels():
    _, coords, dual, _, _ = _sphere_voxels()
    offsets = dual * G - coords.float()
    assert offsets.min() >= -1e-3 and offsets.max() <= 1 + 1e-3


def test_train_mesh_passes_gradients_to_offsets_and_split_weights():
    """The SC-VAE's training call: gradients reach the dual-vertex offsets and the split weights."""
    _, coords, dual, inter, _ = _sphere_voxels()
    offsets = (dual * G - coords.float()).requires_grad_(True)
    weights = torch.rand(len(coords), 1, generator=torch.Generator().manual_seed(0)).add_(0.1).requires_grad_(True)
    vertices, faces = flexible_dual_grid_to_mesh(coords, offsets, inter, weights, grid_size=G, train=True)
    assert vertices.shape[0] > len(coords) and faces.shape[1] == 3
    vertices.square().sum().backward()
    assert offsets.grad is not None and torch.isfinite(offsets.grad).all() and offsets.grad.abs().sum() > 0
    assert weights.grad is not None and torch.isfinite(weights.grad).all() and weights.grad.abs().sum() > 0


def test_face_overlaps_by_columns_equal_full_box_enumeration():
    """The per-column candidate cells of large triangles lose none of the box's overlapping voxels."""
    from trellis_backend.representations.ovoxel import mesh_to_dual_grid as m2g
    from trellis_backend.representations.ovoxel.grid import VoxelLookup, grid_geometry
    from trellis_backend.representations.ovoxel.scanline import grid_crossings

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.45)      # large triangles at 128^3
    size, box, vs = grid_geometry(128)
    tris = (sphere.vertices.astype(np.float32) - box[0]).astype(np.float32)[sphere.faces]
    coords = np.unique(grid_crossings(tris, vs, size).voxels().reshape(-1, 3), axis=0)
    lookup = VoxelLookup(coords, size)
    normals, _ = m2g.triangle_planes(tris)

    def pairs(**kw):
        tri, rows = zip(*m2g._face_overlaps(tris, normals, vs, size, lookup, big=1 << 40, **kw))
        return sorted(zip(np.concatenate(tri).tolist(), np.concatenate(rows).tolist()))

    by_columns, by_box = pairs(column_above=64), pairs(column_above=1 << 40)
    assert len(by_box) > 10000 and by_columns == by_box
