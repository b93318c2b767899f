"""TEST DOUBLE ONLY -- a stand-in pipeline for protocol-level server tests.

Never shipped (build_addon.py bundles backend/ and kernels/, not tests/).
The server loads it through its hidden ``--pipeline-factory
test_server_double:load`` and ``--region-editor test_server_double:edit_region``
options. It implements what the server calls (``pipe.generate`` and
``edit_region(pipe, ...)`` with ``progress`` and ``cancel``) and misbehaves on request via magic prompts, so every server code path can be
driven without torch:

- ``raise:oom``  -> RuntimeError("CUDA out of memory ...")
- ``raise:bad``  -> BadInputError (a TrellisError with a hint)
- ``raise:bug``  -> ZeroDivisionError
- ``print``      -> prints to stdout mid-job (must not corrupt the protocol)
- ``crash``      -> os._exit(3) mid-job
- ``slow``       -> 0.2 s per step (time to cancel)
- ``nocheck``    -> never looks at ``cancel`` (the server's progress hook must stop it)
- ``result:nan`` -> finishes with a NaN in its meta (the result cannot be encoded as JSON)
"""

import json
import os
import sys
import time

from trellis_backend.errors import BadInputError, Cancelled, MissingFileError

# No tests here; keep pytest from collecting anything by accident.
__test__ = False


class FakePipeline:
    def __init__(self, folder, device):
        self.folder = folder
        self.device = device
        self.calls = 0

    def _run(self, kind, prompt, image, seed, formats, output_dir, name, progress, cancel, steps=4, **extra_meta):
        prompt = prompt or ""
        self.calls += 1
        delay = 0.2 if "slow" in prompt else 0.01
        for stage in ("sparse_structure", "slat", "decode"):
            for step in range(1, steps + 1):
                if cancel is not None and cancel.is_set() and "nocheck" not in prompt:
                    raise Cancelled("cancelled in %s" % stage)
                time.sleep(delay)
                if stage == "slat" and step == 2:
                    if prompt == "raise:oom":
                        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
                    if prompt == "raise:bad":
                        raise BadInputError("the image is empty")
                    if prompt == "raise:bug":
                        return 1 // 0
                    if prompt == "print":
                        print("stray library output on stdout")
                        sys.stdout.flush()
                        os.write(1, b"stray fd-1 output\n")
                    if prompt == "crash":
                        os._exit(3)
                progress(stage, step, steps, "%s step %d" % (stage, step))
        os.makedirs(output_dir, exist_ok=True)
        files = {}
        for fmt in formats or ("mesh", "gaussians"):
            ext = {"mesh": "glb", "gaussians": "ply"}[fmt]
            path = os.path.join(output_dir, "%s.%s" % (name, ext))
            (write_glb if ext == "glb" else write_ply)(path, seed or 0)
            files[ext] = path
        files["slat"] = os.path.join(output_dir, name + ".slat.npz")
        with open(files["slat"], "wb") as fh:
            fh.write(b"fake slat")
        meta = {"kind": kind, "prompt": prompt, "image": image, "seed": seed, "device": self.device,
                "calls": self.calls, **extra_meta}
        if prompt == "result:nan":
            meta["score"] = float("nan")
        with open(os.path.join(output_dir, name + ".json"), "w") as fh:
            json.dump(meta, fh)
        return {"files": files, "meta": meta}

    def generate(self, prompt=None, image=None, seed=0, ss_steps=None, slat_steps=None, ss_cfg=None,
                 slat_cfg=None, formats=("mesh", "gaussians"), output_dir=".", name="out", progress=None,
                 cancel=None, multi_image_mode="stochastic"):
        return self._run("generate", prompt, image, seed, formats, output_dir, name, progress, cancel,
                         steps=ss_steps or 4, multi_image_mode=multi_image_mode)



def edit_region(pipe, sidecar_path, region=None, prompt=None, image=None, seed=0, formats=("mesh",), output_dir=".",
                name="edit", progress=None, cancel=None, **kw):
    """The region editor the server calls (as `trellis_backend.edit.edit_region`), on a FakePipeline."""
    if not os.path.exists(sidecar_path):
        raise MissingFileError("sidecar not found: %s" % sidecar_path)
    return pipe._run("edit", prompt, image, seed, formats, output_dir, name, progress, cancel)


def write_glb(path, seed=0):
    """A small vertex-coloured box as GLB (real file, so importers can be exercised)."""
    try:
        import numpy as np
        import trimesh
    except ImportError:
        with open(path, "wb") as fh:
            fh.write(b"fake glb")
        return
    box = trimesh.creation.box(extents=(0.6, 0.4, 0.8))
    rng = np.random.default_rng(seed)
    box.visual = trimesh.visual.ColorVisuals(box, vertex_colors=rng.integers(0, 255, (len(box.vertices), 4),
                                                                              dtype=np.uint8))
    box.visual.vertex_colors[:, 3] = 255
    box.export(path)


def write_ply(path, seed=0, count=200):
    """INRIA 3DGS layout (raw, pre-activation values; y/z swapped like the reference)."""
    try:
        import numpy as np
        from plyfile import PlyData, PlyElement
    except ImportError:
        with open(path, "wb") as fh:
            fh.write(b"fake ply")
        return
    rng = np.random.default_rng(seed)
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
             + ["scale_%d" % i for i in range(3)] + ["rot_%d" % i for i in range(4)])
    data = np.zeros(count, dtype=[(n, "f4") for n in names])
    xyz = rng.uniform(-0.4, 0.4, (count, 3))
    data["x"], data["y"], data["z"] = xyz[:, 0], -xyz[:, 2], xyz[:, 1]
    for i in range(3):
        data["f_dc_%d" % i] = rng.normal(0, 1, count)
        data["scale_%d" % i] = np.log(rng.uniform(0.005, 0.02, count))
    data["opacity"] = rng.normal(0, 2, count)
    q = rng.normal(0, 1, (count, 4))
    for i in range(4):
        data["rot_%d" % i] = q[:, i]
    PlyData([PlyElement.describe(data, "vertex")]).write(path)


def load(folder, models_root=None, device="auto"):
    if not os.path.exists(os.path.join(folder, "pipeline.json")):
        raise MissingFileError("no pipeline.json in %s" % folder)
    time.sleep(0.05)
    return FakePipeline(folder, device)
