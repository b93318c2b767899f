"""TRELLIS.2 parity runners: the flow transformers, their sampler and the sparse-structure VAE."""
from __future__ import annotations

from typing import Dict

import torch

from trellis2_golden import Case, compare, compare_sparse, load_model, sparse
from trellis_backend.pipeline.samplers import build_sampler


def _check_derived_buffers(case: Case, model: torch.nn.Module) -> None:
    """`rope_phases` is computed by the model, absent from the checkpoint, and shaped as the case says."""
    for key, (shape, dtype) in case.case.get("derived_buffers_not_saved", {}).items():
        assert key not in case.state_dict, f"{key} should not be in the checkpoint"
        buf = getattr(model, key)
        assert list(buf.shape) == shape and str(buf.dtype).replace("torch.", "") == dtype, (key, buf.shape, buf.dtype)


def run_ss_flow(case: Case) -> Dict[str, float]:
    model = load_model(case)
    _check_derived_buffers(case, model)
    with torch.no_grad():
        v = model(case.inputs["x"], case.inputs["t"], case.inputs["cond"])
    return {"v": compare("v", v, case.outputs["v"])}


def run_slat_flow(case: Case) -> Dict[str, float]:
    model = load_model(case)
    inputs = case.inputs
    cond = [inputs[f"cond.{i}"] for i in range(2)] if "cond.0" in inputs else inputs["cond"]
    extra = {"concat_cond": sparse(inputs, "concat_cond")} if "concat_cond.feats" in inputs else {}
    with torch.no_grad():
        v = model(sparse(inputs, "x"), inputs["t"], cond, **extra)
    return {"v": compare_sparse("v", v, case.outputs)}


def run_ss_encoder(case: Case) -> Dict[str, float]:
    model = load_model(case)
    with torch.no_grad():
        z, mean, logvar = model(case.inputs["x"], sample_posterior=False, return_raw=True)
    return {k: compare(k, got, case.outputs[k]) for k, got in (("z", z), ("mean", mean), ("logvar", logvar))}


def run_ss_decoder(case: Case) -> Dict[str, float]:
    model = load_model(case)
    with torch.no_grad():
        return {"logits": compare("logits", model(case.inputs["z"]), case.outputs["logits"])}


def run_sampler(case: Case) -> Dict[str, float]:
    """The sampler with the case's pipeline.json settings, its predictions batched and one by one."""
    model = load_model(case)
    spec = case.config["sampler"]
    inputs, outputs = case.inputs, case.outputs
    is_sparse = "noise.feats" in inputs
    noise = sparse(inputs, "noise") if is_sparse else inputs["noise"]
    extra = {"concat_cond": sparse(inputs, "concat_cond")} if "concat_cond.feats" in inputs else {}
    feats = (lambda x: x.feats) if is_sparse else (lambda x: x)
    errors: Dict[str, float] = {}
    for batch_cfg in (True, False):
        res = build_sampler(spec).sample(model, noise, inputs["cond"], inputs["neg_cond"], **spec["params"],
                                         keep_trajectory=True, batch_cfg=batch_cfg, **extra)
        tag = "batched" if batch_cfg else "sequential"
        if is_sparse:
            errors[f"samples/{tag}"] = compare_sparse("samples", res.samples, outputs)
        else:
            errors[f"samples/{tag}"] = compare("samples", res.samples, outputs["samples"])
        for i in range(spec["params"]["steps"]):
            for key, seq in (("pred_x_t", res.pred_x_t), ("pred_x_0", res.pred_x_0)):
                errors[f"{key}.{i}/{tag}"] = compare(f"{key}.{i} ({tag})", feats(seq[i]), outputs[f"{key}.{i}"])
    return errors


RUNNERS = {
    "ss_flow": run_ss_flow,
    "ss_flow_ape_noshare": run_ss_flow,
    "slat_flow_img2shape": run_slat_flow,
    "slat_flow_imgshape2tex": run_slat_flow,
    "slat_flow_SLatFlowModel_ape_varlen": run_slat_flow,
    "ss_encoder": run_ss_encoder,
    "ss_decoder": run_ss_decoder,
    "sampler_ss": run_sampler,
    "sampler_shape_slat": run_sampler,
    "sampler_tex_slat": run_sampler,
}
