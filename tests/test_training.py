"""Every trainer of the embedded model runs 2 steps on CPU (tiny configs, small objects) and
resumes from its checkpoint with finite losses."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trellis_lab.training.checkpoints import build_fresh
from trellis_lab.training.configs import image_encoder_config, model_configs
from trellis_lab.training.data import ObjectStore, make_object

CFG = model_configs("tiny")
MAX_VOXELS = 150  # crop objects so the mesh decoder (64 fine cubes per voxel) stays cheap on CPU


class ListStore(ObjectStore):
    def __init__(self, objects):
        self.objects = objects
        self.folder = None

    def refresh(self):
        return len(self.objects)


def _crop(o):
    o = dict(o)
    for k in ("coords", "feats", "lattice", "lattice_part"):
        if k in o:
            o[k] = o[k][:MAX_VOXELS]
    return o


@pytest.fixture(scope="module")
def objects():
    return [_crop(make_object(s, "train", ("lattice", "images"), views=1, image_size=32, captions=2)) for s in range(3)]


def _finite(terms):
    return all(np.isfinite(v) for v in terms.values())


def _run_twice(make, tmp_path):
    tr = make(tmp_path)
    first = tr.run()
    assert tr.step == 2 and _finite(first) and (tmp_path / "state.pt").is_file()
    tr2 = make(tmp_path, steps=4)
    assert tr2.load() and tr2.step == 2
    second = tr2.run()
    assert tr2.step == 4 and _finite(second)
    return tr2


def _kw(out, steps=2):
    return dict(out=out, max_steps=steps, save_every=0, log_every=1, device="cpu", log=None)


def test_ss_vae_trains_and_resumes(objects, tmp_path):
    from trellis_lab.training.ss_vae import SSVAETrainer

    def make(out, steps=2):
        torch.manual_seed(0)
        enc = build_fresh(*CFG["sparse_structure_encoder"][1:])
        dec = build_fresh(*CFG["sparse_structure_decoder"][1:])
        return SSVAETrainer(enc, dec, ListStore(objects), CFG, batch_size=2, resolution=16, **_kw(out, steps))

    _run_twice(make, tmp_path)
    assert (tmp_path / "ckpts" / f"{CFG['sparse_structure_decoder'][0]}.safetensors").is_file()


def test_slat_vae_trains_and_resumes(objects, tmp_path):
    from trellis_lab.training.slat_vae import SLatVAETrainer

    def make(out, steps=2):
        torch.manual_seed(0)
        models = [build_fresh(*CFG[k][1:]) for k in ("slat_encoder", "slat_decoder_gs", "slat_decoder_mesh",
                                                     "slat_decoder_rf")]
        return SLatVAETrainer(*models, ListStore(objects), CFG, batch_size=2, mesh_batch=1, **_kw(out, steps))

    tr = _run_twice(make, tmp_path)
    tr.freeze_encoder()
    assert (tmp_path / "encoder_ready").is_file()
    stats = json.loads((tmp_path / "latent_stats.json").read_text())
    assert len(stats["mean"]) == len(stats["std"]) == 8


@pytest.mark.parametrize("stage,frozen", [("ss", False), ("slat", False), ("ss", True)])
def test_flow_trains_and_resumes(objects, tmp_path, stage, frozen):
    from trellis_lab.training.flow import FlowData, FlowTrainer
    from trellis_lab.training.image_encoder_io import build_image_encoder

    class FakeText:  # the MiniLM condition format, without loading MiniLM
        num_tokens = 32

        def encode(self, texts):
            g = torch.Generator().manual_seed(len(texts))
            return torch.randn(len(texts), 32, 384, generator=g)

    kw = {}
    if stage == "ss":
        kw["ss_encoder"] = build_fresh(*CFG["sparse_structure_encoder"][1:]).eval()
    else:
        kw["slat_encoder"] = build_fresh(*CFG["slat_encoder"][1:]).eval()
        kw["slat_norm"] = {"mean": [0.0] * 8, "std": [1.0] * 8}

    def make(out, steps=2):
        torch.manual_seed(0)
        image_encoder = build_image_encoder(image_encoder_config("tiny"))
        if frozen:  # tokens of every view cached when the objects arrive
            kw["frozen_image_encoder"] = image_encoder.eval().requires_grad_(False)
        data = FlowData(stage, ListStore(objects), "cpu", text_encoder=FakeText(), **kw)
        data.update()
        assert len(data.image_tokens) == (len(objects) if frozen else 0)
        key = "sparse_structure_flow_model" if stage == "ss" else "slat_flow_model"
        return FlowTrainer(stage, build_fresh(*CFG[key][1:]), data, CFG, image_encoder=image_encoder,
                           train_image_encoder=not frozen, batch_size=2, **_kw(out, steps))

    _run_twice(make, tmp_path)
    assert (tmp_path / "ckpts" / "image_encoder.safetensors").is_file() != frozen


def test_fold_sdf_makes_an_inner_wall():
    from trellis_lab.training.slat_vae import fold_sdf

    s = torch.tensor([2.0, 0.0, -0.75, -1.5, -3.0])
    assert torch.allclose(fold_sdf(s, 1.5), torch.tensor([2.0, 0.0, -0.75, 0.0, 1.5]))
