"""The reference's float32 QEF solve, reproduced operation for operation.

o_voxel's C++ solves each voxel's quadric error function with Eigen in float32:
``A.colPivHouseholderQr().solve(b)`` for the unconstrained minimum and, when that leaves the
voxel, a 2x2 QR per box face, a division per box edge and the 8 corners, keeping the candidate
with the lowest ``p^T Q p``. Where candidates' errors agree to float32 round-off the choice
depends on the exact rounding, so this module repeats Eigen's (3.4) arithmetic in the same order
(column-pivoted Householder QR with its norm downdates, the Householder application, the
column-oriented back substitution, the SSE reduction order of 4-vector sums) in vectorised numpy
float32. On the golden case this gives every dual vertex bit for bit.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32
_EPS = F32(np.finfo(np.float32).eps)
_TINY = F32(np.finfo(np.float32).tiny)


def _sum_seq(terms) -> np.ndarray:
    """Left-to-right float32 sum (Eigen's scalar loops over dynamic-size segments)."""
    out = terms[0].astype(F32)
    for t in terms[1:]:
        out = (out + t).astype(F32)
    return out


def _norm(col: np.ndarray) -> np.ndarray:
    """Eigen's norm of a column [N, r]: fixed size 3 sums x0 + (x1 + x2), shorter ones in order."""
    sq = (col * col).astype(F32)
    if sq.shape[1] == 3:
        s = (sq[:, 0] + (sq[:, 1] + sq[:, 2]).astype(F32)).astype(F32)
    else:
        s = _sum_seq([sq[:, t] for t in range(sq.shape[1])])
    return np.sqrt(s).astype(F32)


def colpiv_qr_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``A.colPivHouseholderQr().solve(b)`` of Eigen in float32 for a batch: a [N, n, n], b [N, n] -> [N, n]."""
    qr = np.array(a, dtype=F32, copy=True)
    c = np.array(b, dtype=F32, copy=True)
    n_mat, n, _ = qr.shape
    rows_idx = np.arange(n_mat)
    direct = np.stack([_norm(qr[:, :, j]) for j in range(n)], axis=1)
    updated = direct.copy()
    threshold_helper = (((updated.max(axis=1) * _EPS).astype(F32)) ** 2).astype(F32) / F32(n)
    downdate_threshold = np.sqrt(_EPS).astype(F32)
    nonzero = np.full(n_mat, n)
    transpositions = np.zeros((n_mat, n), np.int64)
    h_coeffs = np.zeros((n_mat, n), F32)
    for k in range(n):
        tail = updated[:, k:]
        pivot = np.argmax(tail, axis=1)                       # first maximum, as maxCoeff(&index)
        biggest_sq = (tail[rows_idx, pivot] ** 2).astype(F32)
        pivot = pivot + k
        nonzero = np.where((nonzero == n) & (biggest_sq < (threshold_helper * F32(n - k)).astype(F32)), k, nonzero)
        transpositions[:, k] = pivot
        swap = pivot != k
        if swap.any():
            col_k, col_p = qr[:, :, k].copy(), qr[rows_idx, :, pivot].copy()
            qr[:, :, k] = np.where(swap[:, None], col_p, col_k)
            qr[rows_idx, :, pivot] = np.where(swap[:, None], col_k, col_p)
            for arr in (updated, direct):
                vk, vp = arr[:, k].copy(), arr[rows_idx, pivot].copy()
                arr[:, k] = np.where(swap, vp, vk)
                arr[rows_idx, pivot] = np.where(swap, vk, vp)
        # Householder vector of qr[k:, k] (makeHouseholderInPlace)
        c0 = qr[:, k, k].copy()
        ess_src = qr[:, k + 1:, k]
        tail_sq = _sum_seq([(ess_src[:, t] * ess_src[:, t]).astype(F32) for t in range(ess_src.shape[1])]) \
            if ess_src.shape[1] else np.zeros(n_mat, F32)
        trivial = tail_sq <= _TINY
        with np.errstate(all="ignore"):
            beta = np.sqrt((c0 * c0 + tail_sq).astype(F32)).astype(F32)
            beta = np.where(c0 >= 0, -beta, beta)
            essential = (ess_src / (c0 - beta)[:, None]).astype(F32)
            tau = ((beta - c0) / beta).astype(F32)
        beta = np.where(trivial, c0, beta)
        tau = np.where(trivial, F32(0), tau)
        essential = np.where(trivial[:, None], F32(0), essential)
        h_coeffs[:, k] = tau
        qr[:, k, k] = beta
        qr[:, k + 1:, k] = essential
        if k + 1 < n:
            _apply_householder(qr[:, k:, k + 1:], essential, tau)
            for j in range(k + 1, n):
                nz = updated[:, j] != 0
                with np.errstate(all="ignore"):
                    t = (np.abs(qr[:, k, j]) / updated[:, j]).astype(F32)
                    t = ((F32(1) + t) * (F32(1) - t)).astype(F32)
                    t = np.where(t < 0, F32(0), t)
                    ratio = (updated[:, j] / direct[:, j]).astype(F32)
                    t2 = (t * (ratio * ratio).astype(F32)).astype(F32)
                recompute = nz & (t2 <= downdate_threshold)
                if recompute.any():
                    fresh = _norm(qr[:, k + 1:, j])
                    direct[:, j] = np.where(recompute, fresh, direct[:, j])
                    updated[:, j] = np.where(recompute, fresh, updated[:, j])
                shrink = nz & ~recompute
                updated[:, j] = np.where(shrink, (updated[:, j] * np.sqrt(t).astype(F32)).astype(F32), updated[:, j])
    # c = Q^T b: the Householder reflections in order
    for k in range(n):
        if n - k == 1:
            c[:, k] = (c[:, k] * (F32(1) - h_coeffs[:, k])).astype(F32)
        else:
            _apply_householder(c[:, k:, None], qr[:, k + 1:, k], h_coeffs[:, k])
    # back substitution on the leading `nonzero` pivots (column oriented), the rest zero
    x = c
    for i in range(n - 1, -1, -1):
        active = i < nonzero
        with np.errstate(all="ignore"):
            xi = (x[:, i] / qr[:, i, i]).astype(F32)
        x[:, i] = np.where(active, xi, F32(0))
        for j in range(i):
            x[:, j] = np.where(active, (x[:, j] - (x[:, i] * qr[:, j, i]).astype(F32)).astype(F32), x[:, j])
    perm = np.tile(np.arange(n), (n_mat, 1))
    for k in range(n):
        t = transpositions[:, k]
        pk, pt = perm[:, k].copy(), perm[rows_idx, t].copy()
        perm[:, k], perm[rows_idx, t] = pt, pk
    out = np.zeros_like(x)
    for i in range(n):
        out[rows_idx, perm[:, i]] = x[:, i]
    return out


def _apply_householder(block: np.ndarray, essential: np.ndarray, tau: np.ndarray) -> None:
    """In place: block [N, r, c] <- H block with H = I - tau v v^T, v = (1, essential) (Eigen's order)."""
    if block.shape[2] == 0:
        return
    bottom = block[:, 1:, :]
    tmp = _sum_seq([(essential[:, t, None] * bottom[:, t, :]).astype(F32) for t in range(essential.shape[1])]) \
        if essential.shape[1] else np.zeros_like(block[:, 0, :])
    tmp = (tmp + block[:, 0, :]).astype(F32)
    act = (tau != 0)[:, None]
    new_top = (block[:, 0, :] - (tau[:, None] * tmp).astype(F32)).astype(F32)
    scaled = (tau[:, None] * essential).astype(F32)
    new_bottom = (bottom - (scaled[:, :, None] * tmp[:, None, :]).astype(F32)).astype(F32)
    block[:, 0, :] = np.where(act, new_top, block[:, 0, :])
    block[:, 1:, :] = np.where(act[:, None], new_bottom, bottom)


def _predux4(x: np.ndarray) -> np.ndarray:
    """SSE sum of a 4-float packet: (x0 + x2) + (x1 + x3)."""
    return ((x[..., 0] + x[..., 2]).astype(F32) + (x[..., 1] + x[..., 3]).astype(F32)).astype(F32)


def quadric_error(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``p.transpose() * Q * p`` in Eigen's float32 order: p [m, 4] (homogeneous), q [m, 4, 4] -> [m]."""
    row = _predux4((p[:, :, None] * q).astype(F32).transpose(0, 2, 1))      # (p^T Q)_j
    return _predux4((row * p).astype(F32))


def solve_in_box(q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The reference's dual vertex per voxel: q float32 [N, 4, 4], box corners float32 [N, 3] -> float32 [N, 3]."""
    q = q.astype(F32)
    v = colpiv_qr_solve(q[:, :3, :3], -q[:, :3, 3])
    inside = np.all((v >= lo) & (v <= hi), axis=1)
    todo = np.nonzero(~inside)[0]
    if todo.size == 0:
        return v
    qq, l, h = q[todo], lo[todo], hi[todo]
    m = todo.size
    cands, errs = [], []

    def push(p, ok):
        e = quadric_error(p, qq)
        errs.append(np.where(ok & ~np.isnan(e), e, np.inf))
        cands.append(p[:, :3].copy())

    for f in range(3):                      # one coordinate fixed on a face of the box
        a1, a2 = (f + 1) % 3, (f + 2) % 3
        a = np.stack([np.stack([qq[:, a1, a1], qq[:, a1, a2]], 1), np.stack([qq[:, a2, a1], qq[:, a2, a2]], 1)], 1)
        for bound in (l, h):
            r0 = -((qq[:, a1, f] * bound[:, f]).astype(F32) + qq[:, a1, 3]).astype(F32)
            r1 = -((qq[:, a2, f] * bound[:, f]).astype(F32) + qq[:, a2, 3]).astype(F32)
            x = colpiv_qr_solve(a, np.stack([r0, r1], 1))
            ok = (x[:, 0] >= l[:, a1]) & (x[:, 0] <= h[:, a1]) & (x[:, 1] >= l[:, a2]) & (x[:, 1] <= h[:, a2])
            p = np.ones((m, 4), F32)
            p[:, f], p[:, a1], p[:, a2] = bound[:, f], x[:, 0], x[:, 1]
            push(p, ok)
    for f in range(3):                      # two coordinates fixed on an edge of the box
        a1, a2 = (f + 1) % 3, (f + 2) % 3
        for c1, c2 in ((l, l), (l, h), (h, l), (h, h)):
            dot = ((qq[:, f, a1] * c1[:, a1]).astype(F32)
                   + ((qq[:, f, a2] * c2[:, a2]).astype(F32) + qq[:, f, 3]).astype(F32)).astype(F32)
            with np.errstate(all="ignore"):
                x = (-dot / qq[:, f, f]).astype(F32)
            ok = (x >= l[:, f]) & (x <= h[:, f])
            p = np.ones((m, 4), F32)
            p[:, f], p[:, a1], p[:, a2] = x, c1[:, a1], c2[:, a2]
            push(p, ok)
    for cx in (h, l):                       # the corners, in the reference's loop order
        for cy in (h, l):
            for cz in (h, l):
                p = np.ones((m, 4), F32)
                p[:, 0], p[:, 1], p[:, 2] = cx[:, 0], cy[:, 1], cz[:, 2]
                push(p, np.ones(m, bool))
    best = np.argmin(np.stack(errs, axis=1), axis=1)                 # first of equal errors, as `err < best`
    v[todo] = np.stack(cands, axis=1)[np.arange(m), best]
    return v
