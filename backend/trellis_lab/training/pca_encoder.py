"""A SLat encoder set to a fixed linear code of the native voxel features (PCA).

TRELLIS's SLat encoder is learned. Here the encoder can instead be *constructed*: the
8-d latent of a voxel is the whitened projection of its standardised 16 native features
(colour, normal, SDF, corner SDFs, fill) onto their 8 principal components. The
`SLatEncoder` class and checkpoint layout stay the official ones; the weights make the
transformer an (almost exactly) linear map:

* input layer: channels 0-15 = alpha * standardised features, channels 16-127 = a
  constant +-C pattern (so the final non-affine LayerNorm divides by an almost constant
  std and the absolute position embedding, of magnitude 1, is negligible);
* every block's residual branches (attention output, MLP output) are zero;
* output layer: least-squares fit from the LayerNorm output to the PCA target; posterior
  std fixed at ``sigma``.

The decoders and the SLat flow then train on a latent that carries colour and local
geometry from the first step, which is what made stage 2 trainable in the GPU time
available (a jointly trained encoder starts from pure posterior noise).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trellis_backend.models.slat_vae_base import SparseTransformerBase
from trellis_backend.sparse import SparseTensor


@torch.no_grad()
def build_pca_encoder(encoder, feats: torch.Tensor, coords: torch.Tensor, alpha: float = 100.0, c: float = 1000.0,
                      sigma: float = 0.1) -> dict:
    """Set `encoder` (a float32 SLatEncoder) in place; returns fit statistics."""
    feats = feats.float()
    k = encoder.latent_channels
    ch = encoder.model_channels
    nin = feats.shape[1]
    mu = feats.mean(0)
    sd = feats.std(0).clamp_min(1e-3)
    u = (feats - mu) / sd
    evals, evecs = torch.linalg.eigh(u.T @ u / len(u))
    order = torch.argsort(evals, descending=True)[:k]
    proj = evecs[:, order] / evals[order].clamp_min(1e-6).sqrt()  # whitened
    target = u @ proj
    w = torch.zeros(ch, nin)
    b = torch.zeros(ch)
    w[:nin] = alpha * torch.diag(1 / sd)
    b[:nin] = -alpha * mu / sd
    b[nin:] = c * torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(ch - nin)])
    encoder.input_layer.weight.copy_(w)
    encoder.input_layer.bias.copy_(b)
    for blk in encoder.blocks:
        for lin in (blk.attn.to_out, blk.mlp.mlp[2]):
            lin.weight.zero_()
            lin.bias.zero_()
    x = SparseTensor(feats, coords)
    h = SparseTransformerBase.forward(encoder, x).feats.float()
    h = F.layer_norm(h, h.shape[-1:])
    design = torch.cat([h, torch.ones(len(h), 1)], 1).double()
    sol = torch.linalg.lstsq(design, target.double()).solution.float()  # [ch + 1, k]
    ow = torch.zeros_like(encoder.out_layer.weight)
    ob = torch.zeros_like(encoder.out_layer.bias)
    ow[:k] = sol[:ch].T
    ob[:k] = sol[ch]
    ob[k:] = math.log(sigma ** 2)
    encoder.out_layer.weight.copy_(ow)
    encoder.out_layer.bias.copy_(ob)
    z = encoder(x, sample_posterior=False).feats
    err = float((z - target).pow(2).mean().sqrt())
    return {"rms_error": err, "explained_variance": float(evals[order].sum() / evals.sum()),
            "feature_mean": mu.tolist(), "feature_std": sd.tolist()}
