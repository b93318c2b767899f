"""Training data of the embedded model: procedural objects generated in a worker pool, kept in memory.

``generate(out_dir, split, start, count, fields, workers)`` writes shards of
``SHARD`` objects (pickled dicts of numpy arrays) into `out_dir` as they finish, so
trainers in other processes can start on the first shards (`ObjectStore.refresh`).
Everything is deterministic in (split, seed).

Per object (``fields`` picks the optional groups):

========== =============================================================================
key        value
========== =============================================================================
seed       int; ``category`` / ``color`` indices into CATEGORIES / COLOR_NAMES
coords     uint8 [N, 3] surface-shell voxels at 64³
feats      float16 [N, 16] native per-voxel features (voxelize.FEATURE_LAYOUT)
captions   list of ``CAPTIONS`` captions (training templates of the split)
lattice    (``"lattice"``) float16 [N, 125]: SDF at the 5³ sub-lattice of every voxel (the
           256³ FlexiCubes corners), in fine-voxel units (world × 256), clipped to ±4;
           ``lattice_part`` int8 [N, 125] part index (-1 far away); ``part_rgb`` float16 [P, 3]
images     (``"images"``) uint8 [V, 3, S, S]: condition images from ``V`` random views,
           preprocessed exactly as the pipeline does (alpha crop 1.2×, 518², premultiplied
           on black) then resized to S like the image encoder (bilinear, antialiased)
========== =============================================================================
"""
from __future__ import annotations

import os
import pickle
import time
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import numpy as np
import torch

from ..data.palette import COLOR_NAMES
from ..data.splits import CATEGORIES, SPLIT_SALT

SHARD = 32
CAPTIONS = 4
LATTICE_SUB = 4
LATTICE_CLIP = 4.0
FINE = 4  # 256³ / 64³


