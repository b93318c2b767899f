"""PBR GLB export of TRELLIS.2 results: mesh + sparse PBR voxels -> textured GLB.

The reference's ``o_voxel.postprocess.to_glb`` (CUDA: cumesh, nvdiffrast, flex_gemm) does, for a
generated mesh: simplify to a face budget, UV-unwrap, rasterise the atlas, find each texel's surface
point, sample the PBR voxels trilinearly there, inpaint the gutters, and write base colour (RGBA) and
metallic-roughness (G roughness, B metallic) textures with factors 1 in a trimesh GLB, y up.
This module does the same on the CPU with maintained libraries: fast-simplification (quadric
decimation), xatlas (unwrapping), numpy rasterisation (``uv_raster``) and the voxels' trilinear
sampling with the reference's rule; gutters are filled with the nearest baked texel.

Reference defaults kept here: texture 2048 (``to_glb`` and the demo's slider), face budget 500,000
(the demo's slider; ``to_glb``'s own default is 1,000,000). Differences, on purpose: alpha goes
into the base colour's A with ``alphaMode`` BLEND only when some texel is translucent (the
reference always writes OPAQUE); a texel whose point has no voxel among its 8 neighbours takes the
nearest voxel's value (the reference re-projects onto the unsimplified mesh with a BVH instead).

Texturing an artist's mesh uses ``bake_pbr_textures`` directly: it keeps the mesh's vertices,
faces and UVs as given (unwrapping only when it has no UVs) and takes ``to_grid``, the transform
that places the mesh in the voxels' frame.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

from ..errors import BadInputError
from ..representations.ovoxel.pbr_voxels import PBR_LAYOUT, PbrVoxels
from .export import Z_UP_TO_Y_UP, _glb_assemble, _glb_chunks, atomic_path, clean_mesh
from .uv_raster import fill_gutters, rasterize_uv

DEFAULT_TEXTURE_SIZE = 2048
DEFAULT_FACE_BUDGET = 500_000
TRANSLUCENT_BELOW = 254  # an alpha texel (0..255) below this makes the material BLEND

PathLike = Union[str, Path]


# ----------------------------------------------------------------------- geometry steps
def simplify_mesh(vertices: np.ndarray, faces: np.ndarray, face_budget: int) -> Tuple[np.ndarray, np.ndarray]:
    """Quadric decimation (fast-simplification) down to about ``face_budget`` faces; smaller meshes pass through."""
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    if face_budget <= 0:
        raise BadInputError(f"face budget must be positive, got {face_budget}")
    if len(faces) <= face_budget:
        return vertices, faces
    import fast_simplification

    v, f = fast_simplification.simplify(vertices.astype(np.float32), faces.astype(np.int32),
                                        target_reduction=1.0 - face_budget / len(faces))
    v, f, _ = clean_mesh(np.asarray(v, np.float64), np.asarray(f, np.int64))
    return v, f


def unwrap_uv(vertices: np.ndarray, faces: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """xatlas atlas: (vertices [V', 3], faces [F, 3], uvs [V', 2] in glTF convention (v down), vmap [V'] into the input)."""
    import xatlas

    vmap, new_faces, uvs = xatlas.parametrize(np.asarray(vertices, np.float32), np.asarray(faces, np.uint32))
    return np.asarray(vertices)[vmap], new_faces.astype(np.int64), uvs.astype(np.float32), vmap.astype(np.int64)


# -------------------------------------------------------------------------------- baking
def bake_texture_maps(grid_vertices: np.ndarray, faces: np.ndarray, uvs_gltf: np.ndarray, voxels: PbrVoxels,
                      texture_size: int = DEFAULT_TEXTURE_SIZE) -> Dict[str, np.ndarray]:
    """Bake the voxels onto a UV atlas: ``{"base_color": uint8 [S, S, 3 or 4], "metallic_roughness": uint8 [S, S, 3],
    "alpha_blend": bool}``.

    ``grid_vertices`` are the mesh's vertices in the voxels' frame; ``uvs_gltf`` use glTF's convention.
    Each covered texel samples the voxels at its surface point; uncovered texels copy the nearest covered one.
    """
    if texture_size < 8:
        raise BadInputError(f"texture size must be at least 8 texels, got {texture_size}")
    face_id, bary = rasterize_uv(np.asarray(uvs_gltf, np.float64), np.asarray(faces, np.int64), texture_size)
    covered = face_id >= 0
    tri = np.asarray(faces, np.int64)[face_id[covered]]
    gv = np.asarray(grid_vertices, np.float64)
    points = np.einsum("pk,pkc->pc", bary[covered].astype(np.float64), gv[tri])
    attrs = voxels.sample(points)
    # texels whose 8 neighbouring voxels are all absent: nearest voxel instead of black
    empty = np.all(attrs == 0, axis=1)
    if empty.any() and len(voxels.coords):
        attrs[empty] = voxels.nearest(points[empty])
    image = np.zeros((texture_size, texture_size, attrs.shape[1]), np.float32)
    image[covered] = attrs
    image = fill_gutters(image, covered) if covered.any() else image
    q = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    base = q[..., PBR_LAYOUT["base_color"]]
    alpha = q[..., PBR_LAYOUT["alpha"]]
    blend = bool(covered.any() and alpha[covered].min() < TRANSLUCENT_BELOW)
    metallic, roughness = q[..., PBR_LAYOUT["metallic"]], q[..., PBR_LAYOUT["roughness"]]
    return {
        "base_color": np.concatenate([base, alpha], axis=-1) if blend else base,
        "metallic_roughness": np.concatenate([np.zeros_like(metallic), roughness, metallic], axis=-1),
        "alpha_blend": blend,
    }


def _pbr_material(maps: Dict[str, np.ndarray]):
    import trimesh
    from PIL import Image

    return trimesh.visual.material.PBRMaterial(
        name="trellis2_pbr",
        baseColorTexture=Image.fromarray(maps["base_color"]),
        baseColorFactor=[255, 255, 255, 255],
        metallicRoughnessTexture=Image.fromarray(maps["metallic_roughness"]),
        metallicFactor=1.0,
        roughnessFactor=1.0,
        alphaMode="BLEND" if maps["alpha_blend"] else "OPAQUE",
        doubleSided=True,
    )


def _apply(transform: Optional[np.ndarray], vertices: np.ndarray) -> np.ndarray:
    v = np.asarray(vertices, np.float64)
    if transform is None:
        return v
    t = np.asarray(transform, np.float64)
    if t.shape != (4, 4):
        raise BadInputError(f"to_grid must be a 4x4 matrix (column-vector convention), got {t.shape}")
    return v @ t[:3, :3].T + t[:3, 3]


def bake_pbr_textures(mesh, voxels: PbrVoxels, texture_size: int = DEFAULT_TEXTURE_SIZE,
                      to_grid: Optional[np.ndarray] = None):
    """A trimesh.Trimesh with the voxels baked into a PBR material on the mesh's own UVs.

    ``mesh``: a trimesh.Trimesh. With UVs (``mesh.visual.uv``, one per vertex), its vertices, faces and
    UVs come back bit for bit, only the material is new; without, xatlas unwraps it (vertices are then
    split along the seams). ``to_grid``: 4x4 matrix placing the mesh in the voxels' frame (identity if None).
    """
    import trimesh

    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise BadInputError("bake_pbr_textures needs a trimesh.Trimesh with faces",
                            hint="Load the mesh with trimesh (a Scene: use scene.dump(concatenate=True)).")
    uv = getattr(mesh.visual, "uv", None)
    if uv is not None and len(uv) == len(mesh.vertices):
        vertices, faces, uv_trimesh = mesh.vertices, mesh.faces, np.asarray(uv)
        uv_gltf = np.stack([uv_trimesh[:, 0], 1.0 - uv_trimesh[:, 1]], axis=1)
    else:
        vertices, faces, uv_gltf, _ = unwrap_uv(mesh.vertices, mesh.faces)
        uv_trimesh = np.stack([uv_gltf[:, 0], 1.0 - uv_gltf[:, 1]], axis=1)
    maps = bake_texture_maps(_apply(to_grid, vertices), faces, uv_gltf, voxels, texture_size)
    return trimesh.Trimesh(vertices=vertices, faces=faces, process=False,
                           visual=trimesh.visual.TextureVisuals(uv=uv_trimesh, material=_pbr_material(maps)))


# --------------------------------------------------------------------------------- GLB
def glb_bytes(mesh) -> bytes:
    """GLB of a textured trimesh with the PBR factors written explicitly (metallic / roughness 1: the
    textures carry the values; some viewers treat a missing factor differently)."""
    js, rest = _glb_chunks(mesh.export(file_type="glb"))
    for m in js.get("materials", []):
        pbr = m.setdefault("pbrMetallicRoughness", {})
        pbr["metallicFactor"] = 1.0
        pbr["roughnessFactor"] = 1.0
        m.setdefault("doubleSided", True)
    return _glb_assemble(js, rest)


def write_textured_glb(path: PathLike, mesh) -> Dict[str, int]:
    """Write a baked trimesh (``bake_pbr_textures``' result) as GLB, atomically, vertices as they are."""
    data = glb_bytes(mesh)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return {"vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces))}


def write_pbr_glb(path: PathLike, vertices, faces, voxels: PbrVoxels, face_budget: int = DEFAULT_FACE_BUDGET,
                  texture_size: int = DEFAULT_TEXTURE_SIZE) -> Dict[str, int]:
    """Generated mesh (z up, in the voxels' frame) + PBR voxels -> textured GLB (y up), atomically.

    Steps: drop degenerate faces, simplify to ``face_budget`` faces, unwrap with xatlas, bake base
    colour / metallic-roughness (/ alpha) at ``texture_size``, rotate z-up -> y-up as ``export.write_glb``.
    Returns counts ``{"vertices", "faces", "texture_size", "alpha_blend"}``.
    """
    import trimesh

    v = np.asarray(vertices.detach().cpu().numpy() if hasattr(vertices, "detach") else vertices, np.float64)
    f = np.asarray(faces.detach().cpu().numpy() if hasattr(faces, "detach") else faces, np.int64)
    if len(v) == 0 or len(f) == 0:
        raise BadInputError("the generated mesh is empty (no faces)", hint="Try another seed or more sampling steps.")
    v, f, _ = clean_mesh(v, f)
    v, f = simplify_mesh(v, f, face_budget)
    baked = bake_pbr_textures(trimesh.Trimesh(v, f, process=False), voxels, texture_size)
    baked.vertices = np.asarray(baked.vertices) @ Z_UP_TO_Y_UP
    counts = write_textured_glb(path, baked)
    return {**counts, "texture_size": int(texture_size),
            "alpha_blend": int(baked.visual.material.alphaMode == "BLEND")}
