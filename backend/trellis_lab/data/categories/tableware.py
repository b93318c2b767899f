"""Vessels: mug, vase, bottle. Design units ~ metres, z up, front = -y."""
from __future__ import annotations

import numpy as np

from ..builder import Builder, smooth_profile
from ..primitives import Box, Cylinder, Difference, Intersection, Lathe, Torus, halfspace_box


def mug(b: Builder) -> dict:
    r = b.u(0.042, 0.05)
    proportion = b.choice(["tall", "short"])
    h = r * (b.u(2.1, 2.6) if proportion == "tall" else b.u(1.35, 1.7))
    wall, floor = 0.14 * r, 0.14 * r
    handle = b.choice(["round", "square"], p=[0.65, 0.35])
    stripe = b.accent(["white", "black", "red", "blue", "yellow", "gray"]) if b.chance(0.35) else None

    body = Cylinder((0, 0, 0), (0, 0, h), r)
    cavity = Cylinder((0, 0, floor), (0, 0, h + 0.02), r - wall)
    b.add(Difference(body, cavity), label="body")
    ht = 0.13 * r  # handle tube radius
    if handle == "round":
        R = min(0.36 * h, 0.62 * r)
        ring = Torus((r, 0, h * 0.52), R, ht, axis=(0, 1, 0))
        b.add(Intersection(ring, halfspace_box((r - wall * 0.5, -1, -1), (1, 1, 1))), label="handle")
    else:
        out = r * b.u(0.5, 0.65)
        z0, z1 = h * 0.22, h * 0.82
        b.add(Box((r + out / 2 - wall / 2, 0, z1), (out / 2 + ht * 0.6, ht, ht)), label="handle")
        b.add(Box((r + out / 2 - wall / 2, 0, z0), (out / 2 + ht * 0.6, ht, ht)), label="handle")
        b.add(Box((r + out, 0, (z0 + z1) / 2), (ht, ht, (z1 - z0) / 2 + ht)), label="handle")
    if stripe:
        zc = h * b.u(0.55, 0.75)
        band = Cylinder((0, 0, zc - 0.1 * h), (0, 0, zc + 0.1 * h), r * 1.03)
        b.add(Difference(band, Cylinder((0, 0, 0), (0, 0, h + 0.02), r - wall * 0.5)), stripe, "stripe")
    return dict(proportion=proportion, handle=handle, stripe_color=stripe)


def vase(b: Builder) -> dict:
    style = b.choice(["round", "slender", "flared"])
    H = b.u(0.3, 0.42)
    if style == "round":
        cz = [0, 0.38, 0.78, 0.9, 1.0]
        cr = [b.u(0.2, 0.26), b.u(0.42, 0.5), b.u(0.15, 0.19), b.u(0.17, 0.2), b.u(0.22, 0.27)]
    elif style == "slender":
        cz = [0, 0.45, 0.82, 1.0]
        cr = [b.u(0.12, 0.15), b.u(0.23, 0.27), b.u(0.12, 0.14), b.u(0.2, 0.24)]
    else:  # flared / trumpet
        cz = [0, 0.08, 0.4, 1.0]
        cr = [b.u(0.2, 0.24), b.u(0.14, 0.17), b.u(0.15, 0.18), b.u(0.38, 0.46)]
    zs, rs = smooth_profile(np.asarray(cz) * H, np.asarray(cr) * H)
    vox = H / 57.6
    t = 1.7 * vox
    depth = 0.35 * H
    inner_z = zs >= H - depth
    izs = np.r_[zs[inner_z], H + 0.02]
    irs = np.maximum(np.r_[rs[inner_z], rs[-1]] - t, 0.2 * t)
    body = Lathe(zs, rs)
    b.add(Difference(body, Lathe(izs, irs)), label="body")
    handles = style == "round" and b.chance(0.35)
    if handles:
        # two ear handles joining neck and shoulder
        zh = H * 0.7
        for sx in (-1, 1):
            x = sx * H * 0.26
            ring = Torus((x, 0, zh), H * 0.09, 1.0 * vox, axis=(0, 1, 0))
            b.add(ring, label="handle")
    band = b.accent(["white", "black", "yellow", "blue", "red", "gray"]) if b.chance(0.35) else None
    if band:
        zc = H * (0.4 if style != "flared" else 0.7)
        m = (zs > zc - 0.06 * H) & (zs < zc + 0.06 * H)
        b.add(Lathe(zs[m], rs[m] + 0.6 * vox), band, "band")
    return dict(style=style, handles=handles, band_color=band)


def bottle(b: Builder) -> dict:
    style = b.choice(["wine", "soda", "square"])
    rb = b.u(0.035, 0.045)
    if style == "wine":
        hb = rb * b.u(4.0, 4.8)
        rn, hn = rb * b.u(0.3, 0.36), rb * b.u(2.0, 2.6)
        shoulder = rb * 1.2
    elif style == "soda":
        hb = rb * b.u(3.2, 4.0)
        rn, hn = rb * b.u(0.38, 0.45), rb * b.u(1.0, 1.4)
        shoulder = rb * 1.4
    else:
        hb = rb * b.u(3.0, 3.6)
        rn, hn = rb * b.u(0.32, 0.4), rb * b.u(0.9, 1.2)
        shoulder = rb * 0.5
    H = hb + shoulder + hn
    cap_kind = b.choice(["cap", "cork", None], p=[0.5, 0.25, 0.25]) if style != "wine" else b.choice(["cork", "cap", None])
    if cap_kind == "cork":
        cap_color = "brown" if b.main != "brown" else "white"
    elif cap_kind == "cap":
        cap_color = b.accent(["black", "red", "white", "yellow", "blue", "gray"])
    else:
        cap_color = None
    label = b.accent(["white", "yellow", "red", "black", "blue"], exclude=(cap_color,)) if b.chance(0.5) else None

    if style == "square":
        b.add(Box((0, 0, hb / 2), (rb, rb, hb / 2), round=rb * 0.15), label="body")
        zs, rs = smooth_profile([hb - 0.002, hb + shoulder, H], [rb * 1.0, rn, rn], n=16)
        b.add(Lathe(zs, rs), label="neck")
    else:
        zs, rs = smooth_profile([0, hb, hb + shoulder, H - 0.3 * hn, H], [rb, rb, rn, rn, rn * 1.12], n=40)
        b.add(Lathe(zs, rs), label="body")
    if cap_kind == "cap":
        b.add(Cylinder((0, 0, H - 0.25 * hn), (0, 0, H + 0.02 * H), rn * 1.3), cap_color, "cap")
    elif cap_kind == "cork":
        b.add(Cylinder((0, 0, H - 0.1 * hn), (0, 0, H + 0.05 * H), rn * 0.95), cap_color, "cork")
    if label:
        zc = hb * b.u(0.4, 0.55)
        lh = hb * 0.2
        if style == "square":
            b.add(Box((0, 0, zc), (rb * 1.03, rb * 1.03, lh), round=rb * 0.15), label, "label")
        else:
            b.add(Cylinder((0, 0, zc - lh), (0, 0, zc + lh), rb * 1.03), label, "label")
    return dict(style=style, closure=cap_kind, closure_color=cap_color, label_color=label)
