"""Sampler behaviour beyond the golden case: sparse batching, multi-image modes, cancel, progress."""
import threading

import numpy as np
import pytest
import torch

from trellis_backend.errors import Cancelled
from trellis_backend.pipeline.samplers import (FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler,
                                               FlowEulerSampler, build_sampler, timestep_schedule)


class ToyDense(torch.nn.Module):
    """v = f(x, t, cond): nonlinear in every input, batch items independent."""

    def __init__(self, c=4, cond_c=6):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(c, c, generator=g) * 0.3)
        self.cw = torch.nn.Parameter(torch.randn(cond_c, c, generator=g) * 0.3)
        self.calls = []

    def forward(self, x, t, cond):
        self.calls.append(x.shape[0])
        assert t.dtype == torch.float32 and t.shape == (x.shape[0],)
        c = torch.tanh(cond.mean(1) @ self.cw)  # [B, C]
        h = x.movedim(1, -1)
        v = torch.tanh(h @ self.w) * (1 + t.view(-1, *[1] * (h.dim() - 1)) / 1000) + c.view(
            c.shape[0], *[1] * (h.dim() - 2), -1)
        return v.movedim(-1, 1)


class ToySparse(torch.nn.Module):
    """Per-voxel v depending on the voxel, its batch item's t and condition."""

    def __init__(self, c=4, cond_c=6):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w = torch.randn(c, c, generator=g) * 0.3
        self.cw = torch.randn(cond_c, c, generator=g) * 0.3
        self.calls = []

    def forward(self, x, t, cond):
        self.calls.append(x.shape[0])
        b = x.coords[:, 0].long()
        assert int(b.max()) + 1 == x.shape[0] == t.shape[0] == cond.shape[0]
        c = torch.tanh(cond.mean(1) @ self.cw)[b]
        pos = x.coords[:, 1:].float().sum(1, keepdim=True) / 100
        return x.replace(torch.tanh(x.feats @ self.w + pos) * (1 + t[b, None] / 1000) + c)


def naive_reference(model, noise, cond, neg, steps, rescale_t, w, interval, sigma_min=1e-5, mode=None):
    """Straight transcription of the reference loop (one forward per prediction)."""
    x = noise
    seq = np.linspace(1, 0, steps + 1)
    seq = rescale_t * seq / (1 + (rescale_t - 1) * seq)
    xs, x0s = [], []
    n = cond.shape[0]

    def v_of(x, t, c):
        tt = torch.tensor([1000 * t] * x.shape[0], dtype=torch.float32)
        if c.shape[0] == 1 and x.shape[0] > 1:
            c = c.repeat(x.shape[0], 1, 1)
        return model(x, tt, c)

    for i in range(steps):
        t, tp = seq[i], seq[i + 1]
        if mode == "multidiffusion":
            v = sum(v_of(x, t, cond[j:j + 1]) for j in range(n)) / n
        elif mode == "stochastic":
            v = v_of(x, t, cond[i % n:i % n + 1])
        else:
            v = v_of(x, t, cond)
        if interval[0] <= t <= interval[1]:
            if mode == "stochastic":
                v = (1 + w) * v - w * v_of(x, t, neg)
            else:
                v = (1 + w) * v - w * v_of(x, t, neg)
        x0s.append((1 - sigma_min) * x - (sigma_min + (1 - sigma_min) * t) * v)
        x = x - (t - tp) * v
        xs.append(x)
    return x, xs, x0s


def test_schedule_matches_reference_formula():
    pairs = timestep_schedule(25, 3.0)
    seq = np.linspace(1, 0, 26)
    seq = 3 * seq / (1 + 2 * seq)
    assert len(pairs) == 25
    assert np.allclose([p[0] for p in pairs], seq[:-1]) and np.allclose([p[1] for p in pairs], seq[1:])
    assert pairs[0][0] == 1.0 and pairs[-1][1] == 0.0


