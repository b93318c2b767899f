"""Stages `ss_flow` and `slat_flow`: rectified-flow transformers conditioned on text and images.

Flow matching exactly as the reference trainer (``trainers/flow_matching``):
``x_t = (1 - t) x_0 + (σ_min + (1 - σ_min) t) ε``, target ``v = (1 - σ_min) ε - x_0``, t
drawn logit-normal(1, 1) as in the reference configs (most samples at high noise, where
the condition decides the shape), the network sees ``1000 t``; the pipeline's Euler sampler
integrates exactly this field.

One denoiser per stage serves both conditionings: text tokens (MiniLM, ``[B, 32, 384]``)
and image tokens (the `EmbeddedImageEncoder`, ``[B, 65, 384]``) have the same width, so
every step trains a text half-batch and an image half-batch. With probability
``cond_drop`` a condition is replaced by the pipeline's negative condition (encoding of
"" for text, zeros for images) for classifier-free guidance. The image encoder trains
through the flow loss plus small auxiliary category / colour heads on its global token
(the heads are not exported). Text tokens get a 2 % relative noise during training, which
covers the compact int8 MiniLM copy used where the exact package is missing.

Data: `FlowData` turns store objects into flow inputs as they arrive: stage-1 latents
(SS encoder mean, ``[8, 16, 16, 16]``) or normalised stage-2 latents (SLat encoder mean on
the shell voxels, ``(z - mean) / std``), condition tokens of every caption, and the
condition images. With a frozen image encoder the image tokens of every view are
computed once when an object arrives (`FlowData.image_tokens`), not at every step.
"""
from __future__ import annotations

import random
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.palette import COLOR_NAMES
from ..data.splits import CATEGORIES
from trellis_backend.sparse import SparseTensor
from .data import ObjectStore, batch_coords, dense_occupancy
from .loop import Trainer
SIGMA_MIN = 1e-5
TEXT_NOISE = 0.02


class AuxHeads(nn.Module):
    """Category and colour classifiers on the image encoder's global token (training only)."""

    def __init__(self, width: int):
        super().__init__()
        self.category = nn.Linear(width, len(CATEGORIES))
        self.color = nn.Linear(width, len(COLOR_NAMES))

    def forward(self, tokens):
        g = tokens[:, 0].float()
        return self.category(g), self.color(g)


