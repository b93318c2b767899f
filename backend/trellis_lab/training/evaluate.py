"""Evaluation of the embedded model on held-out prompts and images.

    python -m trellis_lab.training.evaluate --model models/trellis-embedded \
        [--image-model models/trellis-embedded-image] --n 60 --out DIR [--device cuda] [--batch 20]

Inputs come from `trellis_lab.data.dataset.evaluation_set` (held-out split: (category,
colour) pairs and caption templates never used in training, balanced over the 12
categories; the image of each object is rendered from a random view). For each input the
model generates (stage 1 -> stage 2 -> mesh + Gaussians, the samplers and settings of
pipeline.json, batched) and is scored:

* category: nearest category by Chamfer distance between the generated structure (the
  occupied 64³ voxels) and fresh generator samples of every category
  (`data.metrics.CategoryClassifier`, 8 references per category, computed on the device);
* colour: dominant palette colour of the generated mesh as the GLB colours it (area-weighted
  vertex colours from `export.mesh_vertex_colors`, i.e. the Gaussians'; the Gaussians' own
  colours if the mesh is empty) vs the requested main colour;
* images only, IoU with the input object's voxels at 64³: of the solids the two surface shells
  enclose (`data.metrics.solid_iou`, the volumetric IoU of single-view reconstruction work;
  the headline number), and of the shells themselves (`voxel_iou`; a one-voxel offset of a thin
  shell already halves it). For scale, the summary also scores a different instance of the same
  category (the held-out object n places later) against each input the same way (`baseline_*`).

``--start K`` evaluates the records K..K+n-1 instead of 0..n-1 (same held-out split; use it to
choose sampler settings without looking at the reported items).

Writes ``DIR/results.json`` (per item and summary), ``DIR/results.md`` (table) and
``DIR/eval_text.png`` / ``DIR/eval_image.png`` (grids of generated objects).
``--pipeline-timing K`` additionally times K generations through `TrellisPipeline.generate`
(the product path) on the chosen device.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from ..data.metrics import CategoryClassifier, dominant_color, mesh_dominant_color, solid_iou, voxel_iou
from ..data.palette import COLOR_NAMES
from ..data.splits import CATEGORIES
from trellis_backend.pipeline.export import mesh_vertex_colors


# ------------------------------------------------------------------ model loading
class LoadedModel:
    """The pieces of a pipeline folder, for batched generation."""

    def __init__(self, folder: str | Path, device, structure_only: bool = False,
                 compact_text_encoder: Optional[str] = ".cache/embedded_training/minilm"):
        from trellis_backend.models import load_model, read_config
        from trellis_backend.pipeline.conditioning import build_conditioner
        from trellis_backend.errors import MissingFileError
        from trellis_backend.pipeline.samplers import build_sampler

        self.folder = Path(folder).resolve()
        self.device = torch.device(device)
        self.config = json.loads((self.folder / "pipeline.json").read_text())
        args = self.config["args"]
        self.kind = "image" if args.get("image_cond_model") else "text"
        self.models = {}
        keys = ["sparse_structure_flow_model", "sparse_structure_decoder"]
        if not structure_only:
            keys += ["slat_flow_model", "slat_decoder_mesh", "slat_decoder_gs"]
        for key in keys:
            path = self._resolve(args["models"][key])
            over = {"use_fp16": False} if "use_fp16" in read_config(path)["args"] else {}
            self.models[key] = load_model(path, device=self.device, **over).eval()
        try:
            self.conditioner = build_conditioner(args, self.folder, None, False, device=self.device)
        except MissingFileError:  # GPU job without the MiniLM package: the compact copy training used
            if self.kind != "text" or compact_text_encoder is None:
                raise
            from .text_embed import load_text_encoder

            self.conditioner = load_text_encoder(compact_text_encoder, device=self.device)
        self.ss_sampler = build_sampler(args["sparse_structure_sampler"])
        self.ss_params = dict(args["sparse_structure_sampler"]["params"])
        self.slat_sampler = build_sampler(args["slat_sampler"])
        self.slat_params = dict(args["slat_sampler"]["params"])
        norm = args["slat_normalization"]
        self.mean = torch.tensor(norm["mean"], device=self.device).float()
        self.std = torch.tensor(norm["std"], device=self.device).float()

    def _resolve(self, ref: str) -> Path:
        try:
            from trellis_backend.pipeline.folder import resolve_model_ref

            return resolve_model_ref(self.folder, ref)
        except ImportError:
            local = self.folder / ref
            if Path(f"{local}.json").is_file():
                return local
            parts = ref.split("/")
            return self.folder.parent / parts[1] / "/".join(parts[2:])

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")


@torch.no_grad()
def generate_batch(m: LoadedModel, cond: torch.Tensor, neg: torch.Tensor, seeds: List[int],
                   ss_params: Optional[dict] = None, slat_params: Optional[dict] = None,
                   decode: bool = True, max_voxels: int = 40000) -> List[dict]:
    """Generate one object per condition row; noise per item as the pipeline draws it
    (CPU generator seeded with the item's seed: stage-1 noise, then stage-2 noise)."""
    from trellis_backend.sparse import SparseTensor

    dev = m.device
    flow = m.models["sparse_structure_flow_model"]
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    r = flow.resolution
    noise = torch.cat([torch.randn(1, flow.in_channels, r, r, r, generator=g) for g in gens]).to(dev)
    with m.autocast():
        z = m.ss_sampler.sample(flow, noise, cond.to(dev), neg.to(dev), **(ss_params or m.ss_params)).samples
        logits = m.models["sparse_structure_decoder"](z.float())
    coords_all = torch.argwhere(logits > 0)[:, [0, 2, 3, 4]].int()
    out = [{"coords": coords_all[coords_all[:, 0] == b, 1:].cpu()} for b in range(len(seeds))]
    # an unusable structure (empty, or a blob filling the grid) is scored as a failure, not decoded
    keep = [b for b in range(len(seeds)) if 0 < len(out[b]["coords"]) <= max_voxels]
    if not keep or not decode:
        return out
    sflow = m.models["slat_flow_model"]
    coords, feats = [], []
    for j, b in enumerate(keep):
        c = out[b]["coords"]
        coords.append(torch.cat([torch.full((len(c), 1), j, dtype=torch.int32), c], 1))
        feats.append(torch.randn(len(c), sflow.in_channels, generator=gens[b]))
    x = SparseTensor(torch.cat(feats).to(dev), torch.cat(coords).to(dev), shape=(len(keep), sflow.in_channels))
    with m.autocast():
        slat = m.slat_sampler.sample(sflow, x, cond[keep].to(dev), neg.to(dev),
                                     **(slat_params or m.slat_params)).samples
    slat = slat.replace(slat.feats.float() * m.std + m.mean)
    with m.autocast():
        gaussians = m.models["slat_decoder_gs"](slat)
        meshes = m.models["slat_decoder_mesh"](slat)
    for j, b in enumerate(keep):
        out[b]["mesh"] = meshes[j]
        out[b]["gaussians"] = gaussians[j]
        # the per-vertex colours the product's GLB gets (scored and rendered from here)
        out[b]["colours"] = mesh_vertex_colors(meshes[j], gaussians[j]) if len(meshes[j].faces) else None
    return out


# ------------------------------------------------------------------ scoring
class DeviceClassifier:
    """`CategoryClassifier` (8 references per category, batched Chamfer on the CPU)."""

    def __init__(self, device=None, per_category: int = 8):
        self.base = CategoryClassifier(per_category=per_category)

    def classify(self, coords) -> tuple:
        pts = np.asarray(coords, np.float32).reshape(-1, 3)
        if len(pts) == 0:
            return None, {}
        dist = self.base.distances(pts)
        return min(dist, key=dist.get), dist


def object_colour(item: dict) -> Optional[str]:
    """Dominant palette colour of the generated mesh as exported (area-weighted GLB vertex colours)."""
    col = item.get("colours")
    if col is not None:
        mesh = item["mesh"]
        return mesh_dominant_color(mesh.vertices.float().cpu().numpy(), mesh.faces.cpu().numpy(), col)
    g = item.get("gaussians")
    if g is not None:
        rgb = (0.28209479177387814 * g._features_dc.float().reshape(-1, 3) + 0.5).clamp(0, 1)
        return dominant_color(rgb.cpu().numpy(), g.get_opacity.float().reshape(-1).cpu().numpy())
    return None


# ------------------------------------------------------------------ pictures
def mesh_cloud(item: dict, n: int = 40000):
    """A SurfaceCloud (points, normals, colours) sampled on the generated mesh, for the data renderer."""
    from ..data.render import SurfaceCloud

    mesh = item.get("mesh")
    if mesh is None or len(mesh.faces) == 0:
        return None
    v = mesh.vertices.float().cpu().numpy()
    f = mesh.faces.cpu().numpy()
    col = item.get("colours")
    if col is None:
        col = np.full((len(v), 3), 0.7, np.float32)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    nrm = np.cross(b - a, c - a)
    area = np.linalg.norm(nrm, axis=1)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(f), size=n, p=area / area.sum())
    u, w = rng.random(n), rng.random(n)
    flip = u + w > 1
    u[flip], w[flip] = 1 - u[flip], 1 - w[flip]
    pts = a[idx] + u[:, None] * (b[idx] - a[idx]) + w[:, None] * (c[idx] - a[idx])
    normals = nrm[idx] / np.maximum(area[idx, None], 1e-12)
    colors = col[f[idx, 0]] * (1 - u - w)[:, None] + col[f[idx, 1]] * u[:, None] + col[f[idx, 2]] * w[:, None]
    return SurfaceCloud(pts.astype(np.float32), normals.astype(np.float32), colors.astype(np.float32),
                        spacing=float(np.sqrt(area.sum() / 2 / n)))


