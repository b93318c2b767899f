"""The evaluation command on the shipped embedded folders (CPU, stage 1 only, two records): every score
and the same-category baseline come out, and validation records (--start) are other objects."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT, IMAGE = ROOT / "models" / "trellis-embedded", ROOT / "models" / "trellis-embedded-image"

pytestmark = pytest.mark.skipif(not (TEXT / "pipeline.json").is_file() or not (IMAGE / "pipeline.json").is_file(),
                                reason="embedded model folders not present")


def test_evaluate_structure_only_cpu(tmp_path):
    from trellis_lab.training.evaluate import main

    main(["--model", str(TEXT), "--image-model", str(IMAGE), "--n", "2", "--device", "cpu", "--structure-only",
          "--out", str(tmp_path / "a")])
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    img = res["image"]["summary"]
    assert res["text"]["summary"]["generations"] == img["generations"] == 2
    for key in ("mean_iou", "mean_solid_iou", "baseline_iou", "baseline_solid_iou"):
        assert 0.0 <= img[key] <= 1.0, key
    assert img["baseline_pairs"] == 2
    table = (tmp_path / "a" / "results.md").read_text()
    assert "solid, headline" in table and "another object of the input's category" in table
    items = res["image"]["items"]
    assert all(0.0 <= it["solid_iou"] <= 1.0 and 0.0 <= it["iou"] <= 1.0 for it in items)
    assert img["mean_solid_iou"] == pytest.approx(sum(it["solid_iou"] for it in items) / 2)

    main(["--model", str(TEXT), "--image-model", "none", "--n", "2", "--start", "1000", "--device", "cpu",
          "--structure-only", "--out", str(tmp_path / "b")])
    val = json.loads((tmp_path / "b" / "results.json").read_text())
    assert val["start"] == 1000
    assert [i["seed"] for i in val["text"]["items"]] != [i["seed"] for i in res["text"]["items"]]
