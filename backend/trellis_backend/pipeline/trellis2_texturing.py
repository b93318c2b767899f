"""TRELLIS.2 texturing of an existing mesh (the reference's ``Trellis2TexturingPipeline.run``), as methods of
`Trellis2Pipeline` on the one generation sequence (`sequence.GenerationRun`):

1. condition: DINOv3 tokens of the image at 512 (resolution 512) or 1024;
2. ``shape_slat``: the mesh placed in the unit grid box (``preprocess_mesh``: centred, longest side 0.99999,
   y-up turned z-up) -> flexible dual grid at `resolution` -> shape latent with ``shape_slat_encoder``;
3. ``tex_slat``: texture flow (512 or 1024) with the normalised shape latent as ``concat_cond``, sampler and
   parameters of pipeline.json's ``tex_slat_sampler``; de-normalised;
4. decode: the texture decoder on that latent; the latent shares the encoder's spatial cache, so the decoder
   rebuilds exactly the encoder's voxels (no guide needed, as in the reference) -> PBR voxels;
5. export: the voxels baked onto the INPUT mesh's own UVs (xatlas only for a mesh without UVs), its vertex
   array and faces as given -> GLB, and the latents as a ``.trellis2.npz`` sidecar.

The shape encoder is looked up as ``shape_slat_encoder`` in pipeline.json, then in the release's
``texturing_pipeline.json``, then as the released checkpoint ``ckpts/shape_enc_next_dc_f16c32_fp16``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import BadInputError, MissingFileError
from .sequence import GenerationRun, ProgressFn, check_cancel

SHAPE_ENCODER = "shape_slat_encoder"
RELEASED_SHAPE_ENCODER = "ckpts/shape_enc_next_dc_f16c32_fp16"
TEXTURING_CONFIG = "texturing_pipeline.json"
DEFAULT_TEXTURING_RESOLUTION = 1024
GRID_MULTIPLE = 16  # the SC-VAE's four halvings: the grid must divide into latent voxels


class TexturingMode(NamedTuple):
    """What a texturing run at one grid resolution uses (`sample_texture_latent` reads ``texture_flow``)."""

    texture_flow: str
    resolution: int
    condition_sizes: Tuple[int, ...]


class TexturedMesh:
    """What `decode_texture` hands to `export_texture`: the input mesh, its grid transform and the PBR voxels."""

    def __init__(self, mesh, to_grid: np.ndarray, voxels):
        self.mesh, self.to_grid, self.voxels = mesh, to_grid, voxels


def texturing_mode(resolution: int) -> TexturingMode:
    """The texture flow and condition size at grid `resolution`: the 512 flow and 512 tokens at 512 and below,
    the 1024 ones above (as the reference picks them)."""
    try:
        res = int(resolution)
    except (TypeError, ValueError):
        raise BadInputError(f"texturing resolution must be a whole number, got {resolution!r}") from None
    if res < 2 * GRID_MULTIPLE or res % GRID_MULTIPLE:
        raise BadInputError(f"texturing resolution must be a multiple of {GRID_MULTIPLE} of at least "
                            f"{2 * GRID_MULTIPLE}, got {res}", hint="The released models use 512 or 1024.")
    size = 512 if res <= 512 else 1024
    return TexturingMode(f"tex_slat_flow_model_{size}", res, (size,))


class Trellis2Texturing:
    """Mixed into `Trellis2Pipeline`: texturing an artist's mesh."""

    # ------------------------------------------------------------------ models
    def shape_encoder(self):
        """The shape SC-VAE encoder (loaded on first use), wherever the folder keeps it."""
        refs = self.config["args"]["models"]
        if SHAPE_ENCODER not in refs:
            ref = None
            extra = self.folder / TEXTURING_CONFIG
            if extra.is_file():
                try:
                    ref = json.loads(extra.read_text())["args"]["models"].get(SHAPE_ENCODER)
                except (ValueError, KeyError, TypeError) as e:
                    raise BadInputError(f"cannot read {extra}: {e}", hint="Re-download the TRELLIS.2 folder.") from e
            if ref is None and (self.folder / f"{RELEASED_SHAPE_ENCODER}.json").is_file():
                ref = RELEASED_SHAPE_ENCODER
            if ref is None:
                raise MissingFileError(
                    f"texturing needs the shape encoder, which {self.folder} does not have (no '{SHAPE_ENCODER}' in "
                    f"pipeline.json or {TEXTURING_CONFIG}, no {RELEASED_SHAPE_ENCODER}.json)",
                    hint="Download ckpts/shape_enc_next_dc_f16c32_fp16.json and .safetensors of TRELLIS.2-4B "
                         "into the folder.")
            refs[SHAPE_ENCODER] = ref
        return self.get_model(SHAPE_ENCODER)

    # ------------------------------------------------------------------ stages
    @torch.no_grad()
    def encode_shape_latent(self, grid_vertices: np.ndarray, faces: np.ndarray, resolution: int,
                            progress: Optional[ProgressFn] = None, cancel=None):
        """The shape latent (``SparseTensor``) of a mesh already in the unit grid box (z up): its flexible dual
        grid at `resolution` (the texturing pipeline's QEF weights) through the shape encoder (posterior mean)."""
        from ..representations.ovoxel import dual_vertices_to_offsets, mesh_to_flexible_dual_grid
        from ..sparse import SparseTensor

        report = progress or (lambda *a: None)
        report("shape_slat", 0, 2, f"voxelising the mesh at {resolution}^3")
        coords, dual, intersected = mesh_to_flexible_dual_grid(grid_vertices, faces, int(resolution),
                                                               face_weight=1.0, boundary_weight=0.2,
                                                               regularization_weight=1e-2)
        if coords.shape[0] == 0:
            raise BadInputError("the mesh gave no voxels (it is degenerate: no face has an area)",
                                hint="Give a mesh with a surface.")
        check_cancel(cancel, "after voxelising the mesh")
        report("shape_slat", 1, 2, f"encoding {coords.shape[0]} voxels")
        full = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords.int()], dim=1).to(self.device)
        vertices = SparseTensor(dual_vertices_to_offsets(coords, dual, int(resolution)).float().to(self.device), full,
                                shape=(1, 3))
        encoder = self.shape_encoder()
        with self.precision():
            slat = encoder(vertices, vertices.replace(intersected.to(self.device)))
        report("shape_slat", 2, 2, "shape encoded")
        return slat.replace(slat.feats.float())

    @torch.no_grad()
    def decode_texture(self, latents, mesh, to_grid: np.ndarray, progress: Optional[ProgressFn] = None
                       ) -> TexturedMesh:
        """PBR voxels of a texture latent that shares the shape encoder's spatial cache, with the input `mesh`
        and `to_grid`, the transform that placed it in the grid box."""
        from ..representations.ovoxel import PbrVoxels

        report = progress or (lambda *a: None)
        report("decode", 0, 1, "decoding the texture")
        with self.precision():
            voxels = self.get_model("tex_slat_decoder")(latents.tex_slat)
        attrs = voxels.feats.float() * 0.5 + 0.5
        report("decode", 1, 1, "decoded")
        return TexturedMesh(mesh, to_grid,
                            PbrVoxels(voxels.coords[:, 1:].cpu().numpy(), attrs.cpu().numpy(),
                                      grid_size=int(latents.resolution)))

    def export_texture(self, latents, decoded: TexturedMesh, fmts: Sequence[str], files, settings: dict,
                       progress: Optional[ProgressFn] = None, cancel=None, texture_size: int = 0) -> dict:
        """Bake onto the input mesh's UVs; with `files` (the job's `OutputSet`), write its temporaries: the
        textured GLB (``glb``) and the latent sidecar (``slat``, ``<name>.trellis2.npz``)."""
        from .export_pbr import bake_pbr_textures, write_textured_glb
        from .trellis2_latents import write_latents

        report = progress or (lambda *a: None)
        report("export", 0, 3, "baking the textures onto the mesh's UVs")
        baked = bake_pbr_textures(decoded.mesh, decoded.voxels, texture_size=settings["texture_size"],
                                  to_grid=decoded.to_grid)
        check_cancel(cancel, "after baking the textures; nothing was written")
        meta = {k: v for k, v in settings.items() if k not in ("tex_slat_sampler", "shape_slat_normalization",
                                                               "tex_slat_normalization")}
        meta.update(voxels=int(latents.coords.shape[0]), pbr_voxels=int(len(decoded.voxels.coords)),
                    vertices=int(len(baked.vertices)), faces=int(len(baked.faces)),
                    alpha_blend=baked.visual.material.alphaMode == "BLEND", timings={})
        if files is not None:
            report("export", 1, 3, "writing glb")
            write_textured_glb(files.temp("glb"), baked)
            check_cancel(cancel, "before writing the latent sidecar; nothing was written")
            report("export", 2, 3, "writing slat")
            write_latents(files.temp("slat"), latents, settings)
        report("export", 3, 3, "files written" if files is not None else "baked")
        return {"files": {}, "meta": meta, "outputs": {"latents": latents, "mesh": baked, "voxels": decoded.voxels}}

    # --------------------------------------------------------------------- run
    def texture(self, mesh, image, seed: int = 0, resolution: int = DEFAULT_TEXTURING_RESOLUTION,
                texture_size: int = 0, tex_steps: Optional[int] = None, output_dir=None, name: Optional[str] = None,
                progress: Optional[ProgressFn] = None, cancel=None, *, up_axis: str = "y",
                background_threshold: Optional[float] = None) -> dict:
        """PBR textures for an existing mesh from an image; the mesh's vertices, faces and UVs stay as given.

        Args:
            mesh: a path (GLB, glTF, OBJ, PLY) or a trimesh.Trimesh / Scene.
            image: the condition image (path or PIL image; RGBA with a transparent background, or see
                `background_threshold`).
            resolution: the O-Voxel grid the mesh is encoded at (reference: 1024; a multiple of 16; the 512
                texture flow is used at 512 and below).
            texture_size: texels per side (0: the reference's 2048).
            up_axis: the mesh's up axis, 'y' (glTF, and the reference's assumption for every file) or 'z'
                (Blender object space); it only orients the mesh for the model, the output keeps the input's axes.
            output_dir / name: where to write ``<name>.glb`` + ``<name>.trellis2.npz``; the stem defaults to
                ``<mesh stem>_textured_seed<seed>`` and becomes ``..._2``, ``..._3`` rather than overwrite a file.
        Returns ``{"files": {"glb", "slat"}, "meta", "outputs": {"latents", "mesh" (the textured trimesh),
        "voxels"}}``.
        """
        from .export_pbr import DEFAULT_TEXTURE_SIZE
        from .options import check_name
        from .texture_mesh_input import check_up_axis, mesh_uvs, read_input_mesh
        from .pipeline import PIPELINE_VERSION
        from .trellis2_latents import Trellis2Latents
        from ..representations.ovoxel import mesh_to_grid_transform

        mode = texturing_mode(resolution)
        axis = check_up_axis(up_axis)
        if texture_size < 0 or (0 < texture_size < 8):
            raise BadInputError(f"texture size must be 0 (default) or at least 8 texels, got {texture_size}")
        if image is None:
            raise BadInputError("no image given", hint="Give the reference image (RGBA PNG with a transparent "
                                                       "background) that shows how the mesh should look.")
        source, label = read_input_mesh(mesh)
        if output_dir is not None:
            stem = name or ("".join(c if (c.isalnum() or c in "-_") else "_" for c in
                                    (Path(label).stem if label != "<mesh>" else "mesh")) + f"_textured_seed{int(seed)}")
            check_name(stem)
            name = stem  # the job's OutputSet commits under it, or the first free `<stem>_2`, ...
        params = self.sampler_params("tex_slat_sampler", tex_steps)
        to_grid = mesh_to_grid_transform(source.vertices, y_up=axis == "y")
        grid_vertices = np.asarray(source.vertices, np.float64) @ to_grid[:3, :3].T + to_grid[:3, 3]
        self.get_model(mode.texture_flow)  # load before the clock of the first stage starts
        self.shape_encoder()
        self.get_model("tex_slat_decoder")
        with GenerationRun(self, seed, progress, cancel) as run:
            cond, info = run.condition(None, image, background_threshold, sizes=mode.condition_sizes)
            shape_slat = run.stage("shape_slat", self.encode_shape_latent, grid_vertices.astype(np.float32),
                                   np.asarray(source.faces, np.int64), mode.resolution, progress, cancel)
            tex_slat = run.stage("tex_slat", self.sample_texture_latent, cond[mode.condition_sizes[0]], shape_slat,
                                 mode, run.generator, params, progress, cancel)
            latents = Trellis2Latents(shape_slat, tex_slat, mode.resolution)
            settings = {
                "pipeline_version": PIPELINE_VERSION, "family": self.family, "task": "texture",
                "model_folder": str(self.folder), "pipeline_name": self.name, "condition": "image",
                "image": info.get("image"), "mesh": label, "up_axis": axis, "had_uvs": mesh_uvs(source) is not None,
                "seed": int(run.seed), "resolution": int(mode.resolution), "texture_flow": mode.texture_flow,
                "tex_slat_sampler": {**self.config["args"]["tex_slat_sampler"], "params": params},
                "shape_slat_normalization": self.shape_slat_normalization,
                "tex_slat_normalization": self.tex_slat_normalization,
                "texture_size": int(texture_size or DEFAULT_TEXTURE_SIZE), "formats": ["mesh"],
                "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
            }
            result = run.finish(latents, ("mesh",), output_dir, name, settings, texture_size,
                                decode=lambda lat, fmts, prog: self.decode_texture(lat, source, to_grid, prog),
                                export=self.export_texture)
        result["outputs"]["condition_image"] = info["preprocessed"]
        return result
