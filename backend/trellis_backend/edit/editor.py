"""Regenerate only the voxels inside a region of a generated asset (RePaint-style, both stages).

Stage 1 (optional, `keep_structure=False`): the current occupancy is encoded to
the sparse-structure latent; at every Euler step the latent cells outside the
region are replaced by that known latent noised to the step's time, so the
flow fills the region in harmony with its surroundings. Occupancy outside the
region is then kept exactly; inside it comes from the decoded sample.

Stage 2: SLAT features are sampled on the new voxel set while every voxel
outside the region is held at its known latent noised to t (blended over a
margin of N voxels inside the region boundary); at the end the outside
features are restored bit for bit. The result is a new sidecar and new
decoded files next to the old ones, which are never overwritten.

Both stages run inside the pipeline's one generation sequence (`pipeline.sequence.GenerationRun`), so
an edit reports progress, honours cancel, times its stages and writes its files as a generation does;
only public pipeline API is used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..errors import BadInputError, MissingFileError
from ..pipeline.export import read_sidecar
from ..pipeline.options import check_name, normalize_formats
from ..pipeline.pipeline import model_input_dtype
from ..pipeline.sequence import GenerationRun
from ..pipeline.limits import check_voxel_count
from ..sparse import SparseTensor
from .region import blend_weights, latent_mask, lookup, region_mask_grid

GRID = 64


def noised(x0: torch.Tensor, t: float, sigma_min: float, generator: torch.Generator) -> torch.Tensor:
    """The flow's forward process: x_t = (1 - t)·x0 + (σ_min + (1 - σ_min)·t)·ε."""
    eps = torch.randn(x0.shape, generator=generator).to(device=x0.device, dtype=x0.dtype)
    return (1 - t) * x0 + (sigma_min + (1 - sigma_min) * t) * eps


def unique_name(output_dir: Path, base: str) -> str:
    """`base`, or `base_2`, `base_3`, ... so that no existing output is overwritten."""
    taken = lambda n: any((output_dir / f"{n}{ext}").exists() for ext in (".glb", ".ply", ".slat.npz"))  # noqa: E731
    name, k = base, 1
    while taken(name):
        k += 1
        name = f"{base}_{k}"
    return name


def _structure_encoder(pipe):
    try:
        return pipe.get_model("sparse_structure_encoder")
    except MissingFileError as e:
        raise MissingFileError(
            f"regenerating the structure needs the sparse-structure encoder, which {pipe.folder} does not list",
            hint="Use 'keep structure' (features only), or add \"sparse_structure_encoder\": "
                 "\"ckpts/ss_enc_conv3d_16l8_fp16\" to pipeline.json if the folder has that checkpoint.") from e


def edit_structure(pipe, coords: torch.Tensor, grid: torch.Tensor, cond: dict, params: dict,
                   generator: torch.Generator, progress=None, cancel=None, resample: int = 0) -> torch.Tensor:
    """New occupied voxels `[M, 3]`: the old ones outside the region, freshly sampled ones inside."""
    device = pipe.device
    occupancy = torch.zeros(1, 1, GRID, GRID, GRID)
    c = coords.long()
    occupancy[0, 0, c[:, 0], c[:, 1], c[:, 2]] = 1.0
    encoder = _structure_encoder(pipe)
    flow = pipe.get_model("sparse_structure_flow_model")
    decoder = pipe.get_model("sparse_structure_decoder")
    sampler = pipe.sparse_structure_sampler
    with pipe.precision():
        known = encoder(occupancy.to(device, model_input_dtype(encoder)), sample_posterior=False).float()
    editable = latent_mask(grid, flow.resolution).to(device)[None, None]

    def hold_outside(step, t_prev, x):
        return torch.where(editable, x, noised(known, t_prev, sampler.sigma_min, generator).to(x.dtype))

    reso = flow.resolution
    noise = torch.randn(1, flow.in_channels, reso, reso, reso, generator=generator).to(device)
    noise = hold_outside(-1, 1.0, noise)
    with pipe.precision():
        z = sampler.sample(flow, noise, cond["cond"].to(device), cond["neg_cond"].to(device), **params,
                           progress=progress, cancel=cancel, stage="sparse_structure", step_hook=hold_outside,
                           resample=resample, generator=generator).samples
        logits = decoder(z.to(model_input_dtype(decoder)))[0, 0].float().cpu()
    new_inside = (logits > 0) & grid
    outside_old = occupancy[0, 0].bool() & ~grid
    return torch.argwhere(outside_old | new_inside).int()