def _preprocess_views(obj, views, image_size: int, render_size: int) -> np.ndarray:
    from PIL import Image

    from ..data.render import render, surface_cloud
    from trellis_backend.pipeline.conditioning.preprocess import preprocess_image

    cloud = surface_cloud(obj)
    out = []
    for yaw, pitch in views:
        rgba = render(obj, yaw, pitch, size=render_size, cloud=cloud)
        rgb = preprocess_image(Image.fromarray(rgba, "RGBA"))
        x = torch.from_numpy(np.asarray(rgb, np.float32) / 255.0).permute(2, 0, 1)[None]
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True,
                                            align_corners=False)
        out.append((x[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy())
    return np.stack(out)


def views_for(seed: int, split: str, count: int) -> list:
    from ..data.render import random_view

    rng = np.random.default_rng([int(seed), SPLIT_SALT[split], 77])
    return [random_view(rng) for _ in range(count)]


def make_object(seed: int, split: str = "train", fields: Sequence[str] = (), views: int = 4, image_size: int = 128,
                render_size: int = 192, captions: int = CAPTIONS) -> dict:
    """One training object (see the module doc)."""
    from ..data.shapes import sample_object
    from ..data.voxelize import Lattice, voxelize

    torch.set_num_threads(1)
    obj = sample_object(seed, split)
    vox = voxelize(obj)
    rec = dict(seed=int(seed), split=split, category=CATEGORIES.index(obj.category),
               color=COLOR_NAMES.index(obj.color), coords=vox.coords.astype(np.uint8),
               feats=vox.feats.astype(np.float16), captions=[obj.caption(c) for c in range(captions)])
    if "lattice" in fields:
        lat = Lattice(vox.coords, LATTICE_SUB)
        h = 1.0 / 64
        d, pid = obj.shape.query(lat.points, band=(LATTICE_CLIP + 1) / 256)
        fine = np.clip(d * 256.0, -LATTICE_CLIP, LATTICE_CLIP)
        rec["lattice"] = fine[lat.voxel_points].astype(np.float16)
        rec["lattice_part"] = pid[lat.voxel_points].astype(np.int8)
        rec["part_rgb"] = np.asarray(obj.shape.colors, np.float16)
        del h
    if "images" in fields and views:
        rec["images"] = _preprocess_views(obj, views_for(seed, split, views), image_size, render_size)
    return rec


def _work(args):
    seeds, split, fields, views, image_size, path, lattice_below = args
    recs = [make_object(s, split, fields if s < lattice_below else tuple(f for f in fields if f != "lattice"),
                        views, image_size) for s in seeds]
    tmp = str(path) + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(recs, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return len(recs)


def generate(out_dir: str | Path, split: str = "train", start: int = 0, count: int = 1000,
             fields: Sequence[str] = ("lattice", "images"), views: int = 4, image_size: int = 128,
             workers: Optional[int] = None, log=print, lattice_objects: Optional[int] = None) -> int:
    """Generate objects ``start .. start+count-1`` of `split` into shards under `out_dir`
    (the lattice only for the first `lattice_objects` seeds when given)."""
    lattice_below = start + (lattice_objects if lattice_objects is not None else count)
    import multiprocessing as mp

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for i in range(start, start + count, SHARD):
        seeds = list(range(i, min(i + SHARD, start + count)))
        path = out_dir / f"{split}_{seeds[0]:07d}.pkl"
        if not path.exists():
            jobs.append((seeds, split, tuple(fields), views, image_size, path, lattice_below))
    workers = workers or max(1, (os.cpu_count() or 2) - 2)
    t0, done = time.time(), 0
    if workers == 1:
        for j in jobs:
            done += _work(j)
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers) as pool:
            for n in pool.imap_unordered(_work, jobs):
                done += n
                if log and done % (SHARD * 16) < SHARD:
                    log(f"[datagen] {done}/{count} objects in {time.time() - t0:.0f}s")
    (out_dir / f"DONE_{split}").write_text(str(count))
    if log:
        log(f"[datagen] {split}: {count} objects ready in {time.time() - t0:.0f}s")
    return done


class ObjectStore:
    """Objects read from a shard folder, growing while a generator still writes it."""

    def __init__(self, folder: str | Path, split: str = "train", keep: Iterable[str] | None = None,
                 limit: Optional[int] = None, require: Iterable[str] = ()):
        self.folder, self.split = Path(folder), split
        self.keep = set(keep) if keep is not None else None
        self.limit = limit
        self.require = tuple(require)
        self.objects: List[dict] = []
        self._seen: set = set()

    @property
    def complete(self) -> bool:
        return (self.folder / f"DONE_{self.split}").exists() and not self._pending()

    def _pending(self) -> list:
        return [p for p in sorted(self.folder.glob(f"{self.split}_*.pkl")) if p.name not in self._seen]

    def refresh(self) -> int:
        """Load shards that appeared since the last call; returns the number of objects."""
        for p in self._pending():
            if self.limit is not None and len(self.objects) >= self.limit:
                break
            with open(p, "rb") as f:
                recs = pickle.load(f)
            for r in recs:
                if any(k not in r for k in self.require):
                    continue
                if self.keep is not None:
                    r = {k: v for k, v in r.items() if k in self.keep or k in ("seed", "category", "color")}
                self.objects.append(r)
            self._seen.add(p.name)
        return len(self.objects)

    def wait(self, minimum: int, timeout: float = 600.0, poll: float = 1.0) -> int:
        t0 = time.time()
        while self.refresh() < minimum and not self.complete:
            if time.time() - t0 > timeout:
                break
            time.sleep(poll)
        return len(self.objects)

    def __len__(self) -> int:
        return len(self.objects)


def batch_coords(objs: List[dict], device) -> torch.Tensor:
    """Sparse coords int32 [ΣN, 4] (batch, x, y, z) of a list of objects."""
    parts = []
    for b, o in enumerate(objs):
        c = torch.from_numpy(o["coords"].astype(np.int32))
        parts.append(torch.cat([torch.full((len(c), 1), b, dtype=torch.int32), c], 1))
    return torch.cat(parts).to(device, non_blocking=True)


def dense_occupancy(objs: List[dict], device, resolution: int = 64) -> torch.Tensor:
    """float [B, 1, R, R, R] shell occupancy."""
    coords = batch_coords(objs, device).long()
    if resolution != 64:  # coarser grids (quick tests): a cell is occupied when any voxel in it is
        coords[:, 1:] = coords[:, 1:] * resolution // 64
    occ = torch.zeros(len(objs), 1, resolution, resolution, resolution, device=device)
    occ[coords[:, 0], 0, coords[:, 1], coords[:, 2], coords[:, 3]] = 1.0
    return occ