class FlowData:
    """Flow-training tensors on the device, filled incrementally from an `ObjectStore`."""

    def __init__(self, stage: str, store: ObjectStore, device, text_encoder=None, ss_encoder=None,
                 slat_encoder=None, slat_norm: Optional[dict] = None, use_images: bool = True,
                 frozen_image_encoder=None):
        assert stage in ("ss", "slat")
        self.stage, self.store, self.device = stage, store, torch.device(device)
        self.text_encoder, self.ss_encoder, self.slat_encoder = text_encoder, ss_encoder, slat_encoder
        self.use_images = use_images
        if slat_norm is not None:
            self.mean = torch.tensor(slat_norm["mean"], device=self.device).float()
            self.std = torch.tensor(slat_norm["std"], device=self.device).float()
        self.latents: list = []  # ss: [8,16,16,16] fp16 tensors; slat: (coords int32 [N,3], z fp16 [N,8])
        self.text: list = []  # [K, L, C] fp16
        self.images: list = []  # [V, 3, S, S] uint8
        self.frozen_image_encoder = frozen_image_encoder
        self.image_tokens: list = []  # [V, L, C] fp16, with a frozen image encoder
        self.category: list = []
        self.color: list = []
        self.null_text = None
        self.done = 0

    def __len__(self) -> int:
        return len(self.latents)

    @torch.no_grad()
    def update(self, max_new: Optional[int] = None) -> int:
        self.store.refresh()
        new = self.store.objects[self.done:]
        if max_new is not None:
            new = new[:max_new]
        if not new:
            return 0
        if self.text_encoder is not None and self.null_text is None:
            self.null_text = self.text_encoder.encode([""]).half()
        for i in range(0, len(new), 32):
            chunk = new[i:i + 32]
            self._encode_chunk(chunk)
        self.done += len(new)
        return len(new)

    def _encode_chunk(self, objs):
        dev = self.device
        amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
        if self.stage == "ss":
            with amp:
                z = self.ss_encoder(dense_occupancy(objs, dev)).float()
            self.latents += list(z.half())
        else:
            coords = batch_coords(objs, dev)
            feats = torch.cat([torch.from_numpy(o["feats"]) for o in objs]).to(dev).float()
            with torch.autocast(dev.type, enabled=False):  # the (PCA) encoder is exact only in float32
                z = self.slat_encoder(SparseTensor(feats, coords), sample_posterior=False).feats.float()
            z = ((z - self.mean) / self.std).half()
            start = 0
            for o in objs:
                n = len(o["coords"])
                self.latents.append((coords[start:start + n, 1:].clone(), z[start:start + n]))
                start += n
        if self.text_encoder is not None:
            caps = [c for o in objs for c in o["captions"]]
            k = len(objs[0]["captions"])
            tok = self.text_encoder.encode(caps).half()
            self.text += list(tok.reshape(len(objs), k, *tok.shape[1:]))
        if self.use_images and self.frozen_image_encoder is not None:
            views = torch.stack([torch.from_numpy(o["images"]) for o in objs]).to(dev)  # [B, V, 3, S, S]
            with amp:
                tok = self.frozen_image_encoder(views.flatten(0, 1).float() / 255.0).float()
            self.image_tokens += list(tok.half().reshape(len(objs), views.shape[1], *tok.shape[1:]))
        elif self.use_images:
            self.images += [torch.from_numpy(o["images"]).to(dev) for o in objs]
        self.category += [o["category"] for o in objs]
        self.color += [o["color"] for o in objs]