def edit_features(pipe, old_coords: torch.Tensor, old_feats: torch.Tensor, new_coords: torch.Tensor,
                  grid: torch.Tensor, margin: int, cond: dict, params: dict, generator: torch.Generator,
                  progress=None, cancel=None, resample: int = 0) -> SparseTensor:
    """SLAT on `new_coords` (outside first, in the old order) with the outside held at its old features."""
    device = pipe.device
    old_inside = lookup(grid, old_coords)
    outside_coords, outside_feats = old_coords[~old_inside], old_feats[~old_inside]
    inside_coords = new_coords[lookup(grid, new_coords)]
    coords = torch.cat([outside_coords, inside_coords])

    # known features: every old voxel that is still occupied (exact match of its coordinates)
    key = lambda c: (c[:, 0].long() * GRID + c[:, 1].long()) * GRID + c[:, 2].long()  # noqa: E731
    old_keys, order = torch.sort(key(old_coords))
    k = key(coords)
    pos = torch.searchsorted(old_keys, k).clamp(max=len(old_keys) - 1)
    has_known = old_keys[pos] == k
    known = torch.zeros(len(coords), old_feats.shape[1])
    known[has_known] = old_feats[order[pos[has_known]]]

    weight = blend_weights(grid, coords, margin)
    weight = torch.where(has_known, weight, torch.ones_like(weight))  # voxels new to the structure are free

    norm = pipe.slat_normalization
    mean = torch.tensor(norm["mean"], dtype=torch.float32)[None]
    std = torch.tensor(norm["std"], dtype=torch.float32)[None]
    known_n = ((known - mean) / std).to(device)
    w = weight[:, None].to(device)
    sampler = pipe.slat_sampler
    flow = pipe.get_model("slat_flow_model")

    def hold_known(step, t_prev, x):
        held = noised(known_n, t_prev, sampler.sigma_min, generator).to(x.feats.dtype)
        return x.replace(w.to(x.feats.dtype) * x.feats + (1 - w.to(x.feats.dtype)) * held)

    b = torch.zeros(len(coords), 1, dtype=torch.int32)
    sparse_coords = torch.cat([b, coords.int()], dim=1).to(device)
    noise = SparseTensor(torch.randn(len(coords), flow.in_channels, generator=generator).to(device), sparse_coords,
                         shape=(1, flow.in_channels))
    noise = hold_known(-1, 1.0, noise)
    with pipe.precision():
        sample = sampler.sample(flow, noise, cond["cond"].to(device), cond["neg_cond"].to(device), **params,
                                progress=progress, cancel=cancel, stage="slat", step_hook=hold_known,
                                resample=resample, generator=generator).samples
    feats = sample.feats.float().cpu() * std + mean
    feats = weight[:, None] * feats + (1 - weight[:, None]) * known
    feats[: len(outside_coords)] = outside_feats  # bit-identical outside the region
    return SparseTensor(feats.to(device), sparse_coords, shape=(1, feats.shape[1]))


def edit_region(pipe, sidecar_path, region: dict, prompt: Optional[str] = None, image=None, seed: int = 0,
                keep_structure: bool = False, margin: int = 0, resample: int = 0, ss_steps: Optional[int] = None,
                slat_steps: Optional[int] = None, ss_cfg: Optional[float] = None, slat_cfg: Optional[float] = None,
                formats=("mesh", "gaussians"), output_dir=None, name: Optional[str] = None, progress=None,
                cancel=None, background_threshold: Optional[float] = None, texture_size: int = 0) -> dict:
    """Regenerate the voxels of `region` in the asset of `sidecar_path`; returns the pipeline's result dict.

    Without a new prompt/image the asset's own condition is reused (a new seed then gives a new variant
    of the region). Files go to `output_dir` (default: the sidecar's folder) under a new name.
    """
    if getattr(pipe, "family", "trellis") != "trellis":
        raise BadInputError("region editing works on TRELLIS assets; this is a TRELLIS.2 model",
                            hint="Load the TRELLIS model folder the asset was made with.")
    sidecar_path = Path(sidecar_path).expanduser()
    old_coords_np, old_feats_np, old_settings = read_sidecar(sidecar_path)
    old_coords = torch.as_tensor(old_coords_np[:, -3:]).int()
    old_feats = torch.as_tensor(old_feats_np).float()
    if margin < 0:
        raise BadInputError("the blend margin must be 0 or more voxels")
    grid = region_mask_grid(region)
    fmts = normalize_formats(formats)
    if prompt is None and image is None:
        prompt = old_settings.get("prompt") if pipe.kind == "text" else None
        image = old_settings.get("image") if pipe.kind == "image" else None
    out_dir = Path(output_dir).expanduser() if output_dir is not None else sidecar_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    base = name or sidecar_path.name.replace(".slat.npz", "") + "_edit"
    check_name(base)
    name = unique_name(out_dir, base)

    ss_params = pipe.sampler_params("sparse_structure", ss_steps, ss_cfg)
    slat_params = pipe.sampler_params("slat", slat_steps, slat_cfg)
    with GenerationRun(pipe, seed, progress, cancel) as run:
        cond, info = run.condition(prompt, image, background_threshold)
        if keep_structure:
            new_coords = old_coords
        else:
            new_coords = run.stage("sparse_structure", edit_structure, pipe, old_coords, grid, cond, ss_params,
                                   run.generator, progress, cancel, resample)
            if len(new_coords) == 0:
                raise BadInputError("the edit left no voxel at all", hint="Try another seed or prompt.")
            check_voxel_count(len(new_coords), pipe.device.type, progress)
        slat = run.stage("slat", edit_features, pipe, old_coords, old_feats, new_coords, grid, margin, cond,
                         slat_params, run.generator, progress, cancel, resample)
        settings = pipe.run_settings(run.seed, info, ss_params, slat_params, fmts, None)
        settings["edit"] = {"of": str(sidecar_path.resolve()), "region": region, "keep_structure": keep_structure,
                            "margin": margin, "resample": resample}
        result = run.finish(slat, fmts, out_dir, name, settings, texture_size)
    result["meta"]["edited_voxels"] = int(lookup(grid, slat.coords[:, 1:].cpu()).sum())
    result["outputs"]["region_grid"] = grid
    return result
