"""`trellis_bench.product_timing` (image -> GLB through TrellisPipeline.generate) runs end to end on the CPU."""
import json


def test_product_timing_cpu_smoke(tmp_path):
    from trellis_bench.product_timing import main

    out = tmp_path / "product.json"
    res = main(["--device", "cpu", "--size", "tiny", "--repeats", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == res
    assert res["files"] == ["glb", "ply", "slat"] and res["glb_bytes"] > 0 and res["faces"] > 0
    assert len(res["wall_ms"]) == 2 and res["same_seed_identical"] is True
    assert set(res["median_stage_ms"]) >= {"sparse_structure", "slat", "decode", "export"}
