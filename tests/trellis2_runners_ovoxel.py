"""Parity runners for the O-Voxel golden cases of TRELLIS.2 (``RUNNERS = {case name: fn(case)}``).

``case`` is a `trellis2_golden.Case`. Each runner raises AssertionError with the largest error when
the backend disagrees with the reference, and returns the relative error per output.
"""
from __future__ import annotations

import torch

from trellis_backend.representations.ovoxel import flexible_dual_grid_to_mesh, mesh_to_flexible_dual_grid

VERTEX_RTOL = 1e-4


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / (b.abs().max() + 1e-12)).max()) if b.numel() else 0.0


def run_fdg_to_mesh(case) -> dict:
    """Three calls of flexible_dual_grid_to_mesh: faces equal exactly, vertices to 1e-4 relative."""
    args, inputs, outputs = case.config["args"], case.inputs, case.outputs
    errors = {}
    calls = {"split": (inputs["split_weight"], False), "minangle": (None, False), "train": (inputs["split_weight"], True)}
    for name, (split_weight, train) in calls.items():
        vertices, faces = flexible_dual_grid_to_mesh(
            inputs["coords"], inputs["dual_vertices"], inputs["intersected"], split_weight,
            grid_size=args["grid_size"], aabb=args["aabb"], train=train)
        ref_v, ref_f = outputs[f"{name}.vertices"], outputs[f"{name}.faces"]
        assert tuple(faces.shape) == tuple(ref_f.shape), f"{name}: faces {tuple(faces.shape)} != {tuple(ref_f.shape)}"
        assert torch.equal(faces.long(), ref_f.long()), f"{name}: {(faces.long() != ref_f.long()).any(1).sum()} faces differ"
        assert tuple(vertices.shape) == tuple(ref_v.shape), f"{name}: vertices {tuple(vertices.shape)} != {tuple(ref_v.shape)}"
        err = _max_rel(vertices, ref_v)
        assert err <= VERTEX_RTOL, f"{name}: vertex max relative error {err:.3g}"
        errors[f"{name}.vertices"] = err
    return errors


def run_mesh_to_fdg(case) -> dict:
    """mesh_to_flexible_dual_grid: coords (in the reference's order) and flags exactly, dual vertices to 1e-4.

    (The backend repeats the reference's float32 arithmetic, so on the small case the dual vertices
    are in fact bit-identical; the tolerance is the suite's.)
    """
    inputs, outputs = case.inputs, case.outputs
    coords, dual, inter = mesh_to_flexible_dual_grid(inputs["vertices"], inputs["faces"], **case.config["args"])
    ref_c, ref_d, ref_i = outputs["coords"], outputs["dual_vertices"], outputs["intersected"]
    assert tuple(coords.shape) == tuple(ref_c.shape), f"{coords.shape[0]} voxels, reference {ref_c.shape[0]}"
    assert torch.equal(coords, ref_c.int()), "voxel coordinates (or their order) differ"
    assert torch.equal(inter, ref_i.bool()), f"{(inter != ref_i).any(1).sum()} intersected flags differ"
    err = _max_rel(dual, ref_d)
    assert err <= VERTEX_RTOL, f"dual vertices: max relative error {err:.3g}"
    return {"dual_vertices": err}


RUNNERS = {
    "ovoxel_fdg_to_mesh": run_fdg_to_mesh,
    "ovoxel_mesh_to_fdg": run_mesh_to_fdg,
}
