"""Rectified-flow Euler samplers (classifier-free guidance, guidance interval, rescale_t).

Math identical to the reference (microsoft/TRELLIS `pipelines/samplers`):

* flow time runs from t = 1 (noise) to t = 0 (data); the schedule is
  ``t = linspace(1, 0, steps + 1)`` then ``t <- r t / (1 + (r - 1) t)`` (r = rescale_t);
* the network sees ``1000 * t`` (float32, one value per batch item) and predicts a velocity v;
* classifier-free guidance ``v = (1 + w) v_cond - w v_uncond`` is applied only while
  ``cfg_interval[0] <= t <= cfg_interval[1]`` (FlowEulerGuidanceIntervalSampler; the plain
  Cfg sampler guides at every step, the plain sampler never);
* Euler: ``x_prev = x_t - (t - t_prev) v``; per-step ``pred_x_0 = (1 - s) x_t - (s + (1 - s) t) v``
  with s = sigma_min, ``pred_x_t`` = x_prev (the names the reference returns).

What differs from the reference is only how the work is scheduled:

* ``batch_cfg=True`` (default) runs the conditional and unconditional (and, for
  multi-image multidiffusion, every image's) predictions as ONE network forward: the
  dense batch is concatenated; a sparse batch is duplicated with shifted batch indices,
  built once per `sample()` call so the sparse tensor's spatial cache (neighbour maps,
  window partitions) is computed once and shared by every step;
* conditions are concatenated once per call, not once per step;
* no host synchronisation inside the loop (the schedule and the guidance decision are
  host floats; no `.item()`);
* ``progress(stage, step, total, message)`` after every step and a cooperative
  ``cancel.is_set()`` check before every step (raises `trellis_backend.errors.Cancelled`);
* ``keep_trajectory`` controls whether the per-step predictions are kept (memory).

TRELLIS.2's parameterisation (microsoft/TRELLIS.2 `pipelines/samplers`), chosen by passing
``guidance_strength`` instead of ``cfg_strength``:

* ``v = s v_cond + (1 - s) v_uncond`` with s = guidance_strength inside ``guidance_interval``
  (else s = 1: the conditional prediction alone; s = 0 uses the unconditional one alone);
* CFG rescale (``guidance_rescale`` r > 0): with ``x0(v) = (1 - σ) x_t - (σ + (1 - σ) t) v``,
  ``x0 = r x0(v) std(x0(v_cond)) / std(x0(v)) + (1 - r) x0(v)`` and v is recomputed from x0. std is per
  batch item: for dense tensors torch's (unbiased) std over all non-batch dims; for sparse tensors
  ``sqrt(E[x²] - E[x]²)`` over the item's voxels and channels, as the reference's SparseTensor.std;
* ``concat_cond`` (a tensor on the sample's voxels, e.g. the texture flow's shape latent) is passed
  to the model at every step, stacked like x when the step's predictions are batched.

Multi-image conditioning (`multi_image=`): the condition holds one entry per image and
the negative condition one entry. 'stochastic' uses image ``i % n`` at step i;
'multidiffusion' averages the velocity over all images (then guides with the negative),
exactly like the reference's `inject_sampler_multi_image`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import Cancelled

ProgressFn = Callable[[str, int, int, str], None]


@dataclass
class SampleResult:
    samples: Any
    pred_x_t: List[Any] = field(default_factory=list)
    pred_x_0: List[Any] = field(default_factory=list)

    # dict-style access like the reference's edict
    def __getitem__(self, key):
        return getattr(self, key)


def timestep_schedule(steps: int, rescale_t: float = 1.0) -> List[Tuple[float, float]]:
    """(t, t_prev) pairs of the reference schedule, as host floats."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t_seq = np.linspace(1, 0, steps + 1)
    t_seq = rescale_t * t_seq / (1 + (rescale_t - 1) * t_seq)
    return [(float(t_seq[i]), float(t_seq[i + 1])) for i in range(steps)]


def _is_sparse(x) -> bool:
    return hasattr(x, "feats") and hasattr(x, "coords")


