"""Building generate/edit requests from the panel's settings, without Blender.

The bpy operators read the scene settings and hand them here; what goes on the
wire (names, formats, sampling overrides, which model answers) is decided in
one place and checked against ``protocol.validate_job_params``.
"""

import json
import re
import time

from . import paths
from . import protocol as P

FORMATS_BY_OUTPUT = {"BOTH": ["mesh", "gaussians"], "MESH": ["mesh"], "GAUSSIANS": ["gaussians"]}


def slug(text):
    """A file-name-safe, lower-case short form of a prompt or file name ('asset' when nothing is left)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text or "").strip("_")[:32].lower() or "asset"


def job_name(label, seed, kind=""):
    """'<slug>[_kind]_s<seed>_<timestamp>': the stem of every file a job writes."""
    middle = "_" + kind if kind else ""
    return "%s%s_s%d_%s" % (slug(label), middle, seed, time.strftime("%Y%m%d-%H%M%S"))


def sampling_overrides(settings):
    """The step counts and guidance strengths of 'Custom sampling', else {} (the model's own)."""
    if not settings.custom_sampling:
        return {}
    return {"ss_steps": settings.ss_steps, "slat_steps": settings.slat_steps,
            "ss_cfg": settings.ss_cfg, "slat_cfg": settings.slat_cfg}


def outputs_for_kinds(kinds):
    """The Outputs choice that re-creates objects of these kinds ('mesh', 'gaussians')."""
    kinds = set(kinds) & {"mesh", "gaussians"}
    if len(kinds) == 2:
        return "BOTH"
    return "GAUSSIANS" if kinds == {"gaussians"} else "MESH"


def check(rtype, params):
    """Raise ValueError with a user-facing message when the request is not valid."""
    problems = P.validate_job_params(rtype, params)
    if problems:
        raise ValueError("; ".join(problems).replace("give a prompt", "Type a prompt"))
    return params


def model_for(configured, params):
    """The model folder that answers ``params``: the configured one, else the embedded model of the
    request's kind (image-conditioned for an image, text-conditioned for a prompt); '' when none."""
    if configured:
        return configured
    return paths.embedded_model_dir(for_image=bool(params.get("image"))) or ""


def settings_snapshot(outputs, params, **extra):
    """What each generated object remembers (for re-generation and region edits); several images
    are remembered as one ';'-separated string (custom properties hold no lists of strings)."""
    image = params.get("image") or ""
    snapshot = {"prompt": params.get("prompt") or "", "image": ";".join(image) if isinstance(image, list) else image,
                "seed": params.get("seed", 0), "params": json.dumps(params, sort_keys=True), "outputs": outputs}
    snapshot.update(extra)
    return snapshot
