"""The add-on's bpy-free parts of issue 17: the model family of a chosen folder and what the panel sends for
it, and the OBJ the 'Texture selected mesh' operator writes (read back by the backend's own loader)."""

import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from addon.core import model_family as MF  # noqa: E402
from addon.core import protocol as P  # noqa: E402
from addon.core.mesh_obj_file import write_triangle_obj  # noqa: E402


def _folder(tmp_path, config):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pipeline.json").write_text(json.dumps(config))
    return str(tmp_path)


def test_family_follows_the_folder(tmp_path):
    t2 = _folder(tmp_path / "t2", {"name": "Trellis2ImageTo3DPipeline", "args": {"default_pipeline_type": "512"}})
    text = _folder(tmp_path / "text", {"name": "TrellisTextTo3DPipeline", "args": {"text_cond_model": "clip"}})
    image = _folder(tmp_path / "image", {"name": "TrellisImageTo3DPipeline", "args": {"image_cond_model": "dino"}})
    assert [MF.folder_family(f) for f in (t2, text, image, "")] == [MF.TRELLIS2, MF.TRELLIS_TEXT, MF.TRELLIS_IMAGE,
                                                                    MF.EMBEDDED]
    assert MF.folder_family(str(tmp_path / "missing")) == ""
    assert MF.default_resolution_mode(t2) == "512"
    assert MF.offers(MF.TRELLIS2) == {"image", "resolution", "texture"}
    assert "prompt" not in MF.offers(MF.TRELLIS_IMAGE) and "image" not in MF.offers(MF.TRELLIS_TEXT)
    assert MF.RESOLUTION_MODES == P.RESOLUTION_MODES


def test_trellis2_requests_carry_only_what_it_takes():
    panel = {"image": "a.png", "seed": 1, "formats": ["mesh", "gaussians"], "ss_steps": 4, "slat_cfg": 3.0,
             "output_dir": "/o", "name": "n"}
    out = MF.generate_params_for_family(MF.TRELLIS2, panel, "1024_cascade")
    assert out == {"image": "a.png", "seed": 1, "formats": ["mesh"], "output_dir": "/o", "name": "n",
                   "resolution": "1024_cascade"}
    assert P.validate_job_params(P.GENERATE, out) == []
    assert "resolution" not in MF.generate_params_for_family(MF.TRELLIS2, panel, "DEFAULT")
    assert MF.generate_params_for_family(MF.TRELLIS_IMAGE, panel) is panel
    with pytest.raises(ValueError, match="from an image"):
        MF.generate_params_for_family(MF.TRELLIS2, {"prompt": "a chair", "formats": ["mesh"]})
    with pytest.raises(ValueError, match="one image"):
        MF.generate_params_for_family(MF.TRELLIS2, {"image": ["a.png", "b.png"]})


def test_obj_keeps_positions_and_corner_uvs(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.25]], np.float32)
    tris = [(0, 1, 2), (0, 2, 3)]
    uvs = [(0.1, 0.2), (0.9, 0.2), (0.1, 0.8), (0.5, 0.5), (0.3, 0.9)]
    tri_uvs = [(0, 1, 2), (3, 2, 4)]  # vertex 0 and 2 carry different UVs in the two triangles (a seam)
    path = write_triangle_obj(str(tmp_path / "m.obj"), positions, tris, uvs, tri_uvs)
    mesh = trimesh.load(path, process=False)  # as the backend reads it
    corners = mesh.vertices[mesh.faces]
    assert np.array_equal(corners.astype(np.float32), positions[np.array(tris)])
    assert np.allclose(mesh.visual.uv[mesh.faces], np.array(uvs)[np.array(tri_uvs)])
    with pytest.raises(ValueError):
        write_triangle_obj(str(tmp_path / "x.obj"), positions, tris, uvs, None)
    plain = trimesh.load(write_triangle_obj(str(tmp_path / "p.obj"), positions, tris), process=False)
    assert len(plain.faces) == 2
