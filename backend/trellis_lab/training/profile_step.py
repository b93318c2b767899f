"""Where a stage-2 flow training step spends its time, on synthetic shells (no data needed).

    python -m trellis_lab.training.profile_step [--batch 32] [--voxels 5000] [--steps 5]

Builds the embedded SLat flow, feeds `--batch` sphere shells of about `--voxels` voxels
each, times forward + backward + AdamW (bf16 autocast on CUDA, the torch gather-GEMM conv) and
prints the torch profiler's top operators by device and host time.
"""
from __future__ import annotations

import argparse
import time

import torch

from trellis_backend.sparse import SparseTensor
from .checkpoints import build_fresh
from .configs import model_configs


def shells(batch: int, voxels: int, device) -> torch.Tensor:
    g = torch.stack(torch.meshgrid(*[torch.arange(64)] * 3, indexing="ij"), -1).reshape(-1, 3)
    parts = []
    for b in range(batch):
        radius = (voxels / (4 * 3.1416 * 1.5)) ** 0.5 * (0.9 + 0.2 * b / max(1, batch - 1))
        r = (g.float() - 31.5).norm(dim=1)
        sel = g[(r > radius - 0.75) & (r < radius + 0.75)]
        parts.append(torch.cat([torch.full((len(sel), 1), b), sel], 1))
    return torch.cat(parts).int().to(device)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--voxels", type=int, default=5000)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_fresh(*model_configs()["slat_flow_model"][1:]).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    coords = shells(args.batch, args.voxels, dev)
    cond = torch.randn(args.batch, 32, 384, device=dev)
    print(f"[profile] {args.batch} shells, {len(coords)} voxels, device {dev}")

    def step():
        x = SparseTensor(torch.randn(len(coords), 8, device=dev), coords)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = model(x, torch.rand(args.batch, device=dev) * 1000, cond).feats.float().square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.time()
    for _ in range(args.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    print(f"[profile] {(time.time() - t) / args.steps * 1000:.1f} ms per step")
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    for key in (["cuda_time_total"] if dev.type == "cuda" else []) + ["cpu_time_total"]:
        print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))


if __name__ == "__main__":
    main()
