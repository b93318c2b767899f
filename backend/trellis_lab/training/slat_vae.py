"""Stage `slat_vae`: SLat encoder (native per-voxel features -> 8-d latent) and the three
decoders, trained jointly with 3D supervision from the procedural shapes.

Targets (all derived from the analytic SDF of the object; see `data.make_object`):

* mesh decoder (`decode_features`, 101 channels per 256³ cube): corner SDF = the shape's
  SDF at the cube corners in fine-voxel units (world × 256, clipped to ±4; FlexiCubes only
  uses sign and ratios along edges, and the extractor's ``sdf_bias`` −1/256 is then a
  negligible shift), folded below 0.75 fine voxels depth (`fold_sdf`), deformation 0, FlexiCubes weights 0, corner colour = colour of the
  nearest part, corner normal = the voxel's normal (both after the extractor's sigmoid, the
  normal as (n + 1) / 2);
* Gaussian decoder: every Gaussian's centre = its default position (voxel centre +
  tanh(perturbation)·0.75 voxel) projected onto the voxel's tangent plane (from the
  voxel's SDF and normal), colour = the voxel colour, opacity 0.95, scale 0.35 voxel,
  rotation identity;
* radiance-field decoder: constant trivec factors, summed density 5, colour = the voxel
  colour for every rank;
* KL of the posterior (mean over latent elements) × ``kl_weight``.

At export, the latent statistics (per-channel mean/std of the posterior means over the
training objects) are written to ``latent_stats.json`` for pipeline.json's
``slat_normalization``.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trellis_backend.models.slat_vae_base import SparseTransformerBase
from trellis_backend.representations.mesh.tables import device_tables
from trellis_backend.sparse import SparseTensor
from .checkpoints import export_model
from .data import LATTICE_SUB, ObjectStore, batch_coords
from .loop import Trainer
GS_TARGET_OPACITY = 0.95
GS_TARGET_SCALE_VOXELS = 0.35
RF_TARGET_DENSITY = 5.0
SH_C0 = 0.28209479177387814


def raw_output(decoder, z: SparseTensor) -> torch.Tensor:
    """The Gaussian / radiance-field decoder's raw per-voxel output (before `to_representation`)."""
    h = SparseTransformerBase.forward(decoder, z).type(z.dtype)
    return decoder.out_layer(h.replace(F.layer_norm(h.feats, h.feats.shape[-1:]))).feats.float()


def sparse_input(objs, device) -> SparseTensor:
    coords = batch_coords(objs, device)
    feats = torch.cat([torch.from_numpy(o["feats"]) for o in objs]).to(device, non_blocking=True).float()
    return SparseTensor(feats, coords)


INNER_WALL_DEPTH = 1.5  # fine voxels


def fold_sdf(s: torch.Tensor, depth: float = INNER_WALL_DEPTH) -> torch.Tensor:
    """|s + d/2| - d/2: the true SDF outside and down to d/2 inside, positive again below depth d.

    The structure is a one-voxel shell and FlexiCubes treats every cube outside it as
    empty (sdf +1), so a second, inner surface is unavoidable. Folding the target puts that
    wall `depth` fine voxels under the true surface, between predicted corners, where it
    gets the surface colour, instead of at the shell's inner boundary, where half its
    corners would carry the extractor's default colour (black)."""
    return (s + depth / 2).abs() - depth / 2


def _lattice_index(local: torch.Tensor) -> torch.Tensor:
    n = LATTICE_SUB + 1
    return (local[..., 0] * n + local[..., 1]) * n + local[..., 2]


