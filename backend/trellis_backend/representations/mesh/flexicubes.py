"""FlexiCubes dual-vertex extraction on a sparse set of cubes.

The reference runs FlexiCubes over every cube of a dense ``res³`` grid and then
keeps the cubes whose corners change sign. Here the caller hands over only
candidate cubes (any superset of the surface cubes, sorted by their linear key
``(x·res + y)·res + z``) with their corners as indices into a compact vertex
table whose order follows the dense vertex order. Every step that the
reference does with dense arrays (the problematic-configuration lookup of the
neighbouring cube, the edge sharing) is done with sorted keys and
``searchsorted``, so memory grows with the surface, not with ``res³``.

Because cubes, vertices and edges are enumerated in the same relative order as
in the dense reference, the resulting mesh is the reference's mesh: same dual
vertices (up to float round-off), same quads, same winding and the same
quad-splitting decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .tables import device_tables


@dataclass
class FlexiCubesOutput:
    vertices: torch.Tensor  # [V, 3]
    faces: torch.Tensor  # [F, 3] long
    l_dev: torch.Tensor  # [Vd] deviation regulariser per dual vertex (training only, else empty)
    colors: Optional[torch.Tensor]  # [V, C] or None


def cube_keys(cube_coords: torch.Tensor, res: int) -> torch.Tensor:
    """Linear key of integer cube coordinates; monotone in (x, y, z) order like the dense layout."""
    c = cube_coords.long()
    return (c[..., 0] * res + c[..., 1]) * res + c[..., 2]


def sorted_lookup(sorted_keys: torch.Tensor, queries: torch.Tensor):
    """Index of each query in ``sorted_keys`` and whether it is present."""
    if sorted_keys.numel() == 0:
        zeros = torch.zeros_like(queries)
        return zeros, torch.zeros_like(queries, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, queries).clamp_(max=sorted_keys.numel() - 1)
    return pos, sorted_keys[pos] == queries


def _zero_crossing(weights_ex2x1: torch.Tensor, values_ex2xc: torch.Tensor) -> torch.Tensor:
    """Linear interpolation to the zero of ``weights`` along each edge, written like the reference
    (weights [w1, -w0], weighted sum, divided by the weight sum) to keep its round-off."""
    w = torch.cat([weights_ex2x1[:, 1:2], -weights_ex2x1[:, 0:1]], dim=1)
    return (values_ex2xc * w).sum(1) / w.sum(1)


def _resolve_case_ids(occ_sx8, cube_coords, res, tables):
    """Topology case per surface cube, inverting pairs of adjacent problematic (C16/C19) cubes."""
    case_ids = (occ_sx8.long() * tables["corner_bits"]).sum(-1)
    check = tables["check"][case_ids]
    problem = torch.nonzero(check[:, 0] == 1).squeeze(1)
    if problem.numel() == 0:
        return case_ids
    problem_coords = cube_coords[problem].long()
    problem_keys = cube_keys(problem_coords, res)  # sorted: surface cubes are sorted by key
    neighbour = problem_coords + check[problem, 1:4]
    inside = ((neighbour >= 0) & (neighbour < res)).all(-1)
    _, found = sorted_lookup(problem_keys, cube_keys(neighbour.clamp(0, res - 1), res))
    invert = problem[inside & found]
    case_ids = case_ids.clone()
    case_ids[invert] = check[invert, 4]
    return case_ids


def sparse_flexicubes(
    vertex_pos: torch.Tensor,
    vertex_sdf: torch.Tensor,
    cube_corner_idx: torch.Tensor,
    cube_coords: torch.Tensor,
    res: int,
    beta: torch.Tensor,
    alpha: torch.Tensor,
    gamma_f: torch.Tensor,
    vertex_colors: Optional[torch.Tensor] = None,
    training: bool = False,
    weight_scale: float = 0.99,
) -> FlexiCubesOutput:
    """Extract the FlexiCubes mesh of the given cubes.

    Args:
        vertex_pos: [Vg, 3] deformed grid-vertex positions.
        vertex_sdf: [Vg] scalar field (negative inside).
        cube_corner_idx: [C, 8] vertex index of each cube corner (corner order of ``tables``).
        cube_coords: [C, 3] integer cube coordinates in [0, res), unique and sorted by key.
        res: grid resolution (cubes per axis).
        beta, alpha, gamma_f: raw per-cube weights [C, 12], [C, 8], [C] (normalised here).
        vertex_colors: [Vg, Ch] raw vertex attributes (passed through a sigmoid) or None.
        training: split quads into four triangles around a weighted centre.
    """
    device = vertex_pos.device
    dtype = vertex_pos.dtype
    tables = device_tables(device)
    n_ch = vertex_colors.shape[-1] if vertex_colors is not None else 0

    occ_v = vertex_sdf < 0
    occ_cx8 = occ_v[cube_corner_idx]
    n_occ = occ_cx8.sum(-1)
    surf = (n_occ > 0) & (n_occ < 8)
    if not bool(surf.any()):
        return FlexiCubesOutput(
            vertices=torch.zeros((0, 3), dtype=dtype, device=device),
            faces=torch.zeros((0, 3), dtype=torch.long, device=device),
            l_dev=torch.zeros((0,), dtype=dtype, device=device),
            colors=torch.zeros((0, n_ch), dtype=dtype, device=device) if vertex_colors is not None else None,
        )

    beta = (torch.tanh(beta[surf]) * weight_scale + 1)
    alpha = (torch.tanh(alpha[surf]) * weight_scale + 1)
    gamma_f = torch.sigmoid(gamma_f[surf]) * weight_scale + (1 - weight_scale) / 2
    if vertex_colors is not None:
        vertex_colors = torch.sigmoid(vertex_colors)

    corner_idx = cube_corner_idx[surf]
    coords = cube_coords[surf]
    n_surf = corner_idx.shape[0]
    case_ids = _resolve_case_ids(occ_cx8[surf], coords, res, tables)

    # Surface edges: every cube edge as an ordered vertex pair, shared between cubes through a
    # unique over pair keys (pair order = dense vertex order, as in the reference).
    edge_pairs = corner_idx[:, tables["edges"]].reshape(-1, 2).long()
    n_vert = vertex_pos.shape[0]
    pair_keys = edge_pairs[:, 0] * n_vert + edge_pairs[:, 1]
    unique_keys, slot_to_edge, edge_counts = torch.unique(pair_keys, return_inverse=True, return_counts=True)
    unique_edges = torch.stack([unique_keys // n_vert, unique_keys % n_vert], dim=1)
    crossing = occ_v[unique_edges[:, 0]] != occ_v[unique_edges[:, 1]]
    slot_is_surface = crossing[slot_to_edge]
    slot_edge_count = edge_counts[slot_to_edge]
    surf_edge_id = torch.full((unique_edges.shape[0],), -1, dtype=torch.long, device=device)
    surf_edge_id[crossing] = torch.arange(int(crossing.sum()), device=device)
    slot_to_surf_edge = surf_edge_id[slot_to_edge]  # [S*12], -1 where the edge has no crossing
    surf_edges = unique_edges[crossing]

    surf_edges_x = vertex_pos[surf_edges.reshape(-1)].reshape(-1, 2, 3)
    surf_edges_s = vertex_sdf[surf_edges.reshape(-1)].reshape(-1, 2, 1)

    # Dual vertices, numbered like the reference: cubes grouped by their number of dual
    # vertices (ascending), cube order inside a group, then the case's edge-group order.
    num_vd = tables["num_vd"][case_ids]
    order = torch.sort(num_vd, stable=True).indices
    num_sorted = num_vd[order]
    first_vd = torch.cumsum(num_sorted, 0) - num_sorted
    total_vd = int(num_sorted.sum())
    groups = tables["dmc"][case_ids[order]]  # [S, 4, 7]
    valid = groups >= 0
    vd_of_group = first_vd[:, None] + torch.arange(groups.shape[1], device=device)[None, :]
    edge_group = groups[valid]
    edge_group_to_cube = order[:, None, None].expand_as(groups)[valid]
    edge_group_to_vd = vd_of_group[:, :, None].expand_as(groups)[valid]
    slot = edge_group_to_cube * 12 + edge_group
    idx_group = slot_to_surf_edge[slot]

    x_group = surf_edges_x[idx_group]
    s_group = surf_edges_s[idx_group]
    alpha_group = alpha[:, tables["edges"]].reshape(-1, 2)[slot].unsqueeze(-1)
    ue_group = _zero_crossing(s_group * alpha_group, x_group)
    beta_group = beta.reshape(-1)[slot].unsqueeze(-1)
    beta_sum = torch.zeros((total_vd, 1), dtype=dtype, device=device).index_add_(0, edge_group_to_vd, beta_group)
    vd = torch.zeros((total_vd, 3), dtype=dtype, device=device).index_add_(
        0, edge_group_to_vd, ue_group * beta_group) / beta_sum

    vd_color = None
    if vertex_colors is not None:
        surf_edges_c = vertex_colors[surf_edges.reshape(-1)].reshape(-1, 2, n_ch)
        uc_group = _zero_crossing(s_group * alpha_group, surf_edges_c[idx_group])
        vd_color = torch.zeros((total_vd, n_ch), dtype=dtype, device=device).index_add_(
            0, edge_group_to_vd, uc_group * beta_group) / beta_sum

    if training:
        # L_dev (FlexiCubes eq. 8): mean absolute deviation of the distances from a dual vertex
        # to the plain zero crossings of its edges.
        vd_num_edges = valid.sum(-1)[torch.arange(groups.shape[1], device=device)[None, :] < num_sorted[:, None]]
        plain = _zero_crossing(surf_edges_s, surf_edges_x)[idx_group]
        dist = torch.norm(plain - vd[edge_group_to_vd], dim=-1)
        mean_dist = torch.zeros_like(vd[:, 0]).index_add_(0, edge_group_to_vd, dist) / vd_num_edges.to(dtype)
        l_dev = (dist - mean_dist[edge_group_to_vd]).abs()
    else:
        l_dev = torch.zeros((0,), dtype=dtype, device=device)

    slot_to_vd = torch.zeros(n_surf * 12, dtype=torch.long, device=device).scatter(0, slot, edge_group_to_vd)
    vd_gamma = gamma_f[order].repeat_interleave(num_sorted)

    vertices, faces, colors = _triangulate(
        vertex_sdf, surf_edges, vd, vd_gamma, vd_color, slot_edge_count, slot_is_surface,
        slot_to_surf_edge, slot_to_vd, training)
    return FlexiCubesOutput(vertices=vertices, faces=faces, l_dev=l_dev, colors=colors)


_QUAD_SPLIT_A = (0, 1, 2, 0, 2, 3)
_QUAD_SPLIT_B = (0, 1, 3, 3, 1, 2)
_QUAD_RING = (0, 1, 1, 2, 2, 3, 3, 0)


def _triangulate(vertex_sdf, surf_edges, vd, vd_gamma, vd_color, slot_edge_count, slot_is_surface,
                 slot_to_surf_edge, slot_to_vd, training):
    """One quad per surface edge shared by four cubes, wound to face positive sdf, then split."""
    device = vd.device
    with torch.no_grad():
        use = (slot_edge_count == 4) & slot_is_surface
        quad_edge = slot_to_surf_edge[use]
        quad_vd = slot_to_vd[use]
        sorted_edge, perm = torch.sort(quad_edge, stable=True)
        quad_vd = quad_vd[perm].reshape(-1, 4)
        first_end = surf_edges[sorted_edge.reshape(-1, 4)[:, 0], 0]
        flip = vertex_sdf[first_end] > 0
        quad_vd = torch.cat([quad_vd[flip][:, [0, 1, 3, 2]], quad_vd[~flip][:, [2, 3, 1, 0]]])

    quad_gamma = vd_gamma[quad_vd.reshape(-1)].reshape(-1, 4)
    gamma_02 = quad_gamma[:, 0] * quad_gamma[:, 2]
    gamma_13 = quad_gamma[:, 1] * quad_gamma[:, 3]
    if not training:
        split_a = gamma_02 > gamma_13
        faces = torch.empty((quad_vd.shape[0], 6), dtype=torch.long, device=device)
        faces[split_a] = quad_vd[split_a][:, list(_QUAD_SPLIT_A)]
        faces[~split_a] = quad_vd[~split_a][:, list(_QUAD_SPLIT_B)]
        return vd, faces.reshape(-1, 3), vd_color

    corners = vd[quad_vd.reshape(-1)].reshape(-1, 4, 3)
    weight_sum = (gamma_02 + gamma_13) + 1e-8
    centre = ((corners[:, 0] + corners[:, 2]) / 2 * gamma_02.unsqueeze(-1)
              + (corners[:, 1] + corners[:, 3]) / 2 * gamma_13.unsqueeze(-1)) / weight_sum.unsqueeze(-1)
    if vd_color is not None:
        cq = vd_color[quad_vd.reshape(-1)].reshape(-1, 4, vd_color.shape[-1])
        centre_color = ((cq[:, 0] + cq[:, 2]) / 2 * gamma_02.unsqueeze(-1)
                        + (cq[:, 1] + cq[:, 3]) / 2 * gamma_13.unsqueeze(-1)) / weight_sum.unsqueeze(-1)
        vd_color = torch.cat([vd_color, centre_color])
    centre_idx = torch.arange(centre.shape[0], device=device) + vd.shape[0]
    vertices = torch.cat([vd, centre])
    ring = quad_vd[:, list(_QUAD_RING)].reshape(-1, 4, 2)
    faces = torch.cat([ring, centre_idx.reshape(-1, 1, 1).expand(-1, 4, 1)], -1).reshape(-1, 3)
    return vertices, faces, vd_color
