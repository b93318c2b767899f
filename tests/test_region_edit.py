"""Region editing: outside the region nothing changes, inside it does; old files are kept.

Runs on the shipped embedded model (models/trellis-embedded, a real chair) and on a tiny
random-weight model (the same code path with another architecture size).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trellis_backend.edit import edit_region, region_mask_grid
from trellis_backend.edit.region import blend_weights, latent_mask
from trellis_backend.errors import BadInputError
from trellis_backend.pipeline import TrellisPipeline
from trellis_backend.pipeline.export import read_sidecar
from trellis_lab.random_model import make_random_model

BOX = {"box_min": [-0.5, -0.5, 0.0], "box_max": [0.5, 0.5, 0.5]}  # upper half of the object


EMBEDDED = Path(__file__).resolve().parents[1] / "models" / "trellis-embedded"


@pytest.fixture(scope="module", params=["embedded", "random"])
def generated(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("edit")
    if request.param == "embedded":
        if not (EMBEDDED / "pipeline.json").is_file():
            pytest.skip("models/trellis-embedded is not in this checkout")
        folder = EMBEDDED
    else:
        folder = make_random_model(root / "model", kind="text")
    pipe = TrellisPipeline.from_pretrained(folder, device="cpu")
    res = pipe.generate(prompt="a red chair with a tall back and four thin legs", seed=1, ss_steps=8, slat_steps=6,
                        output_dir=root / "out", name="chair")
    return pipe, res, root


def inside(coords, region):
    grid = region_mask_grid(region)
    c = torch.as_tensor(coords).long()
    return grid[c[:, 0], c[:, 1], c[:, 2]].numpy()


def by_coord(coords, feats):
    return {tuple(c): f for c, f in zip(np.asarray(coords).tolist(), np.asarray(feats))}


@pytest.mark.parametrize("keep_structure", [True, False])
def test_outside_is_bit_identical_and_inside_changes(generated, keep_structure):
    pipe, res, root = generated
    old_c, old_f, _ = read_sidecar(res["files"]["slat"])
    assert inside(old_c, BOX).any() and (~inside(old_c, BOX)).any(), "the test box must split the object"
    out = edit_region(pipe, res["files"]["slat"], BOX, seed=7, keep_structure=keep_structure, ss_steps=4,
                      slat_steps=4)
    new_c, new_f, settings = read_sidecar(out["files"]["slat"])
    assert settings["edit"]["of"].endswith("chair.slat.npz")
    old_out = ~inside(old_c, BOX)
    new_out = ~inside(new_c, BOX)
    # outside: same voxel set, bit-identical features
    assert set(map(tuple, old_c[old_out].tolist())) == set(map(tuple, new_c[new_out].tolist()))
    old_map, new_map = by_coord(old_c, old_f), by_coord(new_c, new_f)
    for key in map(tuple, old_c[old_out].tolist()):
        assert np.array_equal(old_map[key], new_map[key])
    # inside: different features (a new seed)
    shared_inside = [k for k in map(tuple, new_c[~new_out].tolist()) if k in old_map]
    if keep_structure:
        assert set(map(tuple, new_c.tolist())) == set(map(tuple, old_c.tolist()))
    changed = [k for k in shared_inside if not np.allclose(old_map[k], new_map[k])]
    assert len(changed) > 0.9 * max(len(shared_inside), 1)
    # the old files are untouched and the new ones have new names
    for kind, path in res["files"].items():
        assert path != out["files"][kind]
    assert len(out["files"]) == 3


def test_decoded_gaussians_unchanged_away_from_region(generated):
    pipe, res, _ = generated
    out = edit_region(pipe, res["files"]["slat"], BOX, seed=3, keep_structure=True, slat_steps=4,
                      formats=("gaussians",))
    decoder = pipe.get_model("slat_decoder_gs")
    reach = decoder.num_blocks * decoder.window_size  # voxels a windowed decoder can see across
    s0, s1 = res["outputs"]["slat"], out["outputs"]["slat"]
    g0 = res["outputs"]["gaussians"].get_xyz.reshape(len(s0.coords), -1, 3)
    g1 = out["outputs"]["gaussians"].get_xyz.reshape(len(s1.coords), -1, 3)
    key = lambda c: (c[:, 1].long() * 64 + c[:, 2].long()) * 64 + c[:, 3].long()  # noqa: E731
    o0, o1 = torch.argsort(key(s0.coords)), torch.argsort(key(s1.coords))
    assert torch.equal(key(s0.coords)[o0], key(s1.coords)[o1])
    z = s0.coords[o0][:, 3]
    far = z < 32 - reach  # the box starts at voxel z = 32
    near_inside = z >= 32
    assert far.any() and near_inside.any()
    diff = (g0[o0] - g1[o1]).abs().amax(dim=(1, 2))
    assert diff[far].max() < 1e-6
    assert diff[near_inside].max() > 1e-3


def test_margin_blends_and_region_validation():
    grid = region_mask_grid({"box_min": [-0.25] * 3, "box_max": [0.25] * 3})
    coords = torch.argwhere(grid)
    w = blend_weights(grid, coords, margin=3)
    assert w.min() > 0 and w.max() == 1 and (w < 1).any()
    assert latent_mask(grid, 16).sum() == 8 ** 3
    with pytest.raises(BadInputError):
        region_mask_grid({"box_min": [0.9] * 3, "box_max": [1.0] * 3})
    with pytest.raises(BadInputError):
        region_mask_grid({"center": [0, 0, 0]})
    vox = region_mask_grid({"voxels": [[1, 2, 3], [70, 0, 0]]})
    assert vox.sum() == 1 and vox[1, 2, 3]


def test_cli_edit_writes_new_files(generated, tmp_path):
    import subprocess
    import sys

    pipe, res, _ = generated
    proc = subprocess.run([sys.executable, "-m", "trellis_backend", "edit", "--from", res["files"]["slat"],
                           "--model", str(pipe.folder), "--box=-0.5,-0.5,0,0.5,0.5,0.5", "--seed", "2",
                           "--keep-structure", "--steps", "2", "--formats", "ply", "--out", str(tmp_path),
                           "--json", "--quiet", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    files = json.loads(proc.stdout)["files"]
    assert set(files) == {"ply", "slat"} and all(Path(p).is_file() for p in files.values())
    bad = subprocess.run([sys.executable, "-m", "trellis_backend", "edit", "--from", str(tmp_path / "missing.npz"),
                          "--model", str(pipe.folder), "--box", "0,0,0,1,1,1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "sidecar not found" in bad.stderr
