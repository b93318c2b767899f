"""Training records, torch Dataset / collate, and the preview CLI."""
import numpy as np
import torch
from PIL import Image

from trellis_lab.data.dataset import ProceduralDataset, collate_records, iter_records, make_record
from trellis_lab.data.preview import main as preview_main
from trellis_lab.data.voxelize import FEATURE_CHANNELS


def test_make_record():
    rec = make_record(11, "train", image_size=96, surface_points=500)
    for k in ("seed", "split", "category", "color", "params", "caption", "coords", "feats", "occupancy", "image",
              "view", "surface_points", "surface_normals", "surface_colors"):
        assert k in rec, k
    assert rec["occupancy"].shape == (64, 64, 64) and rec["occupancy"].sum() == len(rec["coords"])
    assert rec["feats"].shape == (len(rec["coords"]), FEATURE_CHANNELS)
    assert rec["image"].shape == (96, 96, 4)
    assert rec["surface_points"].shape == (500, 3)
    again = make_record(11, "train")
    np.testing.assert_array_equal(again["coords"], rec["coords"])
    assert again["caption"] == rec["caption"]
    assert make_record(11, "train", caption_seed=1)["category"] == rec["category"]


def test_dataset_and_collate():
    ds = ProceduralDataset("heldout", size=3, base_seed=5, image_size=64)
    assert len(ds) == 3
    items = [ds[i] for i in range(3)]
    assert items[0]["coords"].dtype == torch.int32 and items[0]["image"].shape == (64, 64, 4)
    batch = collate_records(items)
    n = sum(len(it["coords"]) for it in items)
    assert batch["coords"].shape == (n, 4) and batch["feats"].shape == (n, FEATURE_CHANNELS)
    assert sorted(set(batch["coords"][:, 0].tolist())) == [0, 1, 2]
    assert batch["occupancy"].shape == (3, 1, 64, 64, 64) and batch["occupancy"].dtype == torch.float32
    assert batch["image"].shape == (3, 64, 64, 4)
    assert len(batch["caption"]) == 3 and all(isinstance(c, str) for c in batch["caption"])
    ds.set_epoch(1)
    assert torch.equal(ds[0]["coords"], items[0]["coords"])  # same object in every epoch
    assert [r["seed"] for r in iter_records("train", 3, 2)] == [3, 4]


def test_preview_cli(tmp_path):
    out = tmp_path / "grid.png"
    assert preview_main(["--n", "3", "--cols", "3", "--size", "96", "--out", str(out)]) == 0
    img = Image.open(out)
    assert img.size[0] == 3 * 96 and img.size[1] > 96


def test_shards_roundtrip(tmp_path):
    from trellis_lab.data.dataset import evaluation_set
    from trellis_lab.data.shards import ShardDataset, main as shards_main

    path = tmp_path / "s.npz"
    assert shards_main(["--split", "train", "--start", "20", "--count", "3", "--out", str(path), "--captions", "2",
                        "--views", "1", "--image-size", "48", "--surface", "64", "--workers", "1"]) == 0
    ds = ShardDataset([str(path)])
    assert len(ds) == 3
    item = ds[1]
    ref = make_record(21, "train")
    assert item["category"] == ref["category"] and item["color"] == ref["color"]
    np.testing.assert_array_equal(item["coords"].numpy(), ref["coords"])
    np.testing.assert_allclose(item["feats"].numpy(), ref["feats"], atol=2e-3)
    assert item["occupancy"].sum() == len(ref["coords"])
    assert item["image"].shape == (48, 48, 4) and item["surface_points"].shape == (64, 3)
    batch = collate_records([ds[0], ds[2]])
    assert batch["coords"].shape[1] == 4
    ev = evaluation_set(4, start=0)
    assert [r["category"] for r in ev] == ["chair", "table", "mug", "lamp"] and all(r["split"] == "heldout" for r in ev)