def _batch_size(x) -> int:
    return int(x.shape[0])


class _Replicator:
    """Stacks k copies of a (dense or sparse) batch into one batch, and splits results.

    For sparse tensors the k-fold coordinate set is built once, so every step's stacked
    input is `template.replace(feats)` and shares one spatial cache.
    """

    def __init__(self, x, k: int):
        self.k = k
        self.sparse = _is_sparse(x)
        if self.k == 1:
            self.template = x
            return
        if self.sparse:
            from ..sparse import SparseTensor

            b = _batch_size(x)
            n = x.coords.shape[0]
            coords = x.coords.repeat(k, 1)
            offsets = torch.arange(k, device=coords.device, dtype=coords.dtype).repeat_interleave(n) * b
            coords[:, 0] += offsets
            base_layout = x.layout
            layout = [slice(s.start + j * n, s.stop + j * n) for j in range(k) for s in base_layout]
            self.n = n
            self.template = SparseTensor(
                x.feats.repeat(k, *([1] * (x.feats.dim() - 1))), coords,
                shape=(k * b, *x.feats.shape[1:]), layout=layout,
            )

    def stack(self, x):
        if self.k == 1:
            return x
        if self.sparse:
            return self.template.replace(torch.cat([x.feats] * self.k, dim=0))
        return torch.cat([x] * self.k, dim=0)

    def split(self, out) -> List[torch.Tensor]:
        """k velocity tensors (feats only for sparse outputs)."""
        feats = out.feats if self.sparse else out
        if self.k == 1:
            return [feats]
        return list(feats.chunk(self.k, dim=0))


def _expand_cond(cond, b: int):
    """The reference's rule: a condition of batch 1 is repeated to the sample batch."""
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor) and cond.shape[0] == 1 and b > 1:
        return cond.repeat(b, *([1] * (cond.dim() - 1)))
    if isinstance(cond, list) and len(cond) == 1 and b > 1:
        return cond * b
    return cond


def _cat_conds(groups: List[Any]):
    """One batched condition from several: tensors along the batch, per-item token lists end to end."""
    if isinstance(groups[0], list):
        return [c for g in groups for c in g]
    return torch.cat(groups, dim=0)


def _item_std(x0: torch.Tensor, template) -> torch.Tensor:
    """Per batch item std of x0 (dense `[B, ...]`, or the feats of the sparse `template`'s voxels), shaped to
    broadcast against x0 (the reference's Tensor.std / SparseTensor.std)."""
    if template is None:
        return x0.std(dim=list(range(1, x0.dim())), keepdim=True)
    lengths = torch.as_tensor(template.seqlens, device=x0.device)
    flat = x0.reshape(x0.shape[0], -1)
    mean = torch.segment_reduce(flat.mean(dim=1), "mean", lengths=lengths)
    mean2 = torch.segment_reduce((flat ** 2).mean(dim=1), "mean", lengths=lengths)
    std = (mean2 - mean ** 2).sqrt()
    return std[template.batch_index].reshape(-1, *[1] * (x0.dim() - 1))