def mesh_targets(objs, fine_coords: torch.Tensor, feats: torch.Tensor, device):
    """(sdf [M, 8], rgb [M, 8, 3], normal [M, 3]) for the decoder's fine cubes (rows 64·i..64·i+63
    are the children of voxel i, which `SparseSubdivide` guarantees)."""
    lat = torch.cat([torch.from_numpy(o["lattice"]) for o in objs]).to(device).float()  # [N, 125]
    part = torch.cat([torch.from_numpy(o["lattice_part"].astype(np.int64)) for o in objs]).to(device)
    # part colour table: offset every object's part ids into one table
    offsets, tables = [], []
    base = 0
    for o in objs:
        offsets.append(torch.full((len(o["coords"]),), base, dtype=torch.long))
        tables.append(torch.from_numpy(o["part_rgb"].astype(np.float32)))
        base += len(o["part_rgb"])
    offsets = torch.cat(offsets).to(device)
    table = torch.cat(tables).to(device)
    n = lat.shape[0]
    parent = torch.arange(fine_coords.shape[0], device=device) // 64
    corners = device_tables(device)["corners"]  # [8, 3]
    parent_coords = fine_coords[::64, 1:].long() // 4  # every child group's parent
    local = fine_coords[:, 1:].long() - 4 * parent_coords.repeat_interleave(64, 0)
    idx = _lattice_index(local[:, None, :] + corners[None])  # [M, 8]
    sdf = fold_sdf(torch.gather(lat[parent], 1, idx))
    pid = torch.gather(part[parent], 1, idx)
    voxel_rgb = feats[:, 0:3]
    rgb = torch.where((pid >= 0)[..., None], table[(pid + offsets[parent][:, None]).clamp_min(0)],
                      voxel_rgb[parent][:, None, :])
    return sdf, rgb, feats[parent, 3:6], n