def render_item(item: dict, size: int = 160) -> np.ndarray:
    from ..data.render import render

    cloud = mesh_cloud(item)
    if cloud is None:
        return np.zeros((size, size, 3), np.uint8) + 40
    img = render(cloud, 135.0, 25.0, size=size, background=(1.0, 1.0, 1.0))
    return img[..., :3]


def save_grid(tiles: List[np.ndarray], labels: List[str], path: Path, cols: int = 6) -> None:
    from PIL import Image, ImageDraw

    if not tiles:
        return
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + cols - 1) // cols
    lab = 14
    canvas = Image.new("RGB", (cols * w, rows * (h + lab)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (t, s) in enumerate(zip(tiles, labels)):
        x, y = (i % cols) * w, (i // cols) * (h + lab)
        canvas.paste(Image.fromarray(t), (x, y))
        draw.text((x + 2, y + h), s[:32], fill=(0, 0, 0))
    canvas.save(path)


# ------------------------------------------------------------------ main evaluation
def same_category_baseline(records: List[dict], start: int) -> dict:
    """IoU of each input with another held-out object of its category (records `len(records)` later)."""
    from ..data.dataset import evaluation_set

    others = evaluation_set(len(records), "heldout", start=start + len(records))
    pairs = [(r["coords"], o["coords"]) for r, o in zip(records, others) if r["category"] == o["category"]]
    return {"baseline_iou": float(np.mean([voxel_iou(a, b) for a, b in pairs])),
            "baseline_solid_iou": float(np.mean([solid_iou(a, b) for a, b in pairs])), "baseline_pairs": len(pairs)}


def evaluate(model: str, image_model: Optional[str], n: int, out: str | Path, device=None, batch: int = 20,
             seed: int = 0, log=print, ss_params=None, slat_params=None, structure_only: bool = False,
             start: int = 0) -> dict:
    from PIL import Image

    from ..data.dataset import evaluation_set
    from trellis_backend.pipeline.conditioning.preprocess import preprocess_image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.time()
    records = evaluation_set(n, "heldout", start=start, image_size=256 if image_model else None)
    clf = DeviceClassifier(device)
    log(f"[eval] {n} held-out records and classifier references in {time.time() - t0:.0f}s")
    results = {"n": n, "start": start, "device": str(device), "structure_only": structure_only}
    runs = [("text", model)] + ([("image", image_model)] if image_model else [])
    for kind, folder in runs:
        t1 = time.time()
        m = LoadedModel(folder, device, structure_only)
        items = []
        tiles, labels = [], []
        for s in range(0, n, batch):
            recs = records[s:s + batch]
            if kind == "text":
                cond = m.conditioner.get_cond([r["caption"] for r in recs])
            else:
                pre = [preprocess_image(Image.fromarray(r["image"], "RGBA")) for r in recs]
                cond = m.conditioner.get_cond(pre)
            gen = generate_batch(m, cond["cond"], cond["neg_cond"][:1], [seed + start + s + i for i in range(len(recs))],
                                 ss_params, slat_params, decode=not structure_only)
            for r, g in zip(recs, gen):
                pred_cat, _ = clf.classify(g["coords"].numpy())
                colour = object_colour(g)
                it = {"seed": r["seed"], "category": r["category"], "color": r["color"],
                      "prompt": r["caption"] if kind == "text" else None,
                      "voxels": int(len(g["coords"])), "pred_category": pred_cat, "pred_color": colour,
                      "category_ok": pred_cat == r["category"], "color_ok": colour == r["color"]}
                if kind == "image":
                    it["iou"] = voxel_iou(g["coords"].numpy(), r["coords"]) if len(g["coords"]) else 0.0
                    it["solid_iou"] = solid_iou(g["coords"].numpy(), r["coords"]) if len(g["coords"]) else 0.0
                items.append(it)
                if len(tiles) < 24 and not structure_only:
                    tiles.append(render_item(g))
                    labels.append((r["caption"] if kind == "text" else f"{r['color']} {r['category']}")
                                  + ("" if it["category_ok"] and it["color_ok"] else " (x)"))
            log(f"[eval] {kind}: {len(items)}/{n}")
        if kind == "image":  # input image next to the generation
            inputs = [np.asarray(Image.fromarray(r["image"]).convert("RGBA").resize((160, 160))) for r in records[:12]]
            merged, mlabels = [], []
            for i in range(min(12, len(tiles))):
                rgba = inputs[i].astype(np.float32) / 255.0
                rgb = (rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])) * 255
                merged += [rgb.astype(np.uint8), tiles[i]]
                mlabels += ["input " + labels[i].replace(" (x)", ""),
                            f"IoU {items[i]['solid_iou']:.2f} (shell {items[i]['iou']:.2f})"]
            tiles, labels = merged, mlabels
        save_grid(tiles, labels, out / f"eval_{kind}.png")
        summary = {"generations": len(items),
                   "category_accuracy": float(np.mean([i["category_ok"] for i in items])),
                   "color_accuracy": float(np.mean([i["color_ok"] for i in items])),
                   "empty": int(sum(i["voxels"] == 0 for i in items)),
                   "mean_voxels": float(np.mean([i["voxels"] for i in items])),
                   "seconds": round(time.time() - t1, 1)}
        if kind == "image":
            summary["mean_iou"] = float(np.mean([i["iou"] for i in items]))
            summary["mean_solid_iou"] = float(np.mean([i["solid_iou"] for i in items]))
            summary.update(same_category_baseline(records, start))
        per_cat = {}
        for c in CATEGORIES:
            sel = [i for i in items if i["category"] == c]
            if sel:
                per_cat[c] = {"category": float(np.mean([i["category_ok"] for i in sel])),
                              "color": float(np.mean([i["color_ok"] for i in sel]))}
        results[kind] = {"summary": summary, "per_category": per_cat, "items": items,
                         "sampler": {"ss": ss_params or m.ss_params, "slat": slat_params or m.slat_params}}
        log(f"[eval] {kind}: " + json.dumps(summary))
        del m
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "results.md").write_text(markdown_table(results))
    return results


