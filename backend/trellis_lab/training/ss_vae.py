"""Stage `ss_vae`: the sparse-structure VAE, 64³ shell occupancy <-> 16³×8 latent.

Loss = BCE + soft Dice on the occupancy logits + ``kl_weight`` · KL (mean over latent
elements). At export the latent is rescaled per channel to unit RMS (encoder mean/logvar
rows and the decoder's input conv are rescaled together, an exact reparametrisation), so
the stage-1 flow sees unit-scale data; the pipeline has no stage-1 normalisation.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F

from .checkpoints import export_model
from .data import ObjectStore, dense_occupancy
from .loop import Trainer


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


class SSVAETrainer(Trainer):
    def __init__(self, encoder, decoder, store: ObjectStore, configs: dict, batch_size: int = 16,
                 kl_weight: float = 1e-3, resolution: int = 64, **kw):
        super().__init__({"encoder": encoder, "decoder": decoder}, **kw)
        self.store, self.configs, self.batch_size, self.kl_weight = store, configs, batch_size, kl_weight
        self.resolution = resolution

    def losses(self, step):
        if step % 20 == 0:
            self.store.refresh()
        objs = random.sample(self.store.objects, min(self.batch_size, len(self.store.objects)))
        occ = dense_occupancy(objs, self.device, self.resolution)
        enc, dec = self.models["encoder"], self.models["decoder"]
        z, mean, logvar = enc(occ, sample_posterior=True, return_raw=True)
        logits = dec(z).float()
        bce = F.binary_cross_entropy_with_logits(logits, occ)
        dice = dice_loss(logits, occ)
        mean, logvar = mean.float(), logvar.float()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        with torch.no_grad():
            pred = logits > 0
            inter = (pred & (occ > 0)).sum().float()
            iou = inter / ((pred | (occ > 0)).sum().float().clamp_min(1))
        return {"loss": bce + dice + self.kl_weight * kl, "bce": bce, "dice": dice, "kl": kl, "iou": iou,
                "z_rms": mean.pow(2).mean().sqrt()}

    @torch.no_grad()
    def latent_scale(self, n: int = 256) -> torch.Tensor:
        enc = self.eval_models()["encoder"].eval()
        objs = self.store.objects[:n]
        sq = torch.zeros(8, device=self.device)
        cnt = 0
        for i in range(0, len(objs), 32):
            z = enc(dense_occupancy(objs[i:i + 32], self.device, self.resolution)).float()
            sq += z.pow(2).mean((0, 2, 3, 4)) * z.shape[0]
            cnt += z.shape[0]
        enc.train()
        return (sq / max(cnt, 1)).sqrt().clamp_min(1e-3)

    def on_save(self):
        export_ss_vae(self.eval_models()["encoder"], self.eval_models()["decoder"], self.latent_scale(),
                      self.configs, self.out / "ckpts")


@torch.no_grad()
def rescale_ss_vae(encoder, decoder, scale: torch.Tensor) -> None:
    """z' = z / scale (per channel): encoder mean rows / scale, logvar rows - 2 log scale,
    decoder input conv weights * scale. Exact."""
    c = scale.numel()
    conv = encoder.out_layer[-1]
    s = scale.to(conv.weight.device, conv.weight.dtype)
    conv.weight[:c] /= s.view(-1, 1, 1, 1, 1)
    conv.bias[:c] /= s
    conv.bias[c:] -= 2 * torch.log(s)
    decoder.input_layer.weight *= s.view(1, -1, 1, 1, 1).to(decoder.input_layer.weight.dtype)


def export_ss_vae(encoder, decoder, scale, configs: dict, folder: Path) -> None:
    import copy

    enc, dec = copy.deepcopy(encoder).float(), copy.deepcopy(decoder).float()
    rescale_ss_vae(enc, dec, scale)
    for key, model in (("sparse_structure_encoder", enc), ("sparse_structure_decoder", dec)):
        ckpt, cls, args = configs[key]
        export_model(folder, ckpt, cls, args, model)
