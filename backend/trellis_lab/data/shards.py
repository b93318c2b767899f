"""Pre-generated dataset shards (npz) for fast training.

    python -m trellis_lab.data.shards --split train --start 0 --count 4000 \\
        --out shards/train_0000.npz --captions 6 --views 2 --image-size 256 --workers 16

    ds = ShardDataset(["shards/train_0000.npz", ...])   # same items as ProceduralDataset

Shard layout (all arrays of one ``np.savez``):

============ ===================== ==============================================
key          shape / dtype          meaning
============ ===================== ==============================================
seeds        [M] int64              object seeds
split        [] str                 split name
category     [M] int8               index into CATEGORIES
color        [M] int8               index into COLOR_NAMES (main colour)
params       [M] str                JSON of each object's parameters
captions     [M, K] str             K captions per object
offsets      [M+1] int64            object i owns rows offsets[i]:offsets[i+1]
coords       [ΣN, 3] uint8          shell voxels
feats        [ΣN, 16] float16       per-voxel features (voxelize.FEATURE_LAYOUT)
images       [M, V, S, S, 4] uint8  V condition images per object (optional)
views        [M, V, 2] float32      (yaw, pitch) in degrees of each image
surface      [M, P, 9] float16      surface points: xyz, normal, rgb (optional)
============ ===================== ==============================================
"""
from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from .palette import COLOR_NAMES
from .render import random_view, render_views
from .shapes import sample_object
from .splits import CATEGORIES, SPLIT_SALT
from .voxelize import RESOLUTION, surface_points, voxelize


def _one(args):
    seed, split, n_captions, n_views, image_size, n_surface = args
    obj = sample_object(seed, split)
    vox = voxelize(obj)
    out = dict(seed=seed, category=CATEGORIES.index(obj.category), color=COLOR_NAMES.index(obj.color),
               params=json.dumps(obj.params), captions=obj.captions(n_captions),
               coords=vox.coords.astype(np.uint8), feats=vox.feats.astype(np.float16))
    if n_views:
        rng = np.random.default_rng([seed, SPLIT_SALT[split], 7])
        views = [random_view(rng) for _ in range(n_views)]
        out["images"] = np.stack(render_views(obj, views, size=image_size))
        out["views"] = np.asarray(views, np.float32)
    if n_surface:
        p, n, c = surface_points(obj, vox.coords, per_voxel=max(1, int(np.ceil(1.3 * n_surface / len(vox.coords)))),
                                 seed=seed)
        sel = np.random.default_rng(seed).choice(len(p), n_surface, replace=len(p) < n_surface)
        out["surface"] = np.concatenate([p[sel], n[sel], c[sel]], 1).astype(np.float16)
    return out


def build_shard(split: str, seeds, captions: int = 4, views: int = 0, image_size: int = 256,
                surface: int = 0, workers: int = 1) -> dict:
    """Arrays of a shard for `seeds` (see module doc)."""
    jobs = [(int(s), split, captions, views, image_size, surface) for s in seeds]
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            recs = list(ex.map(_one, jobs, chunksize=8))
    else:
        recs = [_one(j) for j in jobs]
    lens = [len(r["coords"]) for r in recs]
    arrays = dict(
        seeds=np.array([r["seed"] for r in recs], np.int64), split=np.array(split),
        category=np.array([r["category"] for r in recs], np.int8), color=np.array([r["color"] for r in recs], np.int8),
        params=np.array([r["params"] for r in recs]), captions=np.array([r["captions"] for r in recs]),
        offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
        coords=np.concatenate([r["coords"] for r in recs]), feats=np.concatenate([r["feats"] for r in recs]),
    )
    if views:
        arrays["images"] = np.stack([r["images"] for r in recs])
        arrays["views"] = np.stack([r["views"] for r in recs])
    if surface:
        arrays["surface"] = np.stack([r["surface"] for r in recs])
    return arrays


def write_shard(path: str, split: str, seeds, **kw) -> str:
    arrays = build_shard(split, seeds, **kw)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, **arrays)
    return path


class ShardDataset(torch.utils.data.Dataset):
    """Items of one or more shards, in the format of ProceduralDataset items
    (coords int32, feats float32, occupancy bool 64³, caption, image if stored).
    The caption (and the image view) is picked by (index, epoch); `set_epoch`
    varies them."""

    def __init__(self, paths, resolution: int = RESOLUTION):
        self.res = resolution
        self.shards = [dict(np.load(p, allow_pickle=False)) for p in ([paths] if isinstance(paths, str) else paths)]
        self.index = [(si, i) for si, s in enumerate(self.shards) for i in range(len(s["seeds"]))]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict:
        si, i = self.index[k]
        s = self.shards[si]
        a, b = s["offsets"][i], s["offsets"][i + 1]
        coords = torch.from_numpy(s["coords"][a:b].astype(np.int32))
        occ = torch.zeros((self.res,) * 3, dtype=torch.bool)
        occ[coords[:, 0].long(), coords[:, 1].long(), coords[:, 2].long()] = True
        rng = np.random.default_rng([k, self.epoch])
        caps = s["captions"][i]
        rec = dict(seed=int(s["seeds"][i]), split=str(s["split"]), category=CATEGORIES[int(s["category"][i])],
                   color=COLOR_NAMES[int(s["color"][i])], params=json.loads(str(s["params"][i])),
                   caption=str(caps[int(rng.integers(len(caps)))]), coords=coords,
                   feats=torch.from_numpy(s["feats"][a:b].astype(np.float32)), occupancy=occ)
        if "images" in s:
            v = int(rng.integers(s["images"].shape[1]))
            rec["image"] = torch.from_numpy(s["images"][i, v])
            rec["view"] = tuple(float(x) for x in s["views"][i, v])
        if "surface" in s:
            sp = s["surface"][i].astype(np.float32)
            rec["surface_points"] = torch.from_numpy(sp[:, :3])
            rec["surface_normals"] = torch.from_numpy(sp[:, 3:6])
            rec["surface_colors"] = torch.from_numpy(sp[:, 6:9])
        return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="train", choices=["train", "heldout"])
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--captions", type=int, default=4, help="captions per object")
    ap.add_argument("--views", type=int, default=0, help="condition images per object")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--surface", type=int, default=0, help="surface points per object")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args(argv)
    t = time.time()
    write_shard(a.out, a.split, range(a.start, a.start + a.count), captions=a.captions, views=a.views,
                image_size=a.image_size, surface=a.surface, workers=a.workers)
    print(f"wrote {a.out}: {a.count} objects in {time.time() - t:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
