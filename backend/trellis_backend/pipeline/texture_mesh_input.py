"""The artist's mesh that TRELLIS.2 texturing starts from: read from a file (GLB, glTF, OBJ, PLY, ...) or
taken as a trimesh, checked, and never altered (no vertex merging, no reordering), so the textured result
can carry exactly the vertex array, faces and UVs that came in.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from ..errors import BadInputError

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")
UP_AXES = ("y", "z")


def read_input_mesh(mesh) -> Tuple["object", str]:
    """``(trimesh.Trimesh, label)`` of `mesh` (a path or a trimesh.Trimesh / Scene), exactly as stored.

    A file is loaded without processing (trimesh would otherwise merge duplicate vertices); a scene of one
    geometry under an identity transform is that geometry as is, a scene of several is concatenated with its
    node transforms applied.
    """
    import trimesh

    if isinstance(mesh, (str, Path)):
        path = Path(mesh).expanduser()
        if not path.is_file():
            raise BadInputError(f"mesh file not found: {path}", hint="Check the path of the mesh to texture.")
        if path.suffix.lower() not in MESH_SUFFIXES:
            raise BadInputError(f"unsupported mesh file type {path.suffix!r}: {path}",
                                hint="Give a GLB, glTF, OBJ or PLY file.")
        try:
            loaded = trimesh.load(str(path), process=False)  # OBJ: one vertex per (position, UV) pair
        except Exception as e:
            raise BadInputError(f"cannot read mesh {path}: {type(e).__name__}: {e}",
                                hint="The file is damaged or not a mesh; re-export it from your DCC tool.") from e
        label = str(path.resolve())
    else:
        loaded, label = mesh, "<mesh>"
    return _single_trimesh(loaded, label), label


def _single_trimesh(loaded, label: str):
    import trimesh

    if isinstance(loaded, trimesh.Scene):
        geometries = [g for g in loaded.geometry.values() if isinstance(g, trimesh.Trimesh)]
        if not geometries:
            raise BadInputError(f"{label} holds no triangle mesh (only points, lines or nothing)",
                                hint="Give a mesh with faces.")
        nodes = loaded.graph.nodes_geometry
        if len(geometries) == 1 and len(nodes) == 1 and np.allclose(loaded.graph[nodes[0]][0], np.eye(4)):
            loaded = geometries[0]
        else:
            loaded = loaded.to_mesh()
    if not isinstance(loaded, trimesh.Trimesh):
        raise BadInputError(f"{label} is not a triangle mesh ({type(loaded).__name__}): it has no faces",
                            hint="Give a mesh with faces (a point cloud cannot be textured).")
    if len(loaded.faces) == 0 or len(loaded.vertices) == 0:
        raise BadInputError(f"{label} has no faces", hint="Texturing needs a surface: give a mesh with triangles.")
    if not np.all(np.isfinite(loaded.vertices)):
        raise BadInputError(f"{label} has non-finite vertex positions (NaN or infinity)")
    return loaded


def mesh_uvs(mesh) -> Optional[np.ndarray]:
    """The mesh's own UVs (one per vertex, trimesh's convention), or None when it has none."""
    uv = getattr(mesh.visual, "uv", None)
    if uv is None or len(uv) != len(mesh.vertices):
        return None
    return np.asarray(uv)


def check_up_axis(up_axis: str) -> str:
    """'y' (glTF, and what the reference's ``preprocess_mesh`` assumes of every file) or 'z' (Blender's object
    space, or a z-up PLY)."""
    axis = str(up_axis).lower()
    if axis not in UP_AXES:
        raise BadInputError(f"up axis must be 'y' or 'z', got {up_axis!r}",
                            hint="'y' for glTF/GLB and most OBJ files, 'z' for Blender object space.")
    return axis
