"""`make_random_model(size='embedded')`: a random-weight folder of the embedded model's sizes (CPU timing)."""
from __future__ import annotations

import json

import torch

from trellis_lab.__main__ import build_parser, main
from trellis_lab.random_model import make_random_model
from trellis_lab.training.configs import model_configs


def test_cli_offers_the_embedded_size():
    args = build_parser().parse_args(["make-random-model", "--kind", "text", "--out", "x", "--size", "embedded"])
    assert args.size == "embedded" and args.steps is None and args.family == "trellis"


def test_family_options_that_do_not_combine_are_refused_with_a_hint(tmp_path, capsys):
    code = main(["make-random-model", "--family", "trellis2", "--size", "embedded", "--out", str(tmp_path / "t2")])
    err = capsys.readouterr().err
    assert code == 2 and "error: --family trellis2 has no embedded size" in err and "hint: use --size tiny" in err
    code = main(["make-random-model", "--family", "trellis2", "--kind", "text", "--out", str(tmp_path / "t2")])
    assert code == 2 and "image-conditioned" in capsys.readouterr().err
    code = main(["make-random-model", "--out", str(tmp_path / "t1")])
    assert code == 2 and "hint: add --kind image or --kind text" in capsys.readouterr().err
    assert not (tmp_path / "t2").exists() and not (tmp_path / "t1").exists()


def test_embedded_random_folder(tmp_path):
    folder = make_random_model(tmp_path / "emb", kind="text", size="embedded", steps=1)
    doc = json.loads((folder / "pipeline.json").read_text())
    assert doc["name"] == "TrellisTextTo3DPipeline" and doc["args"]["text_cond_model"] == "embedded:minilm"
    assert doc["args"]["slat_sampler"]["params"]["steps"] == 1
    for key, (ckpt, cls, args) in model_configs("embedded").items():
        assert doc["args"]["models"][key] == f"ckpts/{ckpt}"
        cfg = json.loads((folder / "ckpts" / f"{ckpt}.json").read_text())
        assert cfg == {"name": cls, "args": args}

    from trellis_backend.pipeline.pipeline import TrellisPipeline

    pipe = TrellisPipeline.from_pretrained(folder, device="cpu")
    cond, _ = pipe.encode_condition("a chair")
    coords = pipe.sample_structure(cond, torch.Generator().manual_seed(0),
                                          dict(pipe.sparse_structure_sampler_params))
    assert 500 < coords.shape[0] < 20000  # calibrated to ~2% of the 64^3 grid (~5k voxels)
