"""Textured mesh -> sparse PBR voxels, as o_voxel's ``textured_mesh_to_volumetric_attr`` (data toolkit).

For every triangle the voxels are those of the flexible-dual-grid scan (``scanline``; the same voxel
set as ``mesh_to_flexible_dual_grid``). Each (triangle, voxel) pair projects the voxel centre onto
the triangle's plane, interpolates the UV with the (unclamped) barycentric coordinates, samples the
material there and adds it with weight ``1 - d`` (``d`` the signed distance to the plane, world
units, as the reference). Per voxel, the weighted mean is the attribute.

Materials (trimesh): ``PBRMaterial`` as the reference reads it (base colour RGB texture x factor;
metallic = metallicRoughness B x factor, roughness = G x factor, factors defaulting to 1; alpha =
base colour A x alpha factor when alphaMode is MASK / BLEND, cut at alphaCutoff for MASK, else 1);
textures sampled bilinearly with REPEAT wrap and trilinear mipmaps (2x2 integer box filter, the
level from the triangle's texel footprint against the voxel size). A ``SimpleMaterial`` (OBJ) is
converted with trimesh's ``to_pbr``. Vertex colours (``ColorVisuals``, which the reference does not
take) are interpolated like UVs, with the data toolkit's default material otherwise (metallic 0,
roughness 0.5); an untextured mesh gets that default material's grey 0.8.
"""
from __future__ import annotations

from typing import List, Optional, Union

import numpy as np

from ...errors import BadInputError
from .grid import UNIT_AABB, Aabb, GridSize, as_numpy, grid_geometry, linear_keys
from .pbr_voxels import PBR_CHANNELS, PbrVoxels
from .scanline import grid_crossings

DEFAULT_MATERIAL = {"base_color": (0.8, 0.8, 0.8), "metallic": 0.0, "roughness": 0.5, "alpha": 1.0}


