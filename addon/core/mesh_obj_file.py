"""A triangle mesh with per-corner UVs as a Wavefront OBJ, for the backend's ``texture`` job (bpy-free).

OBJ keeps positions and UVs apart (``f v/vt``), so the backend bakes onto exactly the UVs of the Blender
mesh's corners; positions are written with 9 significant digits (float32 round-trips)."""


def write_triangle_obj(path, positions, tri_vertices, uvs=None, tri_uvs=None):
    """`positions` [(x, y, z)], `tri_vertices` [(a, b, c)] indices into them; `uvs` [(u, v)] with `tri_uvs`
    [(a, b, c)] indices into them (one UV per triangle corner), or both None for a mesh without UVs."""
    if (uvs is None) != (tri_uvs is None):
        raise ValueError("give both uvs and tri_uvs, or neither")
    if tri_uvs is not None and len(tri_uvs) != len(tri_vertices):
        raise ValueError("tri_uvs needs one entry per triangle")
    lines = ["# TRELLIS for Blender: mesh to texture"]
    lines.extend("v %.9g %.9g %.9g" % tuple(p) for p in positions)
    if uvs is not None:
        lines.extend("vt %.9g %.9g" % tuple(uv) for uv in uvs)
        lines.extend("f %d/%d %d/%d %d/%d" % (a + 1, ua + 1, b + 1, ub + 1, c + 1, uc + 1)
                     for (a, b, c), (ua, ub, uc) in zip(tri_vertices, tri_uvs))
    else:
        lines.extend("f %d %d %d" % (a + 1, b + 1, c + 1) for a, b, c in tri_vertices)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
