"""File writers: GLB (mesh), PLY (INRIA 3D Gaussian splatting layout), SLAT sidecar.

Every writer is atomic: it writes ``.<name>.partial-<pid>-...`` in the target folder and
renames it over the final name only when the file is complete, so a failure or a
cancellation never leaves a partial file that looks complete. A job's files as a set
(appear together or not at all, never over an existing file) are `output_files.OutputSet`'s.

GLB: trimesh, vertex colours (COLOR_0; from the Gaussians when decoded, as the reference
bakes its GLB texture from them, else the mesh decoder's colour channels), written as linear float
RGBA because glTF defines COLOR_0 as linear (the colours are sRGB display values until then; sRGB
bytes in COLOR_0 render washed out, e.g. a red chair pink), one PBR material (base colour white,
``metallicFactor`` 0 written explicitly, ``roughnessFactor`` 1), z-up -> y-up
(``(x, y, z) -> (x, z, -y)`` like the reference's ``to_glb``). Optionally a baked
texture (``texture_size > 0``): UV atlas from xatlas when it is installed, the vertex
colours rasterised into it; without xatlas the vertex colours are kept.

SLAT sidecar (``.npz``): ``coords`` int32 ``[N, 3]`` (x, y, z in the 64^3 grid),
``feats`` float32 ``[N, C]`` (de-normalised SLAT, i.e. what the decoders take) and
``settings`` (a JSON string: model folder, seed, prompt / image, steps, cfg, pipeline
version, normalisation...). `read_sidecar` returns the three.
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np

PathLike = Union[str, Path]

Z_UP_TO_Y_UP = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)  # row-vector form: v @ M


# ----------------------------------------------------------------------- atomic write
@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it to `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from .output_files import apply_user_mode, partial_prefix

    fd, tmp = tempfile.mkstemp(prefix=partial_prefix(path.name), dir=str(path.parent))
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise IOError(f"writer produced no data for {path}")
        apply_user_mode(tmp)  # mkstemp makes 0600; saved files follow the user's umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


# ------------------------------------------------------------------------------ GLB
def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def clean_mesh(vertices: np.ndarray, faces: np.ndarray, colors: Optional[np.ndarray] = None):
    """Drop degenerate faces (repeated indices) and unreferenced vertices."""
    faces = faces.astype(np.int64).reshape(-1, 3)
    ok = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    faces = faces[ok]
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    vertices = vertices[used]
    colors = colors[used] if colors is not None else None
    return vertices, remap[faces], colors


def mesh_vertex_colors(mesh, gaussians=None) -> Optional[np.ndarray]:
    """Per-vertex RGB in [0, 1]: the Gaussians' colours when the job decoded them, else the mesh
    decoder's colour channels, else None.

    The Gaussians come first because the reference's ``to_glb`` takes the GLB's colours from them
    (it bakes a texture from Gaussian renders); with the embedded model they are also the more
    faithful source (dominant colour right on 81.7 % of the validation prompts against 76.7 % for
    the mesh decoder's channels, docs/MODEL_CARD.md).
    """
    if gaussians is not None:
        return colors_from_gaussians(_to_numpy(mesh.vertices), gaussians)
    attrs = getattr(mesh, "vertex_attrs", None)
    if attrs is not None:
        return np.clip(_to_numpy(attrs)[:, :3].astype(np.float32), 0.0, 1.0)
    return None


def colors_from_gaussians(vertices: np.ndarray, gaussians, resolution: int = 64) -> np.ndarray:
    """Colour each vertex with the opacity-weighted mean Gaussian colour of its voxel (hole-filled).

    Vertices and Gaussians are in the same (z-up, [-0.5, 0.5]^3) object space.
    """
    import torch

    xyz = gaussians.get_xyz.detach().float().cpu()
    rgb = (0.28209479177387814 * gaussians._features_dc.detach().float().cpu().reshape(xyz.shape[0], -1)[:, :3] + 0.5)
    w = gaussians.get_opacity.detach().float().cpu().reshape(-1, 1)
    r = resolution
    idx = ((xyz + 0.5) * r).long().clamp(0, r - 1)
    flat = (idx[:, 0] * r + idx[:, 1]) * r + idx[:, 2]
    acc = torch.zeros(r ** 3, 4)
    acc.index_add_(0, flat, torch.cat([rgb.clamp(0, 1) * w, w], dim=1))
    grid = acc.view(r, r, r, 4).permute(3, 0, 1, 2)[None]
    for _ in range(4):  # fill empty voxels from their neighbours
        empty = grid[:, 3:4] <= 0
        if not bool(empty.any()):
            break
        blurred = torch.nn.functional.avg_pool3d(grid, 3, stride=1, padding=1)
        grid = torch.where(empty, blurred, grid)
    grid = grid[0].permute(1, 2, 3, 0).reshape(-1, 4)
    v = torch.from_numpy(np.asarray(vertices, dtype=np.float32))
    vi = ((v + 0.5) * r).long().clamp(0, r - 1)
    cell = grid[(vi[:, 0] * r + vi[:, 1]) * r + vi[:, 2]]
    col = torch.where(cell[:, 3:4] > 0, cell[:, :3] / cell[:, 3:4].clamp_min(1e-8), torch.full_like(cell[:, :3], 0.5))
    return col.clamp(0, 1).numpy()


def _glb_chunks(data: bytes) -> Tuple[dict, bytes]:
    magic, version, length = struct.unpack("<4sII", data[:12])
    if magic != b"glTF":
        raise ValueError("not a GLB file")
    jlen, jtype = struct.unpack("<I4s", data[12:20])
    js = json.loads(data[20:20 + jlen].decode("utf-8"))
    rest = data[20 + jlen:]
    return js, rest


def _glb_assemble(js: dict, rest: bytes) -> bytes:
    jbytes = json.dumps(js, separators=(",", ":")).encode("utf-8")
    jbytes += b" " * ((4 - len(jbytes) % 4) % 4)
    body = struct.pack("<I4s", len(jbytes), b"JSON") + jbytes + rest
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The sRGB transfer function inverted (IEC 61966-2-1), for colours in [0, 1]."""
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


LINEAR_COLOR_ATTRIBUTE = "_LINEAR_COLOR"  # trimesh's name for the float attribute that becomes COLOR_0


def promote_linear_color(glb: bytes) -> bytes:
    """Make the float ``_LINEAR_COLOR`` vertex attribute the primitives' ``COLOR_0``.

    trimesh writes COLOR_0 only as normalised bytes; a float accessor under an application
    name, renamed here, keeps full precision in the darks (glTF allows float VEC4 COLOR_0)."""
    js, rest = _glb_chunks(glb)
    for mesh in js.get("meshes", []):
        for prim in mesh.get("primitives", []):
            attrs = prim.get("attributes", {})
            if LINEAR_COLOR_ATTRIBUTE in attrs:
                attrs["COLOR_0"] = attrs.pop(LINEAR_COLOR_ATTRIBUTE)
    return _glb_assemble(js, rest)


def force_pbr_material(glb: bytes, metallic: float = 0.0, roughness: float = 1.0) -> bytes:
    """Ensure every primitive has a material with explicit metallicFactor/roughnessFactor."""
    js, rest = _glb_chunks(glb)
    mats = js.setdefault("materials", [])
    if not mats:
        mats.append({"pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0]}, "name": "trellis"})
    for m in mats:
        pbr = m.setdefault("pbrMetallicRoughness", {})
        pbr["metallicFactor"] = float(metallic)
        pbr["roughnessFactor"] = float(roughness)
        m.setdefault("doubleSided", True)
    for mesh in js.get("meshes", []):
        for prim in mesh.get("primitives", []):
            prim.setdefault("material", 0)
    return _glb_assemble(js, rest)


def _bake_vertex_colors(vertices, faces, colors, texture_size: int):
    """UV atlas (xatlas) + vertex colours rasterised into a texture; None if xatlas is missing."""
    try:
        import xatlas
    except Exception:
        return None
    vmapping, new_faces, uvs = xatlas.parametrize(vertices.astype(np.float32), faces.astype(np.uint32))
    new_vertices = vertices[vmapping]
    new_colors = colors[vmapping]
    tex = _rasterize_uv(uvs, new_faces.astype(np.int64), new_colors, texture_size)
    return new_vertices, new_faces.astype(np.int64), uvs, tex


def _rasterize_uv(uvs: np.ndarray, faces: np.ndarray, colors: np.ndarray, size: int, chunk: int = 4096) -> np.ndarray:
    """Rasterise per-vertex colours into a ``size x size`` texture by barycentric interpolation (numpy).

    Texels that no triangle covers get the colour of the nearest covered texel (dilation), so
    bilinear filtering at chart borders does not bleed black.
    """
    tex = np.zeros((size, size, 3), np.float32)
    hit = np.zeros((size, size), bool)
    p = uvs[faces] * size - 0.5  # texel centres at integer coordinates
    lo = np.floor(p.min(1)).astype(np.int64)
    hi = np.ceil(p.max(1)).astype(np.int64)
    ext = (hi - lo + 1).max(1)
    prev = 0
    for cap in (4, 8, 16, 32, 64, 128, 256, size + 1):
        sel = np.nonzero((ext <= cap) & (ext > prev))[0]
        prev = cap
        for s in range(0, len(sel), max(1, chunk * 16 // (cap * cap))):
            ids = sel[s:s + max(1, chunk * 16 // (cap * cap))]
            oy, ox = np.meshgrid(np.arange(cap), np.arange(cap), indexing="ij")
            px = lo[ids, 0, None, None] + ox[None]
            py = lo[ids, 1, None, None] + oy[None]
            a, b, c = p[ids, 0], p[ids, 1], p[ids, 2]
            den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
            den = np.where(np.abs(den) < 1e-12, 1e-12, den)[:, None, None]
            w0 = ((b[:, 1, None, None] - c[:, 1, None, None]) * (px - c[:, 0, None, None])
                  + (c[:, 0, None, None] - b[:, 0, None, None]) * (py - c[:, 1, None, None])) / den
            w1 = ((c[:, 1, None, None] - a[:, 1, None, None]) * (px - c[:, 0, None, None])
                  + (a[:, 0, None, None] - c[:, 0, None, None]) * (py - c[:, 1, None, None])) / den
            w2 = 1 - w0 - w1
            inside = (w0 >= -1e-4) & (w1 >= -1e-4) & (w2 >= -1e-4) & (px >= 0) & (py >= 0) & (px < size) & (py < size)
            f = faces[ids]
            col = (w0[..., None] * colors[f[:, 0]][:, None, None] + w1[..., None] * colors[f[:, 1]][:, None, None]
                   + w2[..., None] * colors[f[:, 2]][:, None, None])
            tex[py[inside], px[inside]] = col[inside]
            hit[py[inside], px[inside]] = True
        if cap > size:
            break
    # dilate a few texels
    for _ in range(4):
        if hit.all():
            break
        acc = np.zeros_like(tex)
        cnt = np.zeros(hit.shape, np.float32)
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            acc += np.roll(tex * hit[..., None], (dy, dx), axis=(0, 1))
            cnt += np.roll(hit, (dy, dx), axis=(0, 1))
        fill = (~hit) & (cnt > 0)
        tex[fill] = acc[fill] / cnt[fill, None]
        hit = hit | fill
    return (np.clip(tex, 0, 1) * 255 + 0.5).astype(np.uint8)[::-1]  # glTF v=0 is the top row


def write_glb(path: PathLike, mesh, gaussians=None, colors: Optional[np.ndarray] = None,
              texture_size: int = 0) -> Dict[str, int]:
    """Write a mesh (``.vertices [V,3]``, ``.faces [F,3]``, optional ``.vertex_attrs``) as GLB.

    Returns counts ``{"vertices", "faces", "textured"}``.
    """
    import trimesh

    vertices = _to_numpy(mesh.vertices).astype(np.float64)
    faces = _to_numpy(mesh.faces).astype(np.int64)
    if colors is None:
        colors = mesh_vertex_colors(mesh, gaussians)
    if colors is None:
        colors = np.full((len(vertices), 3), 0.8, np.float32)
    if len(vertices) == 0 or len(faces) == 0:
        from ..errors import TrellisError

        raise TrellisError("the generated mesh is empty (no faces)", hint="Try another seed or more sampling steps.")
    vertices, faces, colors = clean_mesh(vertices, faces, colors)
    vertices = vertices @ Z_UP_TO_Y_UP
    material = trimesh.visual.material.PBRMaterial(name="trellis", baseColorFactor=[255, 255, 255, 255],
                                                   metallicFactor=0.0, roughnessFactor=1.0, doubleSided=True)
    textured = False
    baked = _bake_vertex_colors(vertices, faces, colors, texture_size) if texture_size > 0 else None
    if baked is not None:
        from PIL import Image

        v2, f2, uvs, tex = baked
        material.baseColorTexture = Image.fromarray(tex)
        tm = trimesh.Trimesh(v2, f2, process=False,
                             visual=trimesh.visual.TextureVisuals(uv=uvs, material=material))
        textured = True
    else:
        linear = np.concatenate([srgb_to_linear(colors), np.ones((len(colors), 1))], axis=1).astype(np.float32)
        tm = trimesh.Trimesh(vertices, faces, process=False, vertex_attributes={LINEAR_COLOR_ATTRIBUTE: linear})
        tm.visual = trimesh.visual.ColorVisuals(tm)
        tm.visual.material = material
    data = promote_linear_color(force_pbr_material(tm.export(file_type="glb")))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return {"vertices": int(len(tm.vertices)), "faces": int(len(tm.faces)), "textured": textured}


# ------------------------------------------------------------------------------ PLY
def write_ply(path: PathLike, gaussians) -> Dict[str, int]:
    """INRIA 3DGS PLY via the representation's own ``save_ply`` (y-up transform inside)."""
    with atomic_path(path) as tmp:
        gaussians.save_ply(str(tmp))
    return {"gaussians": int(gaussians.get_xyz.shape[0])}


# -------------------------------------------------------------------------- sidecar
SIDECAR_FORMAT = "trellis-slat-sidecar/1"


def write_sidecar(path: PathLike, coords, feats, settings: dict) -> Dict[str, int]:
    """SLAT sidecar ``.npz``: coords int32 [N, 3] (x, y, z), feats float32 [N, C], settings JSON."""
    c = _to_numpy(coords).astype(np.int32)
    if c.ndim == 2 and c.shape[1] == 4:
        if np.any(c[:, 0] != c[0, 0]):
            raise ValueError("write_sidecar takes one asset (a single batch index)")
        c = c[:, 1:]
    f = _to_numpy(feats).astype(np.float32)
    if c.shape[0] != f.shape[0]:
        raise ValueError(f"coords ({c.shape[0]}) and feats ({f.shape[0]}) disagree")
    settings = {"format": SIDECAR_FORMAT, **settings}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, coords=np.ascontiguousarray(c), feats=np.ascontiguousarray(f),
                     settings=np.array(json.dumps(settings, default=str)))
    return {"voxels": int(c.shape[0]), "channels": int(f.shape[1]) if f.ndim == 2 else 0}


def read_sidecar(path: PathLike) -> Tuple[np.ndarray, np.ndarray, dict]:
    """(coords int32 [N, 3], feats float32 [N, C], settings dict) of a sidecar."""
    from ..errors import BadInputError, MissingFileError

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"SLAT sidecar not found: {path}", hint="Generate the asset again to get its sidecar.")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "feats" not in z.files and "shape_feats" in z.files:
                raise BadInputError(f"{path} is a TRELLIS.2 latent sidecar, not a TRELLIS SLAT sidecar",
                                    hint="Read it with trellis_backend.pipeline.trellis2_latents.read_latents "
                                         "(or Trellis2Pipeline.load_latents).")
            coords, feats, settings = z["coords"], z["feats"], json.loads(str(z["settings"]))
    except BadInputError:
        raise
    except Exception as e:
        raise BadInputError(f"cannot read SLAT sidecar {path}: {e}", hint="The sidecar is corrupt; generate again.") from e
    return coords.astype(np.int32), feats.astype(np.float32), settings
