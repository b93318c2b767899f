"""Training records of the procedural dataset, by seed.

    rec = make_record(7, "train", image_size=256)      # one record (numpy)
    ds = ProceduralDataset("train", size=100_000, image_size=None)
    loader = DataLoader(ds, batch_size=8, collate_fn=collate_records, num_workers=8)

A record (dict):

=============== ===================================================================
key             value
=============== ===================================================================
seed, split     identity of the object (same seed + split -> same object)
category        one of CATEGORIES
color           main colour name (palette), the colour captions name
params          category parameters (styles, part counts, accent colours)
caption         one caption (templates of the split; varies with ``caption_seed``)
coords          int32 [N, 3] surface-shell voxels at 64³ (x, y, z)
feats           float32 [N, 16] native per-voxel features (see voxelize.FEATURE_LAYOUT)
occupancy       bool [64, 64, 64] dense structure (True at coords) for the SS VAE
image           uint8 [S, S, 4] RGBA condition image (only with ``image_size``)
view            (yaw, pitch) in degrees of the image
surface_points  float32 [P, 3] points on the surface (only with ``surface_points``)
surface_normals float32 [P, 3]
surface_colors  float32 [P, 3]
=============== ===================================================================
"""
from __future__ import annotations

import numpy as np
import torch

from .render import random_view, render
from .shapes import sample_object
from .splits import SPLIT_SALT
from .voxelize import RESOLUTION, surface_points as _surface_points, voxelize


def make_record(seed: int, split: str = "train", *, category: str | None = None, image_size: int | None = None,
                view: tuple[float, float] | None = None, caption_seed: int = 0, surface_points: int = 0,
                resolution: int = RESOLUTION) -> dict:
    """The training record of `seed` in `split`.

    `image_size` renders an RGBA condition image from `view` (default: a random
    view drawn from the seed); `surface_points` > 0 adds that many surface points
    with normals and colours (3D supervision for the decoders).
    """
    obj = sample_object(seed, split, category)
    vox = voxelize(obj, resolution)
    rng = np.random.default_rng([int(seed), SPLIT_SALT[split], 4, int(caption_seed)])
    rec = dict(seed=int(seed), split=split, category=obj.category, color=obj.color, params=obj.params,
               caption=obj.caption(rng), coords=vox.coords, feats=vox.feats, occupancy=vox.occupancy)
    if image_size:
        if view is None:
            view = random_view(np.random.default_rng([int(seed), SPLIT_SALT[split], 5]))
        rec["image"] = render(obj, view[0], view[1], size=image_size)
        rec["view"] = tuple(float(v) for v in view)
    if surface_points:
        p, n, c = _surface_points(obj, vox.coords, per_voxel=max(1, int(np.ceil(1.3 * surface_points / len(vox.coords)))),
                                  seed=int(seed), resolution=resolution)
        sel = np.random.default_rng(int(seed)).choice(len(p), size=surface_points, replace=len(p) < surface_points)
        rec["surface_points"], rec["surface_normals"], rec["surface_colors"] = p[sel], n[sel], c[sel]
    return rec


class ProceduralDataset(torch.utils.data.Dataset):
    """`size` records of a split, item i = seed ``base_seed + i``.

    Items are torch tensors (coords int32 [N,3], feats float32 [N,16],
    occupancy bool [64,64,64], image uint8 [S,S,4] when asked) plus the
    metadata of :func:`make_record`. `set_epoch` changes captions (and, with
    ``random_views``, the image view) without changing the objects.
    """

    def __init__(self, split: str = "train", size: int = 10_000, base_seed: int = 0, *,
                 category: str | None = None, image_size: int | None = None, surface_points: int = 0,
                 random_views: bool = True):
        self.split, self.size, self.base_seed = split, int(size), int(base_seed)
        self.category, self.image_size, self.surface_points = category, image_size, surface_points
        self.random_views = random_views
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.size:
            raise IndexError(i)
        seed = self.base_seed + i
        view = None
        if self.image_size and self.random_views and self.epoch:
            view = random_view(np.random.default_rng([seed, SPLIT_SALT[self.split], 6, self.epoch]))
        rec = make_record(seed, self.split, category=self.category, image_size=self.image_size, view=view,
                          caption_seed=self.epoch, surface_points=self.surface_points)
        for k in ("coords", "feats", "occupancy", "image", "surface_points", "surface_normals", "surface_colors"):
            if k in rec:
                rec[k] = torch.from_numpy(np.ascontiguousarray(rec[k]))
        return rec


def collate_records(batch: list[dict]) -> dict:
    """Batch records: sparse coords get a leading batch index (int32 [ΣN, 4], the
    SparseTensor layout), dense occupancy becomes float [B, 1, 64, 64, 64],
    images uint8 [B, S, S, 4]; other keys become lists."""
    out: dict = {}
    coords = [torch.as_tensor(r["coords"]) for r in batch]
    out["coords"] = torch.cat([torch.cat([torch.full((len(c), 1), b, dtype=torch.int32), c.int()], 1)
                               for b, c in enumerate(coords)])
    out["feats"] = torch.cat([torch.as_tensor(r["feats"]) for r in batch])
    out["occupancy"] = torch.stack([torch.as_tensor(r["occupancy"]) for r in batch]).float()[:, None]
    for k in ("image", "surface_points", "surface_normals", "surface_colors"):
        if k in batch[0]:
            out[k] = torch.stack([torch.as_tensor(r[k]) for r in batch])
    for k in batch[0]:
        if k not in out:
            out[k] = [r[k] for r in batch]
    return out


def iter_records(split: str = "train", start: int = 0, count: int = 100, **kw):
    """Generator over records of seeds start, start+1, ... (see make_record for kw)."""
    for s in range(start, start + count):
        yield make_record(s, split, **kw)


def evaluation_set(n: int = 60, split: str = "heldout", start: int = 0, image_size: int | None = None) -> list[dict]:
    """`n` records balanced over categories (item i has category CATEGORIES[i % 12]),
    seeds start..start+n-1 of `split`. With the default split these are held-out
    (category, colour) pairs captioned with held-out templates — the prompts and
    input images of the evaluation. Each record also carries the object's voxels
    (the ground truth for IoU)."""
    from .splits import CATEGORIES

    return [make_record(start + i, split, category=CATEGORIES[i % len(CATEGORIES)], image_size=image_size)
            for i in range(n)]