class FlowEulerSampler:
    """Euler sampler of a rectified-flow model (no guidance).

    Args:
        sigma_min: minimum noise scale of the flow (1e-5 in the released configs).
    """

    guidance = "none"

    def __init__(self, sigma_min: float = 1e-5):
        self.sigma_min = sigma_min

    # ----------------------------------------------------------------- maths
    def _v_to_xstart(self, x_t, t: float, v):
        s = self.sigma_min
        return (1 - s) * x_t - (s + (1 - s) * t) * v

    def _renoise(self, x, t_from: float, t_to: float, sparse: bool, generator=None):
        """Forward process from t_from up to t_to (> t_from): x ← a·x + b·ε, matching the flow's marginals."""
        s = self.sigma_min
        scale = lambda t: s + (1 - s) * t  # noqa: E731
        a = (1 - t_to) / (1 - t_from) if t_from < 1 else 0.0
        b = math.sqrt(max(scale(t_to) ** 2 - (a * scale(t_from)) ** 2, 0.0))
        feats = x.feats if sparse else x
        eps = torch.randn(feats.shape, generator=generator).to(device=feats.device, dtype=feats.dtype)
        out = a * feats + b * eps
        return x.replace(out) if sparse else out

    @staticmethod
    def _aligned_concat_cond(noise, concat_cond, sparse: bool):
        """`concat_cond` on the noise's own coordinate tensor (checked once, so no step compares coords)."""
        if not sparse:
            if concat_cond.shape[0] != noise.shape[0]:
                raise ValueError(f"concat_cond has batch {concat_cond.shape[0]}, the sample {noise.shape[0]}")
            return concat_cond
        if not _is_sparse(concat_cond) or concat_cond.coords.shape != noise.coords.shape \
                or not torch.equal(concat_cond.coords, noise.coords):
            raise ValueError("concat_cond must be a sparse tensor on the noise's voxels, in the same order")
        return noise.replace(concat_cond.feats)

    def _strength(self, t: float, strength: float, interval) -> float:
        """TRELLIS.2's guidance weight at time t (1 = conditional prediction alone)."""
        if self.guidance == "none":
            return 1.0
        if self.guidance == "always" or interval[0] <= t <= interval[1]:
            return strength
        return 1.0

    def _combine(self, x_feats, t: float, vs: List[torch.Tensor], n_conds: int, s: float, rescale: float,
                 template) -> torch.Tensor:
        """TRELLIS.2's guided velocity from the step's predictions (conditional ones first, then the negative)."""
        if s == 0:
            return vs[-1]
        v_c = vs[0] if n_conds == 1 else sum(vs[:n_conds]) / n_conds
        if s == 1:
            return v_c
        v = s * v_c + (1 - s) * vs[-1]
        if rescale > 0:
            sig = self.sigma_min
            x0_pos = self._v_to_xstart(x_feats, t, v_c)
            x0_cfg = self._v_to_xstart(x_feats, t, v)
            ratio = _item_std(x0_pos, template) / _item_std(x0_cfg, template)
            x0 = rescale * (x0_cfg * ratio) + (1 - rescale) * x0_cfg
            v = ((1 - sig) * x_feats - x0) / (sig + (1 - sig) * t)
        return v

    def _guided(self, t: float, cfg_strength: float, cfg_interval) -> bool:
        if self.guidance == "none" or cfg_strength == 0:
            return False
        if self.guidance == "always":
            return True
        return cfg_interval[0] <= t <= cfg_interval[1]

    # ------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        model,
        noise,
        cond=None,
        neg_cond=None,
        steps: int = 50,
        rescale_t: float = 1.0,
        cfg_strength: Optional[float] = None,
        cfg_interval: Optional[Sequence[float]] = None,
        verbose: bool = False,
        *,
        guidance_strength: Optional[float] = None,
        guidance_interval: Optional[Sequence[float]] = None,
        guidance_rescale: float = 0.0,
        concat_cond=None,
        batch_cfg: bool = True,
        multi_image: Optional[str] = None,
        keep_trajectory: bool = False,
        progress: Optional[ProgressFn] = None,
        cancel=None,
        stage: str = "sampling",
        step_hook: Optional[Callable[[int, float, Any], Any]] = None,
        resample: int = 0,
        generator: Optional[torch.Generator] = None,
        **kwargs,
    ) -> SampleResult:
        """Integrate from `noise` (t=1) to a sample (t=0).

        Args:
            model: called as ``model(x, t, cond, **kwargs)``; x dense ``[B, ...]`` or a SparseTensor.
            noise: initial x at t = 1.
            cond / neg_cond: condition tensors ``[B or 1, L, C]`` (multi-image: ``[n_images, L, C]``).
            batch_cfg: run every prediction of a step as one batched forward.
            multi_image: None, 'stochastic' or 'multidiffusion'.
            keep_trajectory: also return each step's pred_x_t and pred_x_0 (like the reference).
            progress: ``progress(stage, step, total, message)`` after each step.
            cancel: object with ``is_set()``; checked before each step.
            step_hook: ``step_hook(i, t_prev, x_prev) -> x_prev`` after each Euler step (region editing
                replaces the known part of x there, RePaint-style).
            resample: with a step_hook, redo each step this many more times after jumping back from
                t_prev to t through the forward process (RePaint's resampling; harmonises the edit).
            cfg_strength / cfg_interval: TRELLIS's guidance ``(1 + w) v_cond - w v_uncond``.
            guidance_strength / guidance_interval / guidance_rescale: TRELLIS.2's guidance (module docstring);
                give these or the cfg_* ones, not both.
            concat_cond: passed to the model as ``concat_cond=`` at every step (same voxels as `noise`).
        """
        if multi_image not in (None, "stochastic", "multidiffusion"):
            raise ValueError(f"multi_image must be None, 'stochastic' or 'multidiffusion', got {multi_image!r}")
        trellis2 = guidance_strength is not None
        if trellis2 and (cfg_strength is not None or cfg_interval is not None):
            raise ValueError("give cfg_strength/cfg_interval (TRELLIS) or guidance_strength/guidance_interval "
                             "(TRELLIS.2), not both")
        if not trellis2 and (guidance_interval is not None or guidance_rescale):
            raise ValueError("guidance_interval and guidance_rescale need guidance_strength (TRELLIS.2 sampling)")
        cfg_strength = 0.0 if cfg_strength is None else cfg_strength
        cfg_interval = (0.0, 1.0) if cfg_interval is None else cfg_interval
        guidance_interval = (0.0, 1.0) if guidance_interval is None else guidance_interval
        pairs = timestep_schedule(steps, rescale_t)
        b = _batch_size(noise)
        sparse = _is_sparse(noise)
        if concat_cond is not None:
            kwargs["concat_cond"] = self._aligned_concat_cond(noise, concat_cond, sparse)

        n_images = 1
        if multi_image is not None:
            n_images = int(cond.shape[0])
            image_conds = [_expand_cond(cond[i:i + 1], b) for i in range(n_images)]
        else:
            image_conds = [_expand_cond(cond, b)]
        neg = _expand_cond(neg_cond, b)
        if multi_image == "multidiffusion":
            # every image's prediction is averaged at every step
            cond_groups_for = lambda i: list(range(n_images))  # noqa: E731
        elif multi_image == "stochastic":
            cond_groups_for = lambda i: [i % n_images]  # noqa: E731
        else:
            cond_groups_for = lambda i: [0]  # noqa: E731

        replicators: dict = {}
        cond_cache: dict = {}
        stacked_kwargs: dict = {}

        def forward(x_t, t: float, groups: List[Any]) -> List[torch.Tensor]:
            """Velocities (feats for sparse) for each condition in `groups`."""
            k = len(groups)
            if batch_cfg:
                key = tuple(id(g) for g in groups)
                if k not in replicators:
                    replicators[k] = _Replicator(x_t, k)
                rep = replicators[k]
                if key not in cond_cache:
                    cond_cache[key] = groups[0] if k == 1 else _cat_conds(groups)
                if k not in stacked_kwargs:
                    stacked_kwargs[k] = {**kwargs, **({"concat_cond": rep.stack(kwargs["concat_cond"])}
                                                      if "concat_cond" in kwargs else {})}
                x_in = rep.stack(x_t)
                t_in = torch.full((k * b,), 1000.0 * t, dtype=torch.float32, device=x_t.device)
                out = model(x_in, t_in, cond_cache[key], **stacked_kwargs[k])
                return rep.split(out)
            outs = []
            t_in = torch.full((b,), 1000.0 * t, dtype=torch.float32, device=x_t.device)
            for g in groups:
                out = model(x_t, t_in, g, **kwargs)
                outs.append(out.feats if sparse else out)
            return outs

        x = noise
        result = SampleResult(samples=None)
        for i, (t, t_prev) in enumerate(pairs):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled during {stage} before step {i + 1}/{steps}")
            idx = cond_groups_for(i)
            conds = [image_conds[j] for j in idx]
            if trellis2:
                s = self._strength(t, guidance_strength, guidance_interval)
                groups = conds if s == 1 else [neg] if s == 0 else conds + [neg]
            else:
                guided = self._guided(t, cfg_strength, cfg_interval)
                groups = conds + [neg] if guided else conds
            for jump in range(resample + 1 if step_hook is not None else 1):
                if jump and cancel is not None and cancel.is_set():  # resampling can be long: honour cancel
                    raise Cancelled(f"cancelled during {stage} step {i + 1}/{steps} (resampling)")
                if jump:
                    x = self._renoise(x, t_prev, t, sparse, generator)
                vs = forward(x, t, groups)
                vs = [v.to(x.feats.dtype if sparse else x.dtype) for v in vs]
                x_feats = x.feats if sparse else x
                if trellis2:
                    v = self._combine(x_feats, t, vs, len(conds), s, guidance_rescale, x if sparse else None)
                else:
                    v_c = vs[0]
                    if len(conds) > 1:
                        v_c = sum(vs[:len(conds)]) / len(conds)
                    if guided:
                        v = (1 + cfg_strength) * v_c - cfg_strength * vs[-1]
                    else:
                        v = v_c
                x_prev = x_feats - (t - t_prev) * v
                if keep_trajectory and jump == 0:
                    x0 = self._v_to_xstart(x_feats, t, v)
                    result.pred_x_t.append(x.replace(x_prev) if sparse else x_prev)
                    result.pred_x_0.append(x.replace(x0) if sparse else x0)
                x = x.replace(x_prev) if sparse else x_prev
                if step_hook is not None:
                    x = step_hook(i, t_prev, x)
            if progress is not None:
                progress(stage, i + 1, steps, f"{stage} step {i + 1}/{steps}")
        result.samples = x
        return result