class FlowTrainer(Trainer):
    """Rectified-flow training of one stage's denoiser (and optionally the image encoder)."""

    def __init__(self, stage: str, denoiser, data: FlowData, configs: dict, image_encoder=None,
                 train_image_encoder: bool = True, batch_size: int = 32, cond_drop: float = 0.1,
                 aux_weight: float = 0.2, image_fraction: float = 0.5, t_mean: float = 1.0, t_std: float = 1.0,
                 **kw):
        models = {"denoiser": denoiser}
        frozen = {}
        if image_encoder is not None:
            if train_image_encoder:
                models["image_encoder"] = image_encoder
                models["aux"] = AuxHeads(image_encoder.cond_channels)
            else:
                frozen["image_encoder"] = image_encoder
        super().__init__(models, frozen=frozen, **kw)
        self.stage, self.data, self.configs = stage, data, configs
        self.batch_size, self.cond_drop, self.aux_weight = batch_size, cond_drop, aux_weight
        self.image_fraction = image_fraction if image_encoder is not None else 0.0
        self.t_mean, self.t_std = t_mean, t_std

    @property
    def image_encoder(self):
        return self.models.get("image_encoder") or self.frozen.get("image_encoder")

    @property
    def name(self) -> str:
        return f"{self.stage}_flow"

    # ------------------------------------------------------------------ batches
    def _x0(self, idx):
        if self.stage == "ss":
            return torch.stack([self.data.latents[i] for i in idx]).float()
        coords, feats = [], []
        for b, i in enumerate(idx):
            c, z = self.data.latents[i]
            coords.append(torch.cat([torch.full((len(c), 1), b, dtype=torch.int32, device=c.device), c], 1))
            feats.append(z)
        return SparseTensor(torch.cat(feats).float(), torch.cat(coords))

    def _text_cond(self, idx):
        k = [random.randrange(self.data.text[i].shape[0]) for i in idx]
        cond = torch.stack([self.data.text[i][j] for i, j in zip(idx, k)]).float()
        cond = cond * (1 + TEXT_NOISE * torch.randn_like(cond)) * (cond != 0)
        drop = torch.rand(len(idx), device=cond.device) < self.cond_drop
        cond = torch.where(drop[:, None, None], self.data.null_text.float().expand_as(cond), cond)
        return cond, {}

    def _image_cond(self, idx):
        extra = {}
        if self.data.image_tokens:  # frozen encoder: tokens of every view computed on arrival
            tokens = torch.stack([self.data.image_tokens[i][random.randrange(self.data.image_tokens[i].shape[0])]
                                  for i in idx]).float()
        else:
            imgs = torch.stack([self.data.images[i][random.randrange(self.data.images[i].shape[0])] for i in idx])
            with torch.set_grad_enabled("image_encoder" in self.models):
                tokens = self.image_encoder(imgs.float() / 255.0)
        if "aux" in self.models:
            cat_logits, col_logits = self.models["aux"](tokens)
            cat = torch.tensor([self.data.category[i] for i in idx], device=tokens.device)
            col = torch.tensor([self.data.color[i] for i in idx], device=tokens.device)
            extra = {"aux_category": F.cross_entropy(cat_logits, cat), "aux_color": F.cross_entropy(col_logits, col),
                     "aux_cat_acc": (cat_logits.argmax(1) == cat).float().mean(),
                     "aux_col_acc": (col_logits.argmax(1) == col).float().mean()}
        drop = torch.rand(len(idx), device=tokens.device) < self.cond_drop
        tokens = torch.where(drop[:, None, None], torch.zeros_like(tokens), tokens)
        return tokens, extra

    def flow_loss(self, idx, cond) -> torch.Tensor:
        x0 = self._x0(idx)
        b = len(idx)
        t = torch.sigmoid(self.t_mean + self.t_std * torch.randn(b, device=self.device))
        if self.stage == "ss":
            eps = torch.randn_like(x0)
            tt = t.view(-1, 1, 1, 1, 1)
            x_t = (1 - tt) * x0 + (SIGMA_MIN + (1 - SIGMA_MIN) * tt) * eps
            target = (1 - SIGMA_MIN) * eps - x0
            pred = self.models["denoiser"](x_t, t * 1000, cond).float()
            return F.mse_loss(pred, target)
        feats = x0.feats
        eps = torch.randn_like(feats)
        tt = t[x0.coords[:, 0].long()][:, None]
        x_t = x0.replace((1 - tt) * feats + (SIGMA_MIN + (1 - SIGMA_MIN) * tt) * eps)
        target = (1 - SIGMA_MIN) * eps - feats
        pred = self.models["denoiser"](x_t, t * 1000, cond).feats.float()
        return F.mse_loss(pred, target)

    def losses(self, step):
        if step % 50 == 0:
            self.data.update()
        n = len(self.data)
        b = min(self.batch_size, n)
        idx = random.sample(range(n), b) if b < n else list(range(n))
        n_img = int(round(b * self.image_fraction))
        terms = {}
        loss = 0.0
        if b - n_img > 0:
            cond, _ = self._text_cond(idx[n_img:])
            terms["mse_text"] = self.flow_loss(idx[n_img:], cond)
            loss = loss + terms["mse_text"] * (b - n_img) / b
        if n_img > 0:
            cond, extra = self._image_cond(idx[:n_img])
            terms["mse_image"] = self.flow_loss(idx[:n_img], cond)
            loss = loss + terms["mse_image"] * n_img / b
            terms.update(extra)
            if "aux_category" in extra:
                loss = loss + self.aux_weight * (extra["aux_category"] + extra["aux_color"])
        terms["loss"] = loss
        return terms

    def on_save(self):
        from .checkpoints import export_model
        from .image_encoder_io import save_image_encoder_half

        key = "sparse_structure_flow_model" if self.stage == "ss" else "slat_flow_model"
        ckpt, cls, args = self.configs[key]
        models = self.eval_models()
        export_model(self.out / "ckpts", ckpt, cls, args, models["denoiser"])
        if "image_encoder" in models:
            save_image_encoder_half(models["image_encoder"], self.out / "ckpts" / "image_encoder")
