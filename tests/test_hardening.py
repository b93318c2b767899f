"""Issue 18, one group of tests per defect class: no request kills the backend, every job ends with an
answer, nothing the user had is overwritten, files appear as a set, user mistakes name the field,
broken model folders name the file, resources have limits, files follow the umask.

Servers are started as the add-on starts them (subprocess, pipes): the test double where the
pipeline does not matter, the real pipeline on tiny random-weight folders where it does.
"""
import hashlib
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from test_server import ROOT, TESTS, P, ServerProc

from trellis_backend.errors import BadInputError, Cancelled, CheckpointMismatchError, OutOfMemoryError  # noqa: E402

from trellis_lab import random_model  # noqa: E402


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    return Path(random_model.make_random_model(tmp_path_factory.mktemp("models") / "text", kind="text"))


@pytest.fixture(scope="module")
def pipe(tiny_text):
    from trellis_backend.pipeline import TrellisPipeline

    return TrellisPipeline.from_pretrained(tiny_text, device="cpu")


@pytest.fixture
def double(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "pipeline.json").write_text(json.dumps({"name": "fake"}))
    s = ServerProc(model, "--output-dir", str(tmp_path / "out"))
    assert s.next()["type"] == P.READY
    yield s
    s.close()


@pytest.fixture(scope="module")
def real_server(tiny_text, tmp_path_factory):
    out = tmp_path_factory.mktemp("real_out")
    s = ServerProc(tiny_text, "--output-dir", str(out), factory=None)
    assert s.next(timeout=120)["type"] == P.READY
    s.out = out
    yield s
    s.close()


