"""The one generation sequence (`pipeline.sequence.GenerationRun`) driving a family other than TRELLIS: three
sampling stages, as TRELLIS.2 will run them (structure -> shape -> texture), on plain torch computations."""
from __future__ import annotations

import contextlib
import threading

import pytest
import torch

from trellis_backend.errors import Cancelled, OutOfMemoryError
from trellis_backend.pipeline.sequence import GenerationRun


class StageLog:
    """A fast-path hook that records which stage it wraps (what `accel.attach` returns on CUDA)."""

    def __init__(self):
        self.events = []

    @contextlib.contextmanager
    def stage(self, name):
        self.events.append(("enter", name))
        yield
        self.events.append(("exit", name))


class ThreeStageFamily:
    """The members the sequence calls, with three noise-driven stages and an in-memory export."""

    device = torch.device("cpu")

    def __init__(self, fast_path=None):
        self.fast_path = fast_path
        self.exported = []

    def encode_condition(self, prompt, image, background_threshold):
        return {"cond": torch.full((1, 4), float(len(prompt)))}, {"prompt": prompt}

    def structure(self, cond, generator):
        return cond["cond"] + torch.randn(1, 4, generator=generator)

    def shape(self, structure, generator):
        return structure * 2 + torch.randn(1, 4, generator=generator)

    def texture(self, shape, generator, fail=None):
        if fail is not None:
            raise fail
        return shape - torch.randn(1, 4, generator=generator)

    def decode(self, latent, formats, progress):
        return {"mesh": [latent.sum()]}

    def latent_arrays(self, latent):
        return {"the texture latent": latent}

    def output_kinds(self, formats):
        return {"glb": ".glb"}

    def export(self, latent, decoded, formats, files, settings, progress, cancel, texture_size):
        self.exported.append(files)
        return {"files": {}, "meta": dict(settings), "outputs": {"latent": latent, "mesh": decoded["mesh"][0]}}


def generate(family, seed=0, cancel=None, progress=None, fail=None):
    with GenerationRun(family, seed, progress, cancel) as run:
        cond, info = run.condition("a chair")
        structure = run.stage("structure", family.structure, cond, run.generator)
        shape = run.stage("shape", family.shape, structure, run.generator)
        texture = run.stage("texture", family.texture, shape, run.generator, fail=fail)
        return run.finish(texture, ("mesh",), None, "asset", {"seed": run.seed, **info})


def test_three_stages_in_order_wrapped_by_the_fast_path_and_timed():
    hook = StageLog()
    seen = []
    result = generate(ThreeStageFamily(hook), progress=lambda *a: seen.append(a[:3]))
    assert hook.events == [(e, n) for n in ("structure", "shape", "texture") for e in ("enter", "exit")]
    assert list(result["meta"]["timings"]) == ["condition", "structure", "shape", "texture", "decode", "total"]
    assert seen == [("condition", 0, 1), ("condition", 1, 1)]
    assert result["meta"]["seed"] == 0 and result["meta"]["prompt"] == "a chair"


def test_one_seed_one_result_and_the_noise_follows_stage_order():
    a, b = generate(ThreeStageFamily(), seed=5), generate(ThreeStageFamily(), seed=5)
    assert torch.equal(a["outputs"]["latent"], b["outputs"]["latent"])
    g = torch.Generator().manual_seed(5)
    n1, n2, n3 = (torch.randn(1, 4, generator=g) for _ in range(3))
    want = ((torch.full((1, 4), 7.0) + n1) * 2 + n2) - n3
    assert torch.equal(a["outputs"]["latent"], want)
    assert not torch.equal(generate(ThreeStageFamily(), seed=6)["outputs"]["latent"], want)


def test_cancel_between_stages_stops_before_export():
    family, cancel = ThreeStageFamily(), threading.Event()
    family.shape = lambda structure, generator: cancel.set() or structure
    with pytest.raises(Cancelled, match="after the shape stage"):
        generate(family, cancel=cancel)
    assert family.exported == []


def test_out_of_memory_in_a_stage_becomes_advice_and_other_errors_pass():
    with pytest.raises(OutOfMemoryError, match="computer ran out of memory") as e:
        generate(ThreeStageFamily(), fail=RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    assert e.value.hint
    with pytest.raises(ZeroDivisionError):
        generate(ThreeStageFamily(), fail=ZeroDivisionError("bug"))
