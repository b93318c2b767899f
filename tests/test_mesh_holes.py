"""Small-hole filling of decoded TRELLIS.2 meshes (the reference's CuMesh rule, in numpy)."""
import numpy as np
import trimesh

from trellis_backend.representations.mesh.holes import boundary_loops, fill_small_holes


def _open_box(size: float):
    """A closed box of edge `size` with the two triangles of its +z side removed (a planar four-edge hole)."""
    box = trimesh.creation.box(extents=(size, size, size))
    top = np.flatnonzero(np.isclose(box.face_normals[:, 2], 1.0))
    assert len(top) == 2
    return np.asarray(box.vertices), np.delete(np.asarray(box.faces), top, axis=0), box


def test_a_small_hole_is_closed_by_a_fan_around_its_edge_midpoints():
    vertices, faces, box = _open_box(0.005)
    edges, loop_id = boundary_loops(faces)
    assert len(edges) == 4 and set(loop_id) == {0}
    v, f = fill_small_holes(vertices, faces, max_hole_perimeter=3e-2)
    assert len(v) == len(vertices) + 1 and len(f) == len(faces) + 4
    assert np.array_equal(f[:len(faces)], faces) and np.array_equal(v[:len(vertices)], vertices)
    assert np.allclose(v[-1], ((vertices[edges[:, 0]] + vertices[edges[:, 1]]) / 2).mean(0))
    filled = trimesh.Trimesh(v, f, process=False)
    assert filled.is_watertight and filled.is_winding_consistent
    assert np.isclose(filled.volume, box.volume)  # the fan lies in the removed side's plane, oriented outwards


def test_holes_at_or_above_the_perimeter_limit_stay_open():
    vertices, faces, _ = _open_box(0.1)  # perimeter 0.4 > 3e-2
    v, f = fill_small_holes(vertices, faces)
    assert np.array_equal(f, faces) and len(v) == len(vertices)


def test_a_closed_mesh_and_an_empty_mesh_pass_through():
    box = trimesh.creation.box()
    v, f = fill_small_holes(box.vertices, box.faces)
    assert np.array_equal(f, box.faces)
    v, f = fill_small_holes(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    assert len(f) == 0
