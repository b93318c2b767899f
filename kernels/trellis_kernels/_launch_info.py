"""Record of the last Triton launch of a kernel module (block config, registers, spills, shared memory, wgmma),
for the benchmark's notes column. Recording is two dict stores; the summary is built only when asked."""
from __future__ import annotations


def record(store: dict, kernel, config=None, **meta) -> None:
    store["kernel"] = kernel
    store["config"] = config
    store["meta"] = meta


def summary(store: dict) -> str:
    parts = []
    cfg = store.get("config")
    if cfg is not None:
        kw = getattr(cfg, "kwargs", cfg)
        short = {"BLOCK_M": "BM", "BLOCK_N": "BN", "BLOCK_K": "BK"}
        parts.append(" ".join(f"{short.get(k, k)}{v}" for k, v in kw.items() if k in short))
        if isinstance(cfg, dict):
            w, s = cfg.get("num_warps"), cfg.get("num_stages")
        else:
            w, s = getattr(cfg, "num_warps", None), getattr(cfg, "num_stages", None)
        if w is not None:
            parts.append(f"w{w} s{s}")
    split = (store.get("meta") or {}).get("split", 1)
    if split > 1:
        parts.append(f"split-K {split}")
    k = store.get("kernel")
    if k is not None:
        try:
            if hasattr(k, "_init_handles"):
                k._init_handles()
            parts.append(f"{k.n_regs} regs, {k.n_spills} spills, {k.metadata.shared // 1024} KB smem")
            ptx = k.asm.get("ptx", "") if hasattr(k, "asm") else ""
            parts.append("wgmma" if "wgmma" in ptx else ("mma" if "mma.sync" in ptx else "no mma"))
        except Exception as exc:  # introspection is best effort
            parts.append(f"(no kernel info: {type(exc).__name__})")
    return "; ".join(p for p in parts if p)
