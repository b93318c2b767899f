#!/usr/bin/env python
"""CPU timing of the embedded-size pipeline, stage by stage, at several voxel counts.

Builds a random-weight pipeline folder of the embedded model's sizes
(``make_random_model(kind='text', size='embedded')``; timing does not depend on the
weight values, only on the voxel count) in a temp dir (or reuses ``--folder``), loads it
through the product path ``TrellisPipeline.from_pretrained(folder, device="cpu")`` and times:

* condition   MiniLM text encoding
* stage1      sparse-structure flow sampling + SS decoder (the random model's own structure)
* stage2      SLat flow sampling on a fixed structure (a spherical shell of ~N surface voxels
              in the 64^3 grid, bypassing stage 1 so the voxel count is controlled), and on the
              random stage 1's own output (scattered voxels: ~N transformer tokens instead of
              ~N/4 for a surface, so a worst case for the attention)
* mesh_net    mesh decoder network (transformer + 2 subdivision blocks, sparse convs at 128^3/256^3)
* flexicubes  sparse FlexiCubes extraction
* gaussians   Gaussian decoder
* export      GLB (vertex colours from the Gaussians) + PLY writing

and, with ``--generate``, the end-to-end ``pipe.generate(prompt=..., formats=("mesh","gaussians"))``.

    .venv/bin/python scripts/cpu_timing.py                       # 2K, 5K, 8K voxels
    .venv/bin/python scripts/cpu_timing.py --voxels 5000 --profile 5000   # + torch.profiler top ops
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch


def shell_coords(target: int, res: int = 64) -> torch.Tensor:
    """[N, 4] int32 voxels of a spherical shell (6-connected surface of a ball) with about `target` voxels."""
    g = torch.stack(torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij"), -1).reshape(-1, 3)
    centre = (res - 1) / 2
    d = ((g.float() - centre) ** 2).sum(-1).sqrt()
    best = None
    lo, hi = 1.0, res / 2 - 1.0
    for _ in range(40):  # bisect the radius so that the surface-voxel count is ~target
        r = (lo + hi) / 2
        inside = (d <= r).reshape(res, res, res)
        pad = torch.nn.functional.pad(inside[None, None].float(), (1, 1, 1, 1, 1, 1))
        # an inside voxel with an outside 6-neighbour is on the surface
        neigh_min = -torch.nn.functional.max_pool3d(-pad, 3, 1, 0)[0, 0]  # min over the 3^3 neighbourhood
        surf = inside & (neigh_min < 0.5)
        n = int(surf.sum())
        best = surf
        if n < target:
            lo = r
        else:
            hi = r
        if abs(n - target) < target * 0.01:
            break
    idx = torch.argwhere(best).int()
    return torch.cat([torch.zeros(idx.shape[0], 1, dtype=torch.int32), idx], 1)


class Timer:
    def __init__(self):
        self.t = {}

    def __call__(self, name):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.t[name] = timer.t.get(name, 0.0) + time.perf_counter() - self.t0
        return _Ctx()


def count_guided(params: dict) -> int:
    from trellis_backend.pipeline.samplers import timestep_schedule

    lo, hi = params.get("cfg_interval", (0.0, 1.0))
    if not params.get("cfg_strength"):
        return 0
    return sum(lo <= t <= hi for t, _ in timestep_schedule(params["steps"], params.get("rescale_t", 1.0)))


def time_structure(pipe, cond, coords, slat_steps, out_dir: Path, tag: str) -> dict:
    from trellis_backend.pipeline import export

    tm = Timer()
    params = pipe.sampler_params("slat", slat_steps, None)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        with tm("stage2"):
            slat = pipe.sample_latent(cond, coords, gen, params)
        mesh_dec = pipe.get_model("slat_decoder_mesh")
        with tm("mesh_net"):
            feats = mesh_dec.decode_features(slat)
        with tm("flexicubes"):
            mesh = mesh_dec.to_representation(feats)[0]
        gs_dec = pipe.get_model("slat_decoder_gs")
        with tm("gaussians"):
            gaussians = gs_dec(slat)[0]
        with tm("export"):
            export.write_glb(out_dir / f"{tag}.glb", mesh, gaussians=gaussians)
            export.write_ply(out_dir / f"{tag}.ply", gaussians)
    tm.t["fine_voxels"] = feats.coords.shape[0]
    tm.t["coarse"] = int(torch.unique(coords[:, 1:].long() // 2, dim=0).shape[0])  # stage-2 transformer tokens
    tm.t["faces"] = int(mesh.faces.shape[0])
    tm.t["steps"] = params["steps"]
    tm.t["guided"] = count_guided(params)
    return tm.t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voxels", type=int, nargs="+", default=[2000, 5000, 8000])
    ap.add_argument("--folder", default=None, help="reuse this embedded random folder (built there if missing)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--slat-steps", type=int, default=None, help="override stage-2 steps (default: pipeline.json)")
    ap.add_argument("--repeat", type=int, default=1, help="time each structure this many times, keep the best")
    ap.add_argument("--generate", action="store_true", help="also time the end-to-end generate()")
    ap.add_argument("--no-stage1", action="store_true", help="skip stage 1 timing")
    ap.add_argument("--profile", type=int, default=None, metavar="N",
                    help="torch.profiler table of the structure with N voxels (stage 2 one step + decoders)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    from trellis_backend.pipeline.pipeline import TrellisPipeline
    from trellis_lab.random_model import make_random_model
    from trellis_backend.sparse.conv import _resolve_backend

    tmp = tempfile.TemporaryDirectory()
    folder = Path(args.folder) if args.folder else Path(tmp.name) / "embedded-text"
    if not (folder / "pipeline.json").is_file():
        t = time.perf_counter()
        make_random_model(folder, kind="text", size="embedded")
        print(f"built random embedded folder {folder} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    out_dir = Path(tmp.name) / "out"
    out_dir.mkdir(parents=True, exist_ok=True)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu count {os.cpu_count()}, "
          f"conv backend {_resolve_backend(torch.device('cpu'))}, load {os.getloadavg()[0]:.2f}")
    t = time.perf_counter()
    pipe = TrellisPipeline.from_pretrained(folder, device="cpu")
    for key in ("sparse_structure_flow_model", "sparse_structure_decoder", "slat_flow_model",
                "slat_decoder_mesh", "slat_decoder_gs"):
        pipe.get_model(key)
    print(f"load {time.perf_counter() - t:.2f}s")
    prompt = "a red wooden chair with four thin legs"
    with torch.no_grad():
        t = time.perf_counter()
        cond, _ = pipe.encode_condition(prompt)
        t_cond = time.perf_counter() - t
        print(f"condition {t_cond:.2f}s")
        if not args.no_stage1:
            ss = pipe.sparse_structure_sampler_params
            t = time.perf_counter()
            coords1 = pipe.sample_structure(cond, torch.Generator().manual_seed(0), dict(ss))
            t1 = time.perf_counter() - t
            # the SS decoder alone, on a latent of the right shape
            flow = pipe.get_model("sparse_structure_flow_model")
            z = torch.randn(1, flow.in_channels, flow.resolution, flow.resolution, flow.resolution)
            t = time.perf_counter()
            pipe.get_model("sparse_structure_decoder")(z)
            td = time.perf_counter() - t
            print(f"stage1 {t1:.2f}s ({ss['steps']} steps, {count_guided(ss)} with CFG; SS decoder {td:.2f}s) "
                  f"-> {coords1.shape[0]} voxels")

    structures = [(f"shell {n}", shell_coords(n)) for n in args.voxels]
    if not args.no_stage1:
        structures.append(("stage-1 output", coords1))
    rows = []
    for label, coords in structures:
        n = coords.shape[0]
        best = None
        for r in range(args.repeat):
            res = time_structure(pipe, cond, coords, args.slat_steps, out_dir, f"v{n}_{len(rows)}_{r}")
            if best is None or sum(res[k] for k in ("stage2", "mesh_net", "flexicubes", "gaussians", "export")) < \
                    sum(best[k] for k in ("stage2", "mesh_net", "flexicubes", "gaussians", "export")):
                best = res
        rows.append((label, n, best))

    cols = ("stage2", "mesh_net", "flexicubes", "gaussians", "export")
    print()
    print("| structure | voxels | tokens | stage2 (steps/CFG) | per step (CFG / no CFG est.) | mesh net | flexicubes "
          "| gaussians | export | decoders+export | stage2+dec+export | 256³ voxels | faces |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, n, r in rows:
        per = r["stage2"] / (r["guided"] * 2 + (r["steps"] - r["guided"])) if r["steps"] else 0.0
        dec = r["mesh_net"] + r["flexicubes"] + r["gaussians"] + r["export"]
        print(f"| {label} | {n} | {r['coarse']} | {r['stage2']:.2f}s ({r['steps']}/{r['guided']}) | {2 * per:.2f}s / {per:.2f}s "
              f"| {r['mesh_net']:.2f}s | {r['flexicubes']:.2f}s | {r['gaussians']:.2f}s | {r['export']:.2f}s "
              f"| {dec:.2f}s | {sum(r[c] for c in cols):.2f}s | {r['fine_voxels']} | {r['faces']} |")
    print("(tokens: voxels after the flow's 2x downsampling = transformer tokens per item; per step: stage2 / "
          "(2*guided + unguided) forwards, a CFG step runs cond+uncond as one batch of 2)")

    if args.generate:
        t = time.perf_counter()
        res = pipe.generate(prompt=prompt, seed=0, formats=("mesh", "gaussians"), output_dir=out_dir, name="gen")
        total = time.perf_counter() - t
        tm = res["meta"]["timings"]
        print(f"\ngenerate(): {total:.2f}s, {res['meta']['voxels']} voxels, {res['meta'].get('faces')} faces; "
              + ", ".join(f"{k} {v:.2f}s" for k, v in tm.items()))

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        coords = shell_coords(args.profile)
        params = pipe.sampler_params("slat", 2, None)
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            slat = pipe.sample_latent(cond, coords, torch.Generator().manual_seed(0), params)
            pipe.decode(slat, ("mesh", "gaussians"))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