# ------------------------------------------------------------------------------ textures
class MipTexture:
    """A uint8 texture [H, W, C] with the reference's mipmaps, sampled bilinearly (REPEAT wrap)."""

    def __init__(self, image: np.ndarray):
        img = np.asarray(image)
        if img.ndim == 2:
            img = img[..., None]
        h, w = img.shape[:2]
        if h != w or (h & (h - 1)) != 0:
            img = _resize_power_of_two(img)
        self.levels = [img.astype(np.uint8)]
        while self.levels[-1].shape[0] > 1:
            cur = self.levels[-1].astype(np.int64)
            nxt = (cur[0::2, 0::2] + cur[1::2, 0::2] + cur[0::2, 1::2] + cur[1::2, 1::2]) // 4
            self.levels.append(nxt.astype(np.uint8))

    @staticmethod
    def _bilinear(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        h, w = tex.shape[:2]
        x = (u * w).astype(np.float32)
        y = ((1 - v) * h).astype(np.float32)
        x_lo = np.floor(x - np.float32(0.5)).astype(np.int64)
        y_lo = np.floor(y - np.float32(0.5)).astype(np.int64)
        wx = (x - x_lo - np.float32(0.5))[:, None]
        wy = (y - y_lo - np.float32(0.5))[:, None]
        x0, x1 = x_lo % w, (x_lo + 1) % w
        y0, y1 = y_lo % h, (y_lo + 1) % h
        t = tex.astype(np.float32)
        c = ((1 - wx) * (1 - wy) * t[y0, x0] + wx * (1 - wy) * t[y0, x1]
             + (1 - wx) * wy * t[y1, x0] + wx * wy * t[y1, x1])
        return c / np.float32(255)

    def sample(self, u: np.ndarray, v: np.ndarray, mip_length: np.ndarray, mip_offset: float = 0.0) -> np.ndarray:
        """float32 [P, C] in [0, 1]: trilinear-mipmapped sample at UVs (v up, as trimesh stores them)."""
        h = self.levels[0].shape[0]
        n_mips = len(self.levels) - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            level = np.log2(mip_length * h) + mip_offset
        base = ~np.isfinite(level) | (level <= 0) | (n_mips == 0)
        out = np.zeros((len(u), self.levels[0].shape[2]), np.float32)
        if base.any():
            out[base] = self._bilinear(self.levels[0], u[base], v[base])
        top = ~base & (level >= n_mips)
        if top.any():
            out[top] = self._bilinear(self.levels[n_mips], u[top], v[top])
        mid = ~base & ~top
        if mid.any():
            lv = level[mid]
            lo = np.floor(lv).astype(np.int64)
            frac = (lv - lo).astype(np.float32)[:, None]
            idx = np.nonzero(mid)[0]
            for k in np.unique(lo):
                sel = lo == k
                a = self._bilinear(self.levels[k], u[idx[sel]], v[idx[sel]])
                b = self._bilinear(self.levels[k + 1], u[idx[sel]], v[idx[sel]])
                out[idx[sel]] = (1 - frac[sel]) * a + frac[sel] * b
        return out


def _resize_power_of_two(img: np.ndarray) -> np.ndarray:
    """Square power-of-two copy (nearest power of two of the larger side, LANCZOS), as the data toolkit does."""
    from PIL import Image

    n = max(img.shape[:2])
    lower = 1 << (n.bit_length() - 1)
    size = lower if n - lower < 2 * lower - n else 2 * lower
    if lower == n:
        size = n
    chans = img.shape[2]
    pil = Image.fromarray(img[..., 0] if chans == 1 else img)
    out = np.asarray(pil.resize((size, size), Image.LANCZOS))
    return out[..., None] if out.ndim == 2 else out


# ----------------------------------------------------------------------------- materials
class _Material:
    """One geometry's material in the reference's terms (factors and optional textures)."""

    def __init__(self, visual, n_vertices: int):
        import trimesh

        self.base_factor = np.asarray(DEFAULT_MATERIAL["base_color"], np.float32)
        self.metallic_factor = np.float32(DEFAULT_MATERIAL["metallic"])
        self.roughness_factor = np.float32(DEFAULT_MATERIAL["roughness"])
        self.alpha_factor = np.float32(1.0)
        self.alpha_mode, self.alpha_cutoff = "OPAQUE", np.float32(0.5)
        self.base_tex = self.mr_tex = self.alpha_tex = None
        self.vertex_rgba: Optional[np.ndarray] = None
        kind = getattr(visual, "kind", None)
        if isinstance(visual, trimesh.visual.TextureVisuals) and visual.material is not None:
            mat = visual.material
            if not isinstance(mat, trimesh.visual.material.PBRMaterial):
                mat = mat.to_pbr()
            self._from_pbr(mat)
        elif isinstance(visual, trimesh.visual.ColorVisuals) and kind in ("vertex", "face"):
            if kind == "vertex":
                self.vertex_rgba = np.asarray(visual.vertex_colors, np.float32)[:, :4] / 255
            else:
                self.face_rgba = np.asarray(visual.face_colors, np.float32)[:, :4] / 255
            self.base_factor = np.ones(3, np.float32)

    def _from_pbr(self, mat):
        f = mat.baseColorFactor
        self.base_factor = (np.asarray(f, np.float32)[:3] / 255) if f is not None else np.ones(3, np.float32)
        self.alpha_factor = np.float32(np.asarray(f, np.float32)[3] / 255) if f is not None else np.float32(1.0)
        self.metallic_factor = np.float32(mat.metallicFactor if mat.metallicFactor is not None else 1.0)
        self.roughness_factor = np.float32(mat.roughnessFactor if mat.roughnessFactor is not None else 1.0)
        self.alpha_mode = mat.alphaMode if mat.alphaMode in ("OPAQUE", "MASK", "BLEND") else "OPAQUE"
        self.alpha_cutoff = np.float32(mat.alphaCutoff if mat.alphaCutoff is not None else 0.5)
        if mat.baseColorTexture is not None:
            rgba = np.asarray(mat.baseColorTexture.convert("RGBA"))
            self.base_tex = MipTexture(rgba[..., :3])
            if self.alpha_mode != "OPAQUE":
                self.alpha_tex = MipTexture(rgba[..., 3])
        if mat.metallicRoughnessTexture is not None:
            self.mr_tex = MipTexture(np.asarray(mat.metallicRoughnessTexture.convert("RGB"))[..., 1:3])

    def shade(self, uv: np.ndarray, mip_length: np.ndarray, bary: np.ndarray, corners: np.ndarray,
              face_ids: np.ndarray, mip_offset: float) -> np.ndarray:
        """float32 [P, 6] attributes at the given UVs / barycentrics (reference rules, see module doc)."""
        p = len(uv)
        out = np.empty((p, PBR_CHANNELS), np.float32)
        base = np.ones((p, 3), np.float32) if self.base_tex is None else self.base_tex.sample(uv[:, 0], uv[:, 1], mip_length, mip_offset)
        alpha = np.ones(p, np.float32)
        if self.vertex_rgba is not None:
            rgba = np.einsum("pk,pkc->pc", bary, self.vertex_rgba[corners])
            base, alpha = rgba[:, :3], rgba[:, 3]
        elif getattr(self, "face_rgba", None) is not None:
            rgba = self.face_rgba[face_ids]
            base, alpha = rgba[:, :3], rgba[:, 3]
        out[:, 0:3] = base * self.base_factor
        if self.mr_tex is not None:
            mr = self.mr_tex.sample(uv[:, 0], uv[:, 1], mip_length, mip_offset)
            out[:, 3], out[:, 4] = mr[:, 1], mr[:, 0]
        else:
            out[:, 3], out[:, 4] = 1.0, 1.0
        out[:, 3] *= self.metallic_factor
        out[:, 4] *= self.roughness_factor
        if self.alpha_mode != "OPAQUE":
            if self.alpha_tex is not None:
                alpha = self.alpha_tex.sample(uv[:, 0], uv[:, 1], mip_length, mip_offset)[:, 0]
            alpha = alpha * self.alpha_factor
            if self.alpha_mode == "MASK":
                alpha = np.where(alpha < self.alpha_cutoff, 0.0, 1.0).astype(np.float32)
            out[:, 5] = alpha
        else:
            out[:, 5] = alpha if (self.vertex_rgba is not None or getattr(self, "face_rgba", None) is not None) else 1.0
        return out


def _geometries(mesh) -> List:
    import trimesh

    if isinstance(mesh, (str, bytes)) or hasattr(mesh, "__fspath__"):
        mesh = trimesh.load(mesh)
    if isinstance(mesh, trimesh.Scene):
        return [g for g in mesh.dump(concatenate=False) if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    if isinstance(mesh, trimesh.Trimesh):
        return [mesh] if len(mesh.faces) else []
    raise BadInputError(f"cannot voxelise a {type(mesh).__name__}; pass a trimesh.Trimesh or Scene (or a mesh file)")


def _tangent_frame(tris: np.ndarray, uvs: np.ndarray):
    """(unit normal [T, 3], mip_length scale [T]) of the reference's compute_TBN (texel footprint per world unit)."""
    e1, e2 = tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]
    n = np.cross(e1, e2)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(norm > 0, n / np.where(norm > 0, norm, 1), n)
    duv1, duv2 = uvs[:, 1] - uvs[:, 0], uvs[:, 2] - uvs[:, 0]
    det = duv1[:, 0] * duv2[:, 1] - duv1[:, 1] * duv2[:, 0]
    t = duv2[:, 1:2] * e1 - duv1[:, 1:2] * e2
    b = duv1[:, 0:1] * e2 - duv2[:, 0:1] * e1
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / det
        mx, my = inv * np.linalg.norm(t, axis=1), inv * np.linalg.norm(b, axis=1)
    degenerate = np.abs(det) < 1e-6
    mx, my = np.where(degenerate, 1e6, mx), np.where(degenerate, 1e6, my)
    return n.astype(np.float32), (mx * my).astype(np.float64)


def textured_mesh_to_pbr_voxels(
    mesh,
    grid_size: GridSize,
    aabb: Aabb = UNIT_AABB,
    mip_level_offset: float = 0.0,
) -> PbrVoxels:
    """PBR voxels of a textured mesh (trimesh Trimesh / Scene / file path) in the grid's frame.

    The mesh must already be placed in the grid's box (TRELLIS.2: z up, inside ``[-0.5, 0.5]^3``;
    the data toolkit centres and scales by ``0.99999 / max extent``). Voxels come in the order of
    ``mesh_to_flexible_dual_grid``'s coords for the same mesh (first discovery in the scan).
    """
    size, box, vs = grid_geometry(grid_size, aabb)
    geoms = _geometries(mesh)
    if not geoms:
        raise BadInputError("the mesh has no faces to voxelise", hint="Pass a mesh with triangles.")
    all_tris, all_uvs, mats, owner, face_local, corner_ids = [], [], [], [], [], []
    for gi, g in enumerate(geoms):
        faces = np.asarray(g.faces, np.int64)
        all_tris.append((np.asarray(g.vertices, np.float32)[faces] - box[0]).astype(np.float32))
        uv = getattr(g.visual, "uv", None)
        all_uvs.append(np.asarray(uv, np.float32)[faces] if uv is not None and len(uv) == len(g.vertices)
                       else np.zeros((len(faces), 3, 2), np.float32))
        mats.append(_Material(g.visual, len(g.vertices)))
        owner.append(np.full(len(faces), gi))
        face_local.append(np.arange(len(faces)))
        corner_ids.append(faces)
    tris = np.concatenate(all_tris)
    uvs = np.concatenate(all_uvs)
    owner = np.concatenate(owner)
    face_local = np.concatenate(face_local)
    corners = np.concatenate(corner_ids)

    crossings = grid_crossings(tris, vs, size)
    hits = crossings.voxels().reshape(-1, 3)
    keys = linear_keys(hits, size)
    tri_of_hit = np.repeat(crossings.triangle, 4)
    # voxel ids in first-discovery order (as mesh_to_flexible_dual_grid)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    discovery = np.argsort(first, kind="stable")
    rank = np.empty_like(discovery)
    rank[discovery] = np.arange(len(discovery))
    voxel_of_hit = rank[inverse.reshape(-1)]
    coords = hits[first[discovery]]
    # each triangle counts once per voxel (the reference collects a set per triangle)
    pair = np.unique(tri_of_hit.astype(np.int64) * len(coords) + voxel_of_hit)
    tri, vox = pair // len(coords), pair % len(coords)

    normals, mip_scale = _tangent_frame(tris, uvs)
    mip_length = (np.float64(vs.max()) / np.sqrt(mip_scale))[tri]
    centre = ((coords[vox].astype(np.float32) + np.float32(0.5)) * vs).astype(np.float32)
    a, b, c = tris[tri, 0], tris[tri, 1], tris[tri, 2]
    n = normals[tri]
    d = np.einsum("pi,pi->p", centre - a, n)
    proj = centre - d[:, None] * n
    ab, ac, ap = b - a, c - a, proj - a
    d00, d01, d11 = (ab * ab).sum(1), (ab * ac).sum(1), (ac * ac).sum(1)
    d20, d21 = (ap * ab).sum(1), (ap * ac).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = d00 * d11 - d01 * d01
        bv = (d11 * d20 - d01 * d21) / denom
        bw = (d00 * d21 - d01 * d20) / denom
    bary = np.stack([1 - bv - bw, bv, bw], axis=1).astype(np.float32)
    bary = np.where(np.isfinite(bary), bary, np.float32(1 / 3))       # zero-area triangle: its centroid
    uv = np.einsum("pk,pkc->pc", bary, uvs[tri])
    weight = (1 - d).astype(np.float64)

    values = np.zeros((len(tri), PBR_CHANNELS), np.float32)
    for gi, mat in enumerate(mats):
        sel = owner[tri] == gi
        if sel.any():
            values[sel] = mat.shade(uv[sel], mip_length[sel], bary[sel], corners[tri[sel]],
                                    face_local[tri[sel]], mip_level_offset)
    total = np.bincount(vox, weights=weight, minlength=len(coords))
    attrs = np.stack([np.bincount(vox, weights=weight * values[:, k], minlength=len(coords))
                      for k in range(PBR_CHANNELS)], axis=1) / total[:, None]
    return PbrVoxels(coords.astype(np.int32), np.clip(attrs, 0, 1).astype(np.float32), int(size[0]), box)


def pbr_voxels_to_uint8(voxels: PbrVoxels) -> dict:
    """The data toolkit's stored form: ``{name: uint8 [N, k]}`` per attribute (``clamp(x * 255)`` truncated)."""
    from .pbr_voxels import PBR_LAYOUT

    q = np.clip(voxels.attrs * 255, 0, 255).astype(np.uint8)
    return {name: q[:, sl] for name, sl in PBR_LAYOUT.items()}
