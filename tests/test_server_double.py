"""TEST DOUBLE ONLY -- a stand-in pipeline for protocol-level server tests.

Never shipped (build_addon.py bundles backend/ and kernels/, not tests/).
The server loads it through its hidden ``--pipeline-factory
test_server_double:load`` option. It implements the pipeline interface the
server calls (``generate`` / ``edit_region`` with ``progress`` and ``cancel``)
and misbehaves on request via magic prompts, so every server code path can be
driven without torch:

- ``raise:oom``  -> RuntimeError("CUDA out of memory ...")
- ``raise:bad``  -> BadInputError (a TrellisError with a hint)
- ``raise:bug``  -> ZeroDivisionError
- ``print``      -> prints to stdout mid-job (must not corrupt the protocol)
- ``crash``      -> os._exit(3) mid-job
- ``slow``       -> 0.2 s per step (time to cancel)
- ``nocheck``    -> never looks at ``cancel`` (the server's progress hook must stop it)
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

    def _run(self, kind, prompt, image, seed, formats, output_dir, name, progress, cancel, steps=4):
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
            with open(path, "wb") as fh:
                fh.write(b"fake " + ext.encode())
            files[ext] = path
        files["slat"] = os.path.join(output_dir, name + ".slat.npz")
        with open(files["slat"], "wb") as fh:
            fh.write(b"fake slat")
        meta = {"kind": kind, "prompt": prompt, "image": image, "seed": seed, "device": self.device,
                "calls": self.calls}
        with open(os.path.join(output_dir, name + ".json"), "w") as fh:
            json.dump(meta, fh)
        return {"files": files, "meta": meta}

    def generate(self, prompt=None, image=None, seed=0, ss_steps=None, slat_steps=None, ss_cfg=None,
                 slat_cfg=None, formats=("mesh", "gaussians"), output_dir=".", name="out", progress=None,
                 cancel=None):
        return self._run("generate", prompt, image, seed, formats, output_dir, name, progress, cancel,
                         steps=ss_steps or 4)

    def edit_region(self, sidecar_path, region=None, prompt=None, image=None, seed=0, formats=("mesh",),
                    output_dir=".", name="edit", progress=None, cancel=None, **kw):
        if not os.path.exists(sidecar_path):
            raise MissingFileError("sidecar not found: %s" % sidecar_path)
        return self._run("edit", prompt, image, seed, formats, output_dir, name, progress, cancel)


def load(folder, models_root=None, device="auto"):
    if not os.path.exists(os.path.join(folder, "pipeline.json")):
        raise MissingFileError("no pipeline.json in %s" % folder)
    time.sleep(0.05)
    return FakePipeline(folder, device)
