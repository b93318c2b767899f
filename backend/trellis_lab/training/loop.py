"""The common training loop: AdamW, bf16 autocast on CUDA, optional EMA, resumable checkpoints.

A stage subclasses `Trainer` and implements ``losses(step) -> dict`` (``'loss'`` is the
one optimised, every entry is logged). The loop stops at ``max_steps`` or when
``max_seconds`` of wall time are used, whichever comes first, and always saves before
returning, so a job under a hard time limit keeps its progress.

Checkpoint (``<out>/state.pt``): step, every trainable model's fp32 state_dict, the
optimizer, EMA copies, the RNG states and stage extras. ``--resume`` continues from it;
a state written with ``light=True`` (weights only, small enough to carry between
machines) resumes with a fresh optimizer. Losses go to ``<out>/log.jsonl``.
"""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn as nn


def _float32_state(model: nn.Module) -> dict:
    return {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
            for k, v in model.state_dict().items()}


def prepare_for_training(model: nn.Module) -> nn.Module:
    """Train in float32 master weights (autocast provides bf16 compute on CUDA).

    Models built with ``use_fp16`` hold a float16 torso; it is cast to float32 for the
    optimizer and the forward dtype follows.
    """
    if hasattr(model, "convert_to_fp32"):
        model.convert_to_fp32()
    for attr in ("dtype",):
        if getattr(model, attr, None) is torch.float16:
            setattr(model, attr, torch.float32)
    if hasattr(model, "use_fp16"):
        model.use_fp16 = False
    return model.float()