class FlowEulerCfgSampler(FlowEulerSampler):
    """Euler sampler with classifier-free guidance at every step."""

    guidance = "always"

    def sample(self, model, noise, cond, neg_cond, steps: int = 50, rescale_t: float = 1.0,
               cfg_strength: Optional[float] = None, verbose: bool = False, **kwargs) -> SampleResult:
        kwargs.pop("cfg_interval", None)
        kwargs.pop("guidance_interval", None)
        if cfg_strength is None and kwargs.get("guidance_strength") is None:
            cfg_strength = 3.0
        return super().sample(model, noise, cond, neg_cond, steps=steps, rescale_t=rescale_t,
                              cfg_strength=cfg_strength, verbose=verbose, **kwargs)


class FlowEulerGuidanceIntervalSampler(FlowEulerSampler):
    """Euler sampler with classifier-free guidance only while t is inside `cfg_interval`."""

    guidance = "interval"

    def sample(self, model, noise, cond, neg_cond, steps: int = 50, rescale_t: float = 1.0,
               cfg_strength: Optional[float] = None, cfg_interval: Optional[Sequence[float]] = None,
               verbose: bool = False, **kwargs) -> SampleResult:
        if kwargs.get("guidance_strength") is None:
            cfg_strength = 3.0 if cfg_strength is None else cfg_strength
            cfg_interval = (0.0, 1.0) if cfg_interval is None else cfg_interval
        return super().sample(model, noise, cond, neg_cond, steps=steps, rescale_t=rescale_t,
                              cfg_strength=cfg_strength, cfg_interval=cfg_interval, verbose=verbose, **kwargs)


SAMPLERS = {
    "FlowEulerSampler": FlowEulerSampler,
    "FlowEulerCfgSampler": FlowEulerCfgSampler,
    "FlowEulerGuidanceIntervalSampler": FlowEulerGuidanceIntervalSampler,
}


def build_sampler(spec: dict) -> FlowEulerSampler:
    """Sampler from a pipeline.json entry ``{"name": ..., "args": {...}, "params": {...}}``."""
    name = spec.get("name")
    if name not in SAMPLERS:
        from ..errors import UnknownModelClassError

        raise UnknownModelClassError(f"unknown sampler {name!r} in pipeline.json (known: {', '.join(SAMPLERS)})")
    return SAMPLERS[name](**spec.get("args", {}))