class SLatVAETrainer(Trainer):
    def __init__(self, encoder, dec_gs, dec_mesh, dec_rf, store: ObjectStore, configs: dict, batch_size: int = 8,
                 mesh_batch: int = 4, kl_weight: float = 1e-4, freeze_encoder_after: float | None = None,
                 parts=("encoder", "gs", "rf", "mesh"), mesh_crop: int | None = None, **kw):
        named = {"encoder": encoder, "gs": dec_gs, "mesh": dec_mesh, "rf": dec_rf}
        keys = {"encoder": "encoder", "gs": "decoder_gs", "mesh": "decoder_mesh", "rf": "decoder_rf"}
        self.parts = tuple(parts)
        super().__init__({keys[p]: named[p] for p in self.parts},
                         frozen={keys[p]: m for p, m in named.items() if p not in self.parts}, **kw)
        self.mesh_crop = mesh_crop
        self.latent_stats_file = None
        self.store, self.configs = store, configs
        self.batch_size, self.mesh_batch, self.kl_weight = batch_size, mesh_batch, kl_weight
        self.freeze_encoder_after = freeze_encoder_after
        self.encoder_frozen = False

    def freeze_encoder(self) -> None:
        """Export the encoder and latent statistics now (``encoder_ready`` marks them) and keep
        training only the decoders, so a flow can train on final latents meanwhile."""
        ckpt, cls, args = self.configs["slat_encoder"]
        export_model(self.out / "ckpts", ckpt, cls, args, self.m("encoder"))
        (self.out / "latent_stats.json").write_text(json.dumps(self.latent_stats(), indent=2))
        self.m("encoder").requires_grad_(False)
        self.encoder_frozen = True
        (self.out / "encoder_ready").write_text(str(self.step))
        self.log(f"[slat_vae] encoder frozen and exported at step {self.step}")

    def m(self, key):
        return self.models.get(key) or self.frozen[key]

    def _sample(self):
        if self.step % 20 == 0:
            self.store.refresh()
        return random.sample(self.store.objects, min(self.batch_size, len(self.store.objects)))

    # ------------------------------------------------------------------ decoders' losses
    def gaussian_losses(self, z: SparseTensor, feats: torch.Tensor) -> dict:
        dec = self.m("decoder_gs")
        out = raw_output(dec, z)
        cfg = dec.rep_config
        g = cfg["num_gaussians"]
        lay = dec.layout

        def field(name):
            a, b = lay[name]["range"]
            return out[:, a:b].reshape(-1, *lay[name]["shape"]) * cfg["lr"][name]

        half = 0.5 * cfg["voxel_size"]  # offsets in voxel units
        pert = dec.offset_perturbation.float()  # [g, 3]
        off = torch.tanh(field("_xyz") + pert) * half  # [N, g, 3]
        default = torch.tanh(pert) * half
        n = F.normalize(feats[:, 3:6], dim=-1)
        sdf_c = feats[:, 6:7]
        dist = (default[None] * n[:, None]).sum(-1, keepdim=True) + sdf_c[:, None]
        target = (default[None] - dist * n[:, None]).clamp(-half * 0.98, half * 0.98)
        l_xyz = (off - target).abs().mean()
        rgb = SH_C0 * field("_features_dc").reshape(-1, g, 3) + 0.5
        l_rgb = (rgb - feats[:, None, 0:3]).abs().mean()
        opacity = torch.sigmoid(field("_opacity") + math.log(cfg["opacity_bias"] / (1 - cfg["opacity_bias"])))
        l_op = (opacity - GS_TARGET_OPACITY).abs().mean()
        sb = cfg["scaling_bias"]
        scale = torch.sqrt(F.softplus(field("_scaling") + math.log(math.expm1(sb))) ** 2 + cfg["3d_filter_kernel_size"] ** 2)
        l_scale = (torch.log(scale) - math.log(GS_TARGET_SCALE_VOXELS / dec.resolution)).abs().mean()
        l_rot = field("_rotation").pow(2).mean()
        return {"gs_xyz": l_xyz, "gs_rgb": l_rgb, "gs_opacity": l_op, "gs_scale": l_scale, "gs_rot": l_rot}

    def rf_losses(self, z: SparseTensor, feats: torch.Tensor) -> dict:
        dec = self.m("decoder_rf")
        out = raw_output(dec, z)
        lay = dec.layout

        def field(name):
            a, b = lay[name]["range"]
            return out[:, a:b].reshape(-1, *lay[name]["shape"])

        trivec = field("trivec").pow(2).mean()
        density = (field("density").sum(-1) - RF_TARGET_DENSITY).abs().mean()
        rgb = SH_C0 * field("features_dc").reshape(out.shape[0], -1, 3) + 0.5
        return {"rf_trivec": trivec, "rf_density": density, "rf_rgb": (rgb - feats[:, None, 0:3]).abs().mean()}

    def mesh_losses(self, objs, z: SparseTensor, feats: torch.Tensor) -> dict:
        dec = self.m("decoder_mesh")
        out = dec.decode_features(z)
        pred = out.feats.float()
        sdf_t, rgb_t, normal_t, _ = mesh_targets(objs, out.coords, feats, self.device)
        ex = dec.mesh_extractor
        sdf = ex.get_layout(pred, "sdf").squeeze(-1)  # [M, 8]
        deform = ex.get_layout(pred, "deform")
        weights = ex.get_layout(pred, "weights")
        color = ex.get_layout(pred, "color")  # [M, 8, 6]
        w = 1.0 + 3.0 * torch.exp(-sdf_t.abs())
        l_sdf = (F.smooth_l1_loss(sdf, sdf_t, reduction="none", beta=0.5) * w).mean()
        with torch.no_grad():
            sign_acc = ((sdf > 0) == (sdf_t > 0)).float().mean()
        near = (sdf_t.abs() < 2.0).float()[..., None]
        attrs = torch.sigmoid(color)  # the extractor passes vertex attributes through a sigmoid
        l_rgb = ((attrs[..., 0:3] - rgb_t).abs() * near).sum() / (near.sum() * 3).clamp_min(1)
        l_nrm = ((attrs[..., 3:6] - (normal_t[:, None, :] + 1) / 2).abs() * near).sum() / (near.sum() * 3).clamp_min(1)
        return {"mesh_sdf": l_sdf, "mesh_rgb": l_rgb, "mesh_normal": l_nrm, "mesh_deform": deform.pow(2).mean(),
                "mesh_weights": weights.pow(2).mean(), "mesh_sign_acc": sign_acc}

    def losses(self, step):
        import time as _time

        if (self.freeze_encoder_after is not None and not self.encoder_frozen
                and _time.time() - self.t_start > self.freeze_encoder_after):
            self.freeze_encoder()
        objs = self._sample()
        x = sparse_input(objs, self.device)
        enc = self.m("encoder")
        if "encoder" in self.models:
            z, mean, logvar = enc(x, sample_posterior=True, return_raw=True)
        else:  # a fixed (PCA) encoder is an exact linear code only in float32: no autocast
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
                z, mean, logvar = enc(x, sample_posterior=True, return_raw=True)
        kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).mean()
        feats = x.feats
        terms = {"kl": kl}
        loss = self.kl_weight * kl if "encoder" in self.models else 0.0
        if "gs" in self.parts:
            terms.update(self.gaussian_losses(z, feats))
            loss = loss + (terms["gs_xyz"] * 4 + terms["gs_rgb"] + terms["gs_opacity"] * 0.2
                           + terms["gs_scale"] * 0.1 + terms["gs_rot"] * 0.1)
        if "rf" in self.parts:
            terms.update(self.rf_losses(z, feats))
            loss = loss + terms["rf_trivec"] * 0.1 + terms["rf_density"] * 0.05 + terms["rf_rgb"] * 0.5
        if "mesh" in self.parts:
            # the mesh decoder works at 64x the voxel count: a sub-batch, optionally cropped to boxes
            k = min(self.mesh_batch, len(objs))
            mobjs, zf, zc, ff = [], [], [], []
            for i in range(k):
                sl = x.layout[i]
                o, c, zi, fi = objs[i], z.coords[sl], z.feats[sl], feats[sl]
                if self.mesh_crop:
                    centre = c[torch.randint(len(c), (1,)).item(), 1:]
                    sel = ((c[:, 1:] - centre).abs().max(1).values <= self.mesh_crop).nonzero().squeeze(1)
                    o = dict(o)
                    idx = sel.cpu().numpy()
                    for key in ("coords", "lattice", "lattice_part"):
                        o[key] = o[key][idx]
                    c, zi, fi = c[sel], zi[sel], fi[sel]
                c = c.clone()
                c[:, 0] = i
                mobjs.append(o), zc.append(c), zf.append(zi), ff.append(fi)
            zm = SparseTensor(torch.cat(zf), torch.cat(zc), shape=(k, z.feats.shape[1]))
            terms.update(self.mesh_losses(mobjs, zm, torch.cat(ff)))
            loss = loss + (terms["mesh_sdf"] + terms["mesh_rgb"] + terms["mesh_normal"] * 0.1
                           + terms["mesh_deform"] * 0.1 + terms["mesh_weights"] * 0.1)
        terms["loss"] = loss
        with torch.no_grad():
            terms["z_std"] = mean.float().std()
        return terms

    @torch.no_grad()
    def latent_stats(self, n: int = 256) -> dict:
        enc = self.m("encoder").eval()
        objs = self.store.objects[:n]
        s1 = torch.zeros(8, device=self.device, dtype=torch.float64)
        s2 = torch.zeros_like(s1)
        cnt = 0
        for i in range(0, len(objs), 8):
            x = sparse_input(objs[i:i + 8], self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp and "encoder" in self.models):
                z = enc(x, sample_posterior=False).feats.double()
            s1 += z.sum(0)
            s2 += z.pow(2).sum(0)
            cnt += z.shape[0]
        if "encoder" in self.models:
            enc.train()
        mean = s1 / max(cnt, 1)
        std = (s2 / max(cnt, 1) - mean.pow(2)).clamp_min(1e-12).sqrt()
        return {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]}

    def on_save(self):
        models = {**self.frozen, **self.eval_models()}
        folder = self.out / "ckpts"
        for key, name in (("slat_encoder", "encoder"), ("slat_decoder_gs", "decoder_gs"),
                          ("slat_decoder_mesh", "decoder_mesh"), ("slat_decoder_rf", "decoder_rf")):
            ckpt, cls, args = self.configs[key]
            export_model(folder, ckpt, cls, args, models[name])
        if self.latent_stats_file is not None:  # a fixed encoder keeps the statistics it came with
            (self.out / "latent_stats.json").write_text(Path(self.latent_stats_file).read_text())
        else:
            (self.out / "latent_stats.json").write_text(json.dumps(self.latent_stats(), indent=2))


def init_encoder_for_fast_start(encoder, logvar_bias: float = -4.0, std: float = 0.02) -> None:
    """The reference zero-initialises the encoder's output layer: z starts as pure posterior noise
    (σ = 1) that the decoders cannot read, which costs many steps. Here the mean rows start small
    and random and the log-variance at `logvar_bias`, so z carries the input from the first step."""
    with torch.no_grad():
        c = encoder.latent_channels
        w, b = encoder.out_layer.weight, encoder.out_layer.bias
        w[:c].normal_(0, std)
        b[c:].fill_(logvar_bias)