class Trainer:
    """Base training loop; see the module doc."""

    def __init__(self, models: Dict[str, nn.Module], out: str | Path, *, lr: float = 2e-4,
                 weight_decay: float = 0.01, betas=(0.9, 0.99), max_steps: int = 1000,
                 max_seconds: Optional[float] = None, save_every: int = 500, log_every: int = 25,
                 warmup: int = 100, min_lr_ratio: float = 0.1, ema_rate: Optional[float] = None,
                 grad_clip: float = 1.0, device=None, amp: bool = True, frozen: Optional[Dict[str, nn.Module]] = None,
                 log=print):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.models = {k: prepare_for_training(m).to(self.device).train() for k, m in models.items()}
        self.frozen = {k: m.to(self.device).eval() for k, m in (frozen or {}).items()}
        for m in self.frozen.values():
            m.requires_grad_(False)
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.max_steps, self.max_seconds = int(max_steps), max_seconds
        self.save_every, self.log_every, self.warmup = save_every, log_every, warmup
        self.min_lr_ratio, self.base_lr, self.grad_clip = min_lr_ratio, lr, grad_clip
        self.amp = amp and self.device.type == "cuda"
        params = [p for m in self.models.values() for p in m.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas,
                                           **({"fused": True} if self.device.type == "cuda" else {}))
        self.ema_rate = ema_rate
        self.ema = {k: copy.deepcopy(m).eval().requires_grad_(False) for k, m in self.models.items()} if ema_rate else {}
        self.step = 0
        self._start_step = 0
        self.extra: dict = {}
        self.log = log or (lambda *a, **k: None)
        self.t_start = time.time()
        self._history: list = []

    # ------------------------------------------------------------------ interface
    def losses(self, step: int) -> Dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_save(self) -> None:
        """Hook: export inference checkpoints next to the state."""

    # ------------------------------------------------------------------ schedule
    def lr_factor(self) -> float:
        w = min(1.0, (self.step - self._start_step + 1) / max(1, self.warmup))
        frac = self.progress()
        return w * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    def progress(self) -> float:
        """Fraction of the run done (steps or wall time, whichever is further)."""
        f = (self.step - self._start_step) / max(1, self.max_steps - self._start_step)
        if self.max_seconds:
            f = max(f, (time.time() - self.t_start) / self.max_seconds)
        return f

    # ------------------------------------------------------------------ checkpoints
    @property
    def state_path(self) -> Path:
        return self.out / "state.pt"

    def save(self, light: bool = False, path: Optional[Path] = None) -> Path:
        state = {"step": self.step, "models": {k: _float32_state(m) for k, m in self.models.items()},
                 "extra": self.extra}
        if not light:
            state["optimizer"] = self.optimizer.state_dict()
            state["ema"] = {k: _float32_state(m) for k, m in self.ema.items()}
            state["rng"] = {"torch": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        path = Path(path or self.state_path)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        return path

    def load(self, path: Optional[Path] = None) -> bool:
        path = Path(path or self.state_path)
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=False)
        for k, sd in state["models"].items():
            if k in self.models:
                self.models[k].load_state_dict(sd)
        self.step = int(state.get("step", 0))
        self.extra.update(state.get("extra", {}))
        if "optimizer" in state:
            try:
                self.optimizer.load_state_dict(state["optimizer"])
            except ValueError as e:  # a different set of trainable models: start the optimizer afresh
                self.log(f"[train] optimizer state not restored ({e})")
        ema_states = state.get("ema", {})
        for k in self.ema:  # a light state has no EMA: the EMA starts from the loaded weights
            self.ema[k].load_state_dict(ema_states.get(k, state["models"].get(k, self.models[k].state_dict())))
        if state.get("rng"):
            torch.set_rng_state(state["rng"]["torch"])
            if state["rng"].get("cuda") is not None and torch.cuda.is_available():
                try:
                    torch.cuda.set_rng_state_all(state["rng"]["cuda"])
                except Exception:
                    pass
        self.log(f"[train] resumed {path} at step {self.step}")
        return True

    # ------------------------------------------------------------------ loop
    @torch.no_grad()
    def _update_ema(self) -> None:
        for k, m in self.models.items():
            for pe, p in zip(self.ema[k].parameters(), m.parameters()):
                pe.lerp_(p, 1 - self.ema_rate)

    def train_step(self) -> Dict[str, float]:
        for g in self.optimizer.param_groups:
            g["lr"] = self.base_lr * self.lr_factor()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            terms = self.losses(self.step)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            self.log(f"[train] non-finite loss at step {self.step}: {({k: float(v) for k, v in terms.items()})}")
            self.optimizer.zero_grad(set_to_none=True)
            return {k: float(v) for k, v in terms.items()}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            params = [p for m in self.models.values() for p in m.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        self.optimizer.step()
        if self.ema:
            self._update_ema()
        return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}

    def run(self) -> Dict[str, float]:
        self._start_step = self.step
        self.t_start = time.time()
        acc: Dict[str, float] = {}
        n = 0
        last: Dict[str, float] = {}
        logf = open(self.out / "log.jsonl", "a")
        try:
            while self.step < self.max_steps:
                if self.max_seconds and time.time() - self.t_start > self.max_seconds:
                    break
                terms = self.train_step()
                self.step += 1
                for k, v in terms.items():
                    acc[k] = acc.get(k, 0.0) + v
                n += 1
                if self.step % self.log_every == 0 or self.step == self.max_steps:
                    last = {k: v / n for k, v in acc.items()}
                    rec = {"step": self.step, "time": round(time.time() - self.t_start, 1),
                           "lr": self.optimizer.param_groups[0]["lr"], **{k: round(v, 5) for k, v in last.items()}}
                    logf.write(json.dumps(rec) + "\n")
                    logf.flush()
                    self._history.append(rec)
                    if self.log:
                        self.log(f"[{self.name}] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                         for k, v in rec.items()))
                    acc, n = {}, 0
                if self.save_every and self.step % self.save_every == 0:
                    self.save()
        finally:
            logf.close()
        if n:
            last = {k: v / n for k, v in acc.items()}
        self.save()
        self.on_save()
        return last

    @property
    def name(self) -> str:
        return type(self).__name__

    def eval_models(self) -> Dict[str, nn.Module]:
        """The weights to export: EMA copies when kept, else the trained ones."""
        return self.ema if self.ema else self.models
