"""Parity runners for the O-Voxel golden cases of TRELLIS.2 (``RUNNERS = {case name: fn(case)}``).

``case`` is what ``golden_cases.load_case(name, family="trellis2")`` returns:
``(config, case_json, state_dict, inputs, outputs)``. Each runner raises AssertionError with the
largest error when the backend disagrees with the reference.
"""
from __future__ import annotations

import numpy as np
import torch

from trellis_backend.representations.ovoxel import flexible_dual_grid_to_mesh, mesh_to_flexible_dual_grid
from trellis_backend.representations.ovoxel.mesh_to_dual_grid import voxel_quadrics

VERTEX_RTOL = 1e-4


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / (b.abs().max() + 1e-12)).max()) if b.numel() else 0.0


def run_fdg_to_mesh(case) -> None:
    """Three calls of flexible_dual_grid_to_mesh: faces equal exactly, vertices to 1e-4 relative."""
    config, _, _, inputs, outputs = case
    args = config["args"]
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


def run_mesh_to_fdg(case) -> None:
    """mesh_to_flexible_dual_grid: coords (in the reference's order) and flags exactly, dual vertices to 1e-4.

    The reference solves each voxel's box-constrained QEF in float32; where the minimum lies on the
    voxel's boundary, its choice between a face, an edge and a corner candidate is decided by float32
    round-off when their errors agree to ~1e-7 (this backend solves in float64). Such voxels may
    differ by more than 1e-4, but only when both points lie on the voxel's box and the QEF errors of
    both agree to 1e-6 of the quadric's scale; at most 1 % of the voxels.
    """
    config, _, _, inputs, outputs = case
    args = config["args"]
    coords, dual, inter = mesh_to_flexible_dual_grid(inputs["vertices"], inputs["faces"], **args)
    ref_c, ref_d, ref_i = outputs["coords"], outputs["dual_vertices"], outputs["intersected"]
    assert tuple(coords.shape) == tuple(ref_c.shape), f"{coords.shape[0]} voxels, reference {ref_c.shape[0]}"
    assert torch.equal(coords, ref_c.int()), "voxel coordinates (or their order) differ"
    assert torch.equal(inter, ref_i.bool()), f"{(inter != ref_i).any(1).sum()} intersected flags differ"
    diff = (dual - ref_d).abs().max(dim=1).values
    off = torch.nonzero(diff > VERTEX_RTOL).reshape(-1).numpy()
    if off.size:
        assert off.size <= 0.01 * len(coords), f"{off.size} dual vertices off by > 1e-4 (max {diff.max():.3g})"
        grid = np.asarray(args["grid_size"])
        vs = np.float32(1.0) / grid  # aabb of the golden cases is the unit box
        q = voxel_quadrics(inputs["vertices"], inputs["faces"], **args)[off]
        for k, row in enumerate(off):
            ours, ref = dual[row].double().numpy(), ref_d[row].double().numpy()
            lo, hi = coords[row].numpy() * vs, (coords[row].numpy() + 1) * vs
            on_box = lambda p: bool(np.any(np.isclose(p, lo, atol=1e-6) | np.isclose(p, hi, atol=1e-6)))
            e_ours = np.append(ours, 1) @ q[k] @ np.append(ours, 1)
            e_ref = np.append(ref, 1) @ q[k] @ np.append(ref, 1)
            tie = abs(e_ours - e_ref) <= 1e-6 * np.abs(q[k]).max()
            assert on_box(ours) and on_box(ref) and tie, (
                f"voxel {coords[row].tolist()}: dual vertex {ours} vs reference {ref} (QEF {e_ours:.3g} vs {e_ref:.3g})")


RUNNERS = {
    "ovoxel_fdg_to_mesh": run_fdg_to_mesh,
    "ovoxel_mesh_to_fdg": run_mesh_to_fdg,
}