def alive(server):
    """The server answers a ping (and is therefore still reading requests)."""
    rid = P.new_id("ping")
    server.send({"id": rid, "type": "ping"})
    server.until(lambda e: e["id"] == rid and e["type"] == P.PONG, timeout=30)
    return server.proc.poll() is None


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_cli(*args, timeout=300, memory_cap=8 << 30):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "backend"), os.path.join(ROOT, "kernels")])

    def cap():  # a run that ignores a bound must not take the whole machine down with it
        resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))

    return subprocess.run([sys.executable, "-m", "trellis_backend", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT, preexec_fn=cap)


# ------------------------------------------------- class 1: a request kills the server
def test_deeply_nested_line_is_a_protocol_error_and_the_server_lives(double):
    double.send(b"[" * 5000 + b"]" * 5000 + b"\n")
    ev = double.next()
    assert ev["type"] == P.ERROR and ev["error_type"] == P.ERR_PROTOCOL and "deep" in ev["message"]
    double.send(b'{"id": "deep-1", "type": "generate", "params": {"prompt": ' + b"[" * 3000 + b"]" * 3000 + b"}}\n")
    ev = double.next()
    assert ev["type"] == P.ERROR and ev["id"] == "deep-1"
    assert alive(double)


def test_unbounded_steps_are_refused_at_once(double):
    req = P.request(P.GENERATE, {"prompt": "a chair", "ss_steps": 10 ** 9})
    double.send(req)
    ev = double.until(lambda e: e["id"] == req["id"], timeout=10)[-1]
    assert ev["type"] == P.ERROR and ev["error_type"] == P.ERR_BAD_REQUEST and "ss_steps" in ev["message"]
    assert alive(double)


def test_cli_steps_have_an_upper_bound(tiny_text, tmp_path):
    r = run_cli("generate", "--model", tiny_text, "--prompt", "a chair", "--steps", 10 ** 9, "--out", tmp_path,
                timeout=120, memory_cap=6 << 30)
    assert r.returncode == 2 and "--steps must be between 1 and" in r.stderr, r.stderr[-2000:]
    assert not list(tmp_path.iterdir())


# --------------------------------------------------- class 2: every job ends with an answer
def test_nan_guidance_is_refused_naming_the_field(real_server):
    line = b'{"id": "nan-1", "type": "generate", "params": {"prompt": "a chair", "slat_cfg": NaN}}\n'
    real_server.send(line)
    ev = real_server.until(lambda e: e["id"] == "nan-1" and e["type"] in (P.RESULT, P.ERROR), timeout=60)[-1]
    assert ev["type"] == P.ERROR and ev["error_type"] == P.ERR_BAD_REQUEST and "slat_cfg" in ev["message"]


def test_unencodable_result_becomes_an_error_event(double):
    req = P.request(P.GENERATE, {"prompt": "result:nan", "name": "nan"})
    double.send(req)
    ev = double.finish(req["id"], timeout=20)[-1]
    assert ev["type"] == P.ERROR and "cannot be sent" in ev["message"]
    assert alive(double)


def test_oversize_request_line_is_answered_with_its_id(double):
    filler = b"x" * (P.MAX_LINE_BYTES + 1024)
    double.send(b'{"id": "huge-1", "type": "generate", "params": {"prompt": "' + filler + b'"}}\n')
    ev = double.next(timeout=60)
    assert ev["type"] == P.ERROR and ev["id"] == "huge-1" and ev["error_type"] == P.ERR_PROTOCOL
    assert "limit" in ev["message"]
    assert alive(double)


def test_resampling_loop_honours_cancel():
    from trellis_backend.pipeline.samplers import FlowEulerSampler

    cancel = threading.Event()
    calls = []

    def hook(i, t_prev, x):
        calls.append(i)
        cancel.set()  # the user presses Cancel during the first step's resampling
        assert len(calls) < 1000, "the resampling loop ignored cancel"
        return x

    model = lambda x, t, cond, **kw: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(Cancelled):
        FlowEulerSampler().sample(model, torch.randn(1, 2, 4, 4, 4), torch.zeros(1, 1, 2), torch.zeros(1, 1, 2),
                                  steps=3, step_hook=hook, resample=10 ** 6, cancel=cancel)
    assert len(calls) <= 2


# ------------------------------------------------------ class 3: never overwrite a file
def test_generate_with_an_existing_name_keeps_the_old_files(real_server):
    first = P.request(P.GENERATE, {"prompt": "a chair", "seed": 1, "name": "mine", "formats": ["mesh"]})
    real_server.send(first)
    one = real_server.finish(first["id"], timeout=300)[-1]
    assert one["type"] == P.RESULT, one
    before = {k: digest(v) for k, v in one["files"].items()}
    second = P.request(P.GENERATE, {"prompt": "a lamp", "seed": 2, "name": "mine", "formats": ["mesh"]})
    real_server.send(second)
    two = real_server.finish(second["id"], timeout=300)[-1]
    assert two["type"] == P.RESULT, two
    assert set(one["files"].values()).isdisjoint(two["files"].values())
    assert Path(two["files"]["glb"]).name == "mine_2.glb"
    assert {k: digest(v) for k, v in one["files"].items()} == before


def test_cli_default_name_never_overwrites(tiny_text, tmp_path):
    runs = [run_cli("generate", "--model", tiny_text, "--prompt", "a red chair", "--formats", "glb", "--out", tmp_path,
                    "--quiet", "--json", timeout=300) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    files = [json.loads(r.stdout)["files"]["glb"] for r in runs]
    assert Path(files[0]).name == "a_red_chair_seed0.glb" and Path(files[1]).name == "a_red_chair_seed0_2.glb"


# --------------------------------------------- class 4: a job's files appear as a set or not at all
def test_cancel_during_export_leaves_nothing_under_a_final_name(pipe, tmp_path):
    cancel = threading.Event()

    def progress(stage, step, total, message=""):
        if stage == "export" and step == 1:  # the GLB is written, the PLY and sidecar are next
            cancel.set()

    with pytest.raises(Cancelled, match="nothing was written"):
        pipe.generate(prompt="a chair", output_dir=tmp_path, name="job", progress=progress, cancel=cancel)
    assert sorted(os.listdir(tmp_path)) == []


def test_stale_temporaries_and_half_commits_are_removed_on_start(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (out / "keep.glb").write_bytes(b"the user's file")
    (out / f".a.glb.trellis-tmp-{pid}-0badcafe-1234abcd").write_bytes(b"half")
    (out / f".a.ply.partial-{pid}-0badcafe-xyz").write_bytes(b"half")
    legacy = out / ".b.glb.partial-k2j3h4ab"  # an older version's temporary (no owner)
    legacy.write_bytes(b"half")
    os.utime(legacy, (time.time() - 3600, time.time() - 3600))
    placed = out / "c.glb"  # a kill -9 between two renames of a commit: c.glb is there, its sidecar is not
    placed.write_bytes(b"glb of an unfinished job")
    st = placed.stat()
    (out / f".trellis-commit-{pid}-0badcafe-77777777.json").write_text(json.dumps({"stem": "c", "entries": [
        {"final": "c.glb", "temp": f".c.glb.trellis-tmp-{pid}-0badcafe-1", "ino": st.st_ino, "dev": st.st_dev},
        {"final": "c.slat.npz", "temp": f".c.slat.npz.trellis-tmp-{pid}-0badcafe-2", "ino": 1, "dev": st.st_dev}]}))
    (out / f".c.slat.npz.trellis-tmp-{pid}-0badcafe-2").write_bytes(b"sidecar")
    model = tmp_path / "model"
    model.mkdir()
    (model / "pipeline.json").write_text(json.dumps({"name": "fake"}))
    s = ServerProc(model, "--output-dir", str(out))
    try:
        assert s.next()["type"] == P.READY
        assert sorted(os.listdir(out)) == ["keep.glb"]
        assert (out / "keep.glb").read_bytes() == b"the user's file"
    finally:
        s.close()


# ------------------------------------------- class 5: user mistakes are named, not "a bug"
@pytest.mark.parametrize("params, field", [
    ({"prompt": "a chair", "seed": 2 ** 64}, "seed"),
    ({"prompt": "a chair", "name": 5}, "name"),
    ({"prompt": "a chair", "ss_cfg": "high"}, "ss_cfg"),
    ({"prompt": "a chair", "slat_steps": True}, "slat_steps"),
    ({"prompt": "a chair\ud800"}, "prompt"),
    ({"prompt": "a chair", "name": "a\ud800b"}, "name"),
    ({"prompt": "a chair", "formats": ["mesh", 3]}, "formats[1]"),
    ({"prompt": "a chair", "output_dir": "__FILE__"}, "output_dir"),
    ({"prompt": "a chair", "image": "/no/such/image.png"}, "image"),
])
def test_bad_generate_fields_name_the_field(double, tmp_path, params, field):
    if params.get("output_dir") == "__FILE__":
        (tmp_path / "a_file").write_text("x")
        params = dict(params, output_dir=str(tmp_path / "a_file"))
    req = P.request(P.GENERATE, params)
    double.send(req)
    ev = double.finish(req["id"])[-1]
    assert ev["type"] == P.ERROR and ev["error_type"] in (P.ERR_BAD_REQUEST, "MissingFileError"), ev
    assert f"'{field}'" in ev["message"], ev["message"]
    assert alive(double)


@pytest.mark.parametrize("params, field", [
    ({"margin": "x"}, "margin"),
    ({"keep_structure": "no"}, "keep_structure"),
    ({"resample": 10 ** 6}, "resample"),
    ({"region": {"voxels": [[1, 2, 3], [4, 5]]}}, "region.voxels[1]"),
    ({"region": {"voxels": [[1, 2, "z"]]}}, "region.voxels[0][2]"),
    ({"region": {"box_min": "a", "box_max": [1, 1, 1]}}, "region.box_min"),
    ({"region": {"box_min": [0, 0, "__1e400__"], "box_max": [1, 1, 1]}}, "region.box_min[2]"),
])
def test_bad_edit_fields_name_the_field(double, tmp_path, params, field):
    sidecar = tmp_path / "x.slat.npz"
    sidecar.write_bytes(b"x")
    base = {"sidecar_path": str(sidecar), "region": {"box_min": [0, 0, 0], "box_max": [.1, .1, .1]}}
    req = P.request(P.EDIT, {**base, **params})
    double.send(P.encode(req).replace(b'"__1e400__"', b"1e400"))  # JSON allows it; Python reads it as inf
    ev = double.finish(req["id"])[-1]
    assert ev["type"] == P.ERROR and ev["error_type"] == P.ERR_BAD_REQUEST, ev
    assert f"'{field}'" in ev["message"], ev["message"]


# -------------------------------------------- class 6: broken model folders name the file
@pytest.fixture
def model_copy(tiny_text, tmp_path):
    dst = tmp_path / "org" / "model"
    shutil.copytree(tiny_text, dst)
    return dst


def _load(folder, **kw):
    from trellis_backend.pipeline import TrellisPipeline

    return TrellisPipeline.from_pretrained(folder, device="cpu", **kw)


@pytest.mark.parametrize("damage", ["empty", "truncated", "header"])
def test_damaged_safetensors_name_the_file(model_copy, damage):
    weights = model_copy / "ckpts" / "slat_flow_tiny.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "header": b"\xff" * 64 + data[64:]}[damage])
    with pytest.raises(CheckpointMismatchError) as err:
        _load(model_copy)
    assert "slat_flow_tiny.safetensors" in str(err.value)


def test_binary_checkpoint_json_names_the_file(model_copy):
    (model_copy / "ckpts" / "ss_flow_tiny.json").write_bytes(bytes(range(256)))
    with pytest.raises(CheckpointMismatchError, match="ss_flow_tiny.json.*not UTF-8"):
        _load(model_copy)


def test_wrong_config_type_names_file_and_field(model_copy):
    cfg_file = model_copy / "ckpts" / "slat_flow_tiny.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["args"]["model_channels"] = "64"
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError, match=r"slat_flow_tiny.json: args.model_channels must be"):
        _load(model_copy)


def test_wrong_pipeline_json_type_names_the_field(model_copy):
    cfg_file = model_copy / "pipeline.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["args"]["slat_sampler"]["params"]["steps"] = "many"
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError, match=r"pipeline.json: args.slat_sampler.params.steps"):
        _load(model_copy)


def test_random_bytes_in_weights_are_detected_at_load(model_copy):
    weights = model_copy / "ckpts" / "slat_dec_mesh_tiny.safetensors"
    data = bytearray(weights.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]
    data[start:] = np.random.default_rng(0).integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointMismatchError, match="slat_dec_mesh_tiny.safetensors.*not trained weights"):
        _load(model_copy)