def markdown_table(results: dict) -> str:
    lines = ["| condition | generations | category accuracy | colour accuracy | mean IoU (shell) | mean IoU (solid, headline) | empty |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for kind in ("text", "image"):
        if kind not in results:
            continue
        s = results[kind]["summary"]
        iou = f"{s['mean_iou']:.3f}" if "mean_iou" in s else "-"
        siou = f"{s['mean_solid_iou']:.3f}" if "mean_solid_iou" in s else "-"
        col = "-" if results.get("structure_only") else f"{s['color_accuracy']:.1%}"
        lines.append(f"| {kind} | {s['generations']} | {s['category_accuracy']:.1%} | {col} | "
                     f"{iou} | {siou} | {s['empty']} |")
    if "image" in results and "baseline_solid_iou" in results["image"]["summary"]:
        s = results["image"]["summary"]
        lines.append(f"| (for scale: another object of the input's category) | {s['baseline_pairs']} | - | - | "
                     f"{s['baseline_iou']:.3f} | {s['baseline_solid_iou']:.3f} | - |")
    lines += ["", "| category | " + " | ".join(k for k in ("text", "image") if k in results) + " |",
              "| --- | " + " | ".join("---" for k in ("text", "image") if k in results) + " |"]
    for c in CATEGORIES:
        cells = []
        for k in ("text", "image"):
            if k in results:
                pc = results[k]["per_category"].get(c)
                colour = "" if results.get("structure_only") else f", colour {pc['color']:.0%}" if pc else ""
                cells.append(f"cat {pc['category']:.0%}{colour}" if pc else "-")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def time_pipeline(folder: str, prompts: List[str], device="cpu", log=print) -> list:
    """Wall time of `TrellisPipeline.generate` (mesh + Gaussians) for each prompt / image path."""
    from trellis_backend.pipeline import TrellisPipeline

    t = time.time()
    pipe = TrellisPipeline.from_pretrained(folder, device=device)
    load = time.time() - t
    rows = []
    for i, p in enumerate(prompts):
        t = time.time()
        kw = {"prompt": p} if pipe.kind == "text" else {"image": p}
        res = pipe.generate(seed=i, formats=("mesh", "gaussians"), **kw)
        rows.append({"input": str(p), "seconds": round(time.time() - t, 2), "load_seconds": round(load, 2),
                     "voxels": res["meta"].get("voxels"), "faces": res["meta"].get("faces"),
                     "timings": {k: round(v, 2) for k, v in res["meta"]["timings"].items()}})
        log(f"[timing] {rows[-1]}")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m trellis_lab.training.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/trellis-embedded")
    ap.add_argument("--image-model", default=None, help="image pipeline folder (default: <model>-image if present)")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first held-out record (validation: e.g. 1000)")
    ap.add_argument("--ss-params", default=None, help="JSON overriding pipeline.json's stage-1 sampler params")
    ap.add_argument("--slat-params", default=None)
    ap.add_argument("--structure-only", action="store_true",
                    help="score stage 1 only (category, IoU); colour is not measured")
    ap.add_argument("--pipeline-timing", type=int, default=0, help="also time K generations via TrellisPipeline")
    args = ap.parse_args(argv)
    image_model = args.image_model
    if image_model is None and Path(f"{args.model.rstrip('/')}-image", "pipeline.json").is_file():
        image_model = f"{args.model.rstrip('/')}-image"
    if image_model == "none":
        image_model = None
    res = evaluate(args.model, image_model, args.n, args.out, args.device, args.batch, args.seed,
                   ss_params=json.loads(args.ss_params) if args.ss_params else None,
                   slat_params=json.loads(args.slat_params) if args.slat_params else None,
                   structure_only=args.structure_only, start=args.start)
    print(markdown_table(res))
    if args.pipeline_timing:
        from ..data.dataset import evaluation_set

        prompts = [r["caption"] for r in evaluation_set(args.pipeline_timing, "heldout")]
        rows = time_pipeline(args.model, prompts, args.device or "cpu")
        Path(args.out, "timing.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
