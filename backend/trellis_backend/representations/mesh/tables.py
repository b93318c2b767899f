"""Cube topology tables for FlexiCubes, derived here from first principles.

FlexiCubes places one dual vertex per surface patch inside a cube. The patches
of a sign configuration are found by walking the cube faces: two intersected
edges of a face belong to the same patch when they are joined across that face.
A face with two diagonal negative corners (an "ambiguous" face) has four
intersected edges; the TRELLIS/FlexiCubes tables join the two edges that meet
at each *negative* corner, i.e. they keep negative corners apart. Deriving the
tables from that rule (instead of embedding 256-entry literals) gives exactly
the same edge groups as the published tables for all 256 cases.

A configuration with five or six negative corners whose single ambiguous face
leaves the cube with one patch (the cases C16/C19 of the FlexiCubes paper) is
"problematic": when the neighbour across that face is problematic too, both
cubes switch to the complementary case so the shared face is resolved the same
way from both sides.

Indexing conventions are the network's output semantics and must not change:
corner ``k`` sits at offset ``(k & 1, (k >> 1) & 1, (k >> 2) & 1)``; the 12
edges are ordered (and oriented) as ``CUBE_EDGES``; the mesh decoder's 12 beta
channels follow that edge order and its 8 alpha channels the corner order.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

CUBE_CORNERS: Tuple[Tuple[int, int, int], ...] = tuple(
    (k & 1, (k >> 1) & 1, (k >> 2) & 1) for k in range(8)
)

CUBE_EDGES: Tuple[Tuple[int, int], ...] = (
    (0, 1), (1, 5), (4, 5), (0, 4),
    (2, 3), (3, 7), (6, 7), (2, 6),
    (2, 0), (3, 1), (7, 5), (6, 4),
)

MAX_VD_PER_CUBE = 4
MAX_EDGES_PER_VD = 7


def _cube_faces() -> List[Tuple[int, int, List[int], List[int]]]:
    """(axis, side, corners, edges) for each of the six cube faces."""
    faces = []
    for axis in range(3):
        for side in (0, 1):
            corners = [k for k in range(8) if CUBE_CORNERS[k][axis] == side]
            edges = [e for e, (a, b) in enumerate(CUBE_EDGES) if a in corners and b in corners]
            faces.append((axis, side, corners, edges))
    return faces


def _analyse_case(case: int):
    """Edge groups, ambiguous faces of one sign configuration (bit k = corner k negative)."""
    negative = [(case >> k) & 1 for k in range(8)]
    crossing = [e for e, (a, b) in enumerate(CUBE_EDGES) if negative[a] != negative[b]]
    parent = {e: e for e in crossing}

    def root(e):
        while parent[e] != e:
            parent[e] = parent[parent[e]]
            e = parent[e]
        return e

    def join(a, b):
        parent[root(a)] = root(b)

    ambiguous = []
    for axis, side, corners, edges in _cube_faces():
        cut = [e for e in edges if e in parent]
        if len(cut) == 2:
            join(cut[0], cut[1])
        elif len(cut) == 4:
            ambiguous.append((axis, side))
            for k in corners:
                if negative[k]:
                    pair = [e for e in cut if k in CUBE_EDGES[e]]
                    join(pair[0], pair[1])
    groups: Dict[int, List[int]] = {}
    for e in crossing:
        groups.setdefault(root(e), []).append(e)
    ordered = sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])
    return ordered, ambiguous


def _build_tables():
    dmc = [[[-1] * MAX_EDGES_PER_VD for _ in range(MAX_VD_PER_CUBE)] for _ in range(256)]
    num_vd = [0] * 256
    check = [[0, 0, 0, 0, 0] for _ in range(256)]
    for case in range(256):
        groups, ambiguous = _analyse_case(case)
        num_vd[case] = len(groups)
        for g, edges in enumerate(groups):
            dmc[case][g][: len(edges)] = edges
        if len(ambiguous) == 1 and len(groups) == 1:
            axis, side = ambiguous[0]
            step = [0, 0, 0]
            step[axis] = 1 if side == 1 else -1
            check[case] = [1, *step, 255 - case]
    return dmc, num_vd, check


DMC_TABLE, NUM_VD_TABLE, CHECK_TABLE = _build_tables()

_DEVICE_CACHE: Dict[str, Dict[str, torch.Tensor]] = {}


def device_tables(device: torch.device) -> Dict[str, torch.Tensor]:
    """The tables as tensors on ``device`` (built once per device)."""
    key = str(device)
    tables = _DEVICE_CACHE.get(key)
    if tables is None:
        tables = {
            "dmc": torch.tensor(DMC_TABLE, dtype=torch.long, device=device),
            "num_vd": torch.tensor(NUM_VD_TABLE, dtype=torch.long, device=device),
            "check": torch.tensor(CHECK_TABLE, dtype=torch.long, device=device),
            "corners": torch.tensor(CUBE_CORNERS, dtype=torch.long, device=device),
            "edges": torch.tensor(CUBE_EDGES, dtype=torch.long, device=device),
            "corner_bits": 2 ** torch.arange(8, dtype=torch.long, device=device),
        }
        _DEVICE_CACHE[key] = tables
    return tables