def test_absurd_config_is_out_of_memory_not_a_crash(model_copy):
    cfg_file = model_copy / "ckpts" / "slat_flow_tiny.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["args"]["model_channels"] = 1 << 19  # a few linear layers of 2^38 weights: terabytes
    cfg["args"]["num_head_channels"] = 1 << 10
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(OutOfMemoryError, match="slat_flow_tiny.json.*GiB"):
        _load(model_copy)


def test_references_leaving_the_folder_need_an_explicit_root(model_copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(model_copy / "ckpts", elsewhere)
    cfg_file = model_copy / "pipeline.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["args"]["models"]["slat_decoder_gs"] = "../../elsewhere/slat_dec_gs_tiny"
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError, match="args.models.slat_decoder_gs.*outside the model folder"):
        _load(model_copy)
    cfg["args"]["models"]["slat_decoder_gs"] = str(elsewhere / "slat_dec_gs_tiny")  # absolute
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError, match="outside the model folder"):
        _load(model_copy)
    assert _load(model_copy, models_root=tmp_path).model_paths["slat_decoder_gs"] is not None


# ------------------------------------------------------------ class 7: resource limits
def test_large_images_are_downscaled_on_read(tmp_path):
    from trellis_backend.pipeline.conditioning.preprocess import load_image
    from trellis_backend.pipeline.limits import MAX_IMAGE_SIDE

    big = tmp_path / "wide.png"
    from PIL import Image

    Image.new("RGBA", (6000, 1500), (200, 30, 30, 255)).save(big)
    img = load_image(big)
    assert max(img.size) == MAX_IMAGE_SIDE and img.size[1] == MAX_IMAGE_SIDE // 4


