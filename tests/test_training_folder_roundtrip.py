"""`training init-from-folder` is the inverse of `training assemble`: continuing training from the shipped
folders starts from exactly their weights, and re-assembling them gives the same folders back."""
import filecmp
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "models" / "trellis-embedded"

pytestmark = pytest.mark.skipif(not (TEXT / "pipeline.json").is_file(), reason="embedded model folders not present")


def test_init_from_folder_then_assemble_round_trip(tmp_path):
    from trellis_backend.models import load_model
    from trellis_lab.training.__main__ import main

    init = tmp_path / "init"
    main(["init-from-folder", "--folder", str(TEXT), "--out", str(init)])
    flow_dir = tmp_path / "ss_flow" / "ckpts"  # the light state's weights as a stage dir, as a trainer exports them
    flow_dir.mkdir(parents=True)
    for ext in (".json", ".safetensors"):
        (flow_dir / f"ss_flow_embedded_dit{ext}").write_bytes((TEXT / "ckpts" / f"ss_flow_embedded_dit{ext}").read_bytes())
    state = torch.load(init / "ss_flow_light.pt", weights_only=False)
    shipped = load_model(TEXT / "ckpts" / "ss_flow_embedded_dit", use_fp16=False).state_dict()
    assert state["models"]["denoiser"].keys() == shipped.keys()
    assert all(torch.equal(state["models"]["denoiser"][k], v) for k, v in shipped.items())

    out_t, out_i = tmp_path / "text", tmp_path / "image"
    main(["assemble", "--out", str(out_t), "--image-out", str(out_i), "--ss-vae", str(init / "ss_vae"),
          "--slat-vae", str(init / "slat_vae"), "--ss-flow", str(tmp_path / "ss_flow"), "--slat-flow", str(TEXT),
          "--image-encoder", str(init / "image_encoder"), "--shared-prefix", "embedded/trellis-embedded/"])
    for got, want in ((out_t, TEXT), (out_i, ROOT / "models" / "trellis-embedded-image")):
        assert json.loads((got / "pipeline.json").read_text()) == json.loads((want / "pipeline.json").read_text())
        names = sorted(p.name for p in (want / "ckpts").iterdir())
        assert sorted(p.name for p in (got / "ckpts").iterdir()) == names
        assert all(filecmp.cmp(got / "ckpts" / n, want / "ckpts" / n, shallow=False) for n in names)