@pytest.mark.parametrize("batch_cfg", [True, False])
def test_dense_matches_naive_loop(batch_cfg):
    torch.manual_seed(0)
    model = ToyDense()
    noise = torch.randn(2, 4, 3, 3, 3)
    cond, neg = torch.randn(2, 5, 6), torch.zeros(1, 5, 6)
    ref, ref_xt, ref_x0 = naive_reference(model, noise, cond, neg, 7, 3.0, 4.0, (0.5, 1.0))
    out = FlowEulerGuidanceIntervalSampler(1e-5).sample(model, noise, cond, neg, steps=7, rescale_t=3.0,
                                                        cfg_strength=4.0, cfg_interval=(0.5, 1.0),
                                                        batch_cfg=batch_cfg, keep_trajectory=True)
    torch.testing.assert_close(out.samples, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(out.pred_x_0, ref_x0):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_batched_cfg_is_one_forward_per_step_and_skips_uncond_outside_interval():
    model = ToyDense()
    noise = torch.randn(1, 4, 2, 2, 2)
    sampler = FlowEulerGuidanceIntervalSampler(1e-5)
    steps = 6
    sampler.sample(model, noise, torch.randn(1, 3, 6), torch.zeros(1, 3, 6), steps=steps, rescale_t=3.0,
                   cfg_strength=3.0, cfg_interval=(0.5, 1.0))
    inside = [t for t, _ in timestep_schedule(steps, 3.0) if 0.5 <= t <= 1.0]
    assert len(model.calls) == steps
    assert model.calls.count(2) == len(inside) and model.calls.count(1) == steps - len(inside)


def test_cfg_zero_and_plain_samplers():
    model = ToyDense()
    noise = torch.randn(1, 4, 2, 2, 2)
    cond, neg = torch.randn(1, 3, 6), torch.randn(1, 3, 6)
    a = FlowEulerGuidanceIntervalSampler(1e-5).sample(model, noise, cond, neg, steps=4, cfg_strength=0.0).samples
    assert all(c == 1 for c in model.calls)  # no unconditional forward when w = 0
    b = FlowEulerSampler(1e-5).sample(model, noise, cond, steps=4).samples
    torch.testing.assert_close(a, b)
    c = FlowEulerCfgSampler(1e-5).sample(model, noise, cond, neg, steps=4, cfg_strength=2.0).samples
    ref, _, _ = naive_reference(model, noise, cond, neg, 4, 1.0, 2.0, (-1, 2))
    torch.testing.assert_close(c, ref, rtol=1e-5, atol=1e-6)
    assert isinstance(build_sampler({"name": "FlowEulerCfgSampler", "args": {"sigma_min": 1e-5}}), FlowEulerCfgSampler)


def _sparse_noise(b=2, n=30, c=4):
    from trellis_backend.sparse import SparseTensor

    g = torch.Generator().manual_seed(3)
    coords = []
    for i in range(b):
        xyz = torch.unique(torch.randint(0, 16, (n, 3), generator=g), dim=0).int()
        coords.append(torch.cat([torch.full((xyz.shape[0], 1), i, dtype=torch.int32), xyz], 1))
    coords = torch.cat(coords)
    return SparseTensor(torch.randn(coords.shape[0], c, generator=g), coords, shape=(b, c))


@pytest.mark.parametrize("mode", [None, "stochastic", "multidiffusion"])
def test_sparse_batched_equals_sequential(mode):
    noise = _sparse_noise(b=1 if mode else 2)
    cond = torch.randn(3 if mode else 2, 5, 6)
    neg = torch.zeros(1, 5, 6)
    kw = dict(steps=5, rescale_t=3.0, cfg_strength=3.0, cfg_interval=(0.5, 1.0), multi_image=mode)
    s = FlowEulerGuidanceIntervalSampler(1e-5)
    m1, m2 = ToySparse(), ToySparse()
    a = s.sample(m1, noise, cond, neg, batch_cfg=True, **kw).samples
    b = s.sample(m2, noise, cond, neg, batch_cfg=False, **kw).samples
    torch.testing.assert_close(a.feats, b.feats, rtol=1e-5, atol=1e-6)
    assert torch.equal(a.coords, noise.coords)
    assert len(m1.calls) == 5 and len(m2.calls) > 5


@pytest.mark.parametrize("mode", ["stochastic", "multidiffusion"])
def test_multi_image_modes_match_reference(mode):
    model = ToyDense()
    noise = torch.randn(1, 4, 2, 2, 2)
    cond, neg = torch.randn(3, 4, 6), torch.zeros(1, 4, 6)
    ref, _, _ = naive_reference(model, noise, cond, neg, 6, 3.0, 3.0, (0.5, 1.0), mode=mode)
    out = FlowEulerGuidanceIntervalSampler(1e-5).sample(model, noise, cond, neg, steps=6, rescale_t=3.0,
                                                        cfg_strength=3.0, cfg_interval=(0.5, 1.0), multi_image=mode)
    torch.testing.assert_close(out.samples, ref, rtol=1e-5, atol=1e-6)


def test_progress_and_cancel_between_steps():
    model = ToyDense()
    cancel = threading.Event()
    seen = []

    def progress(stage, step, total, msg):
        seen.append((stage, step, total))
        if step == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        FlowEulerGuidanceIntervalSampler(1e-5).sample(model, torch.randn(1, 4, 2, 2, 2), torch.randn(1, 2, 6),
                                                      torch.zeros(1, 2, 6), steps=5, progress=progress,
                                                      cancel=cancel, stage="stage1")
    assert seen == [("stage1", 1, 5), ("stage1", 2, 5)]
    assert len(model.calls) == 2


def test_rejects_bad_mode_and_steps():
    s = FlowEulerGuidanceIntervalSampler(1e-5)
    with pytest.raises(ValueError):
        s.sample(ToyDense(), torch.randn(1, 4, 2, 2, 2), torch.randn(1, 2, 6), torch.zeros(1, 2, 6),
                 steps=2, multi_image="bogus")
    with pytest.raises(ValueError):
        timestep_schedule(0)