def _png_header_only(path, width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def test_image_bombs_are_refused_before_decoding(tmp_path):
    from trellis_backend.pipeline.conditioning.preprocess import load_image

    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 30000, 30000)
    with pytest.raises(BadInputError, match="too large"):
        load_image(bomb)


def test_voxel_count_over_the_limit_is_refused_with_a_hint(pipe, tmp_path, monkeypatch):
    from trellis_backend.pipeline import limits

    monkeypatch.setitem(limits.VOXEL_WARN, "cpu", 5)
    messages = []
    progress = lambda stage, step, total, msg="": messages.append(msg)  # noqa: E731
    monkeypatch.setitem(limits.VOXEL_LIMIT, "cpu", 10 ** 6)
    pipe.generate(prompt="a chair", formats=("mesh",), progress=progress)
    assert any(m.startswith("warning:") and "voxels" in m for m in messages)
    monkeypatch.setitem(limits.VOXEL_LIMIT, "cpu", 10)
    with pytest.raises(OutOfMemoryError, match="voxels") as err:
        pipe.generate(prompt="a chair", output_dir=tmp_path, formats=("mesh",))
    assert "seed" in err.value.hint
    assert os.listdir(tmp_path) == []


def test_limits_are_documented():
    from trellis_backend.pipeline import limits

    doc = (Path(ROOT) / "docs" / "PIPELINE.md").read_text()
    for value in (limits.MAX_STEPS, limits.MAX_IMAGE_SIDE, limits.VOXEL_WARN["cpu"], limits.VOXEL_LIMIT["cpu"],
                  limits.MAX_RESAMPLE, limits.MAX_MARGIN):
        assert f"{value:,}" in doc or str(value) in doc, value


# ---------------------------------------------------------------- class 8: file modes
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_output_files_follow_the_umask(pipe, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        res = pipe.generate(prompt="a chair", output_dir=tmp_path, name="m")
    finally:
        os.umask(old)
    assert {k: os.stat(v).st_mode & 0o777 for k, v in res["files"].items()} == {k: mode for k in res["files"]}
