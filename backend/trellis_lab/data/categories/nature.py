"""Organic / seasonal: mushroom, tree, snowman. Design units ~ metres, z up, front = -y."""
from __future__ import annotations

import numpy as np

from ..builder import Builder
from ..primitives import Capsule, Cone, Cylinder, Ellipsoid, Intersection, Sphere, Torus, halfspace_box


def _one_mushroom(b: Builder, x, y, s, cap, stem_color, spots, spot_color):
    rc = 0.3 * s
    hs = rc * b.u(1.0, 1.5)
    rs = rc * b.u(0.26, 0.34)
    b.add(Cone((x, y, 0), (x, y, hs + 0.02 * s), rs * 1.2, rs), stem_color, "stem")
    z0 = hs
    if cap == "dome":
        hc = rc * b.u(0.7, 0.85)
    elif cap == "flat":
        hc = rc * b.u(0.3, 0.4)
    else:
        hc = rc * b.u(1.0, 1.25)
    if cap == "conical":
        b.add(Cone((x, y, z0), (x, y, z0 + hc), rc, rc * 0.08), label="cap")
    else:
        ell = Ellipsoid((x, y, z0), (rc, rc, hc))
        b.add(Intersection(ell, halfspace_box((x - 2 * rc, y - 2 * rc, z0), (x + 2 * rc, y + 2 * rc, z0 + 2 * hc))), label="cap")
    for i in range(spots):
        # spread over the upper surface: golden-angle spiral, skipping the very top
        th = np.deg2rad(25 + 50 * (i + 0.5) / spots)
        ph = i * 2.39996 + 0.7
        if cap == "conical":
            f = 1 - th / np.deg2rad(90) * 0.9
            rr = rc * (1 - f) * 0.95 + rc * 0.12
            zz = z0 + hc * f * 0.9
            px, py, pz = x + rr * np.cos(ph), y + rr * np.sin(ph), zz
        else:
            px = x + rc * np.sin(th) * np.cos(ph)
            py = y + rc * np.sin(th) * np.sin(ph)
            pz = z0 + hc * np.cos(th)
        b.add(Sphere((px, py, pz), rc * 0.14), spot_color, "spot")
    return rc, hs + hc


def mushroom(b: Builder) -> dict:
    cap = b.choice(["dome", "flat", "conical"])
    count = b.choice([1, 2], p=[0.75, 0.25])
    stem_color = "white" if b.main != "white" else b.choice(["brown", "gray", "yellow"])
    spots = b.choice([0, b.randint(4, 9)], p=[0.5, 0.5])
    spot_color = b.accent(["white", "yellow"], exclude=(stem_color,)) if b.main != "white" else b.accent(["red", "brown", "black", "yellow"], exclude=(stem_color,))
    if spot_color == stem_color:
        spot_color = "white" if b.main != "white" else "black"
    rc, _ = _one_mushroom(b, 0, 0, 1.0, cap, stem_color, spots, spot_color)
    if count == 2:
        s2 = b.u(0.5, 0.65)
        _one_mushroom(b, rc * 1.0 + 0.3 * s2 * 0.9, -rc * 0.35, s2, cap, stem_color, spots // 2, spot_color)
    return dict(cap=cap, count=count, spots=spots, spot_color=spot_color if spots else None, stem_color=stem_color)


def tree(b: Builder) -> dict:
    style = b.choice(["pine", "round", "bushy"])
    trunk_color = "brown" if b.main != "brown" else b.choice(["black", "gray"])
    fruit = None
    tiers = 0
    if style == "pine":
        H = b.u(1.6, 2.0)
        rt = H * 0.035
        ht = H * b.u(0.12, 0.2)
        b.add(Cylinder((0, 0, 0), (0, 0, ht + 0.1), rt), trunk_color, "trunk")
        tiers = b.randint(2, 4)
        R0 = H * b.u(0.26, 0.34)
        span = H - ht
        step = span / (tiers + 0.6)
        for i in range(tiers):
            z0 = ht + i * step * 0.95
            r = R0 * (1 - 0.22 * i)
            top = z0 + step * 1.6 if i < tiers - 1 else H
            b.add(Cone((0, 0, z0), (0, 0, top), r, r * 0.05), label="foliage")
    elif style == "round":
        R = b.u(0.45, 0.6)
        ht = R * b.u(1.0, 1.5)
        rt = R * b.u(0.1, 0.14)
        b.add(Cylinder((0, 0, 0), (0, 0, ht + R * 0.5), rt), trunk_color, "trunk")
        b.add(Ellipsoid((0, 0, ht + R * 0.9), (R, R, R * b.u(0.9, 1.15))), label="foliage")
        if b.chance(0.35):
            fruit = b.accent(["red", "orange", "yellow", "pink"])
            n = b.randint(5, 9)
            for i in range(n):
                th = np.deg2rad(40 + 80 * (i + 0.5) / n)
                ph = i * 2.39996
                p = (R * np.sin(th) * np.cos(ph), R * np.sin(th) * np.sin(ph), ht + R * 0.9 + R * np.cos(th))
                b.add(Sphere(p, R * 0.1), fruit, "fruit")
    else:  # bushy: cluster of blobs
        R = b.u(0.35, 0.45)
        ht = R * b.u(1.2, 1.6)
        rt = R * b.u(0.11, 0.15)
        b.add(Cylinder((0, 0, 0), (0, 0, ht + R * 0.6), rt), trunk_color, "trunk")
        n = b.randint(4, 6)
        zc = ht + R * 0.9
        b.add(Sphere((0, 0, zc + R * 0.5), R), label="foliage")
        for i in range(n):
            ph = 2 * np.pi * i / n + b.u(-0.3, 0.3)
            rr = R * b.u(0.9, 1.1)
            b.add(Sphere((rr * np.cos(ph), rr * np.sin(ph), zc + b.u(-0.15, 0.25) * R), R * b.u(0.6, 0.75)), label="foliage")
    return dict(style=style, tiers=tiers, trunk_color=trunk_color, fruit_color=fruit)


def snowman(b: Builder) -> dict:
    balls = b.choice([2, 3], p=[0.35, 0.65])
    R0 = 0.3
    radii = [R0] + ([R0 * b.u(0.66, 0.74)] if balls == 2 else [R0 * b.u(0.7, 0.78), R0 * b.u(0.48, 0.55)])
    z = 0.0
    centers = []
    for i, r in enumerate(radii):
        z = r * 0.92 if i == 0 else z + radii[i - 1] * 0.78 + r * 0.78
        centers.append(z)
        b.add(Sphere((0, 0, z), r), label="ball")
    rh, zh = radii[-1], centers[-1]
    dark = "black" if b.main != "black" else "white"
    nose_color = "orange" if b.main != "orange" else "red"
    hat = b.choice(["top hat", "beanie", None], p=[0.45, 0.25, 0.3])
    hat_color = None
    # face (front is -y)
    b.add(Cone((0, -rh * 0.9, zh), (0, -rh * 1.75, zh - rh * 0.05), rh * 0.16, rh * 0.02), nose_color, "nose")
    for sx in (-1, 1):
        b.add(Sphere((sx * rh * 0.35, -rh * 0.86, zh + rh * 0.3), rh * 0.1), dark, "eye")
    if hat == "top hat":
        hat_color = b.accent(["black", "gray", "brown", "red", "blue"], exclude=())
        ztop = zh + rh * 0.85
        b.add(Cylinder((0, 0, ztop - rh * 0.05), (0, 0, ztop + rh * 0.06), rh * 0.95), hat_color, "brim")
        b.add(Cylinder((0, 0, ztop), (0, 0, ztop + rh * 0.85), rh * 0.6), hat_color, "hat")
    elif hat == "beanie":
        hat_color = b.accent(["red", "blue", "green", "purple", "pink", "yellow"])
        zb = zh + rh * 0.4
        ell = Ellipsoid((0, 0, zb), (rh * 0.95, rh * 0.95, rh * 0.85))
        b.add(Intersection(ell, halfspace_box((-rh, -rh, zb), (rh, rh, zb + rh))), hat_color, "beanie")
        b.add(Sphere((0, 0, zb + rh * 0.9), rh * 0.22), hat_color, "pompom")
    buttons = b.choice([0, b.randint(2, 4)], p=[0.4, 0.6])
    body_i = 1 if balls == 3 else 0
    rbody, zbody = radii[body_i], centers[body_i]
    for i in range(buttons):
        ang = np.deg2rad(35 - 70 * (i + 0.5) / buttons)
        b.add(Sphere((0, -rbody * np.cos(ang), zbody + rbody * np.sin(ang)), rbody * 0.09), dark, "button")
    arms = b.chance(0.6)
    if arms:
        arm_color = "brown" if b.main != "brown" else "black"
        ra, za = radii[body_i], centers[body_i] + radii[body_i] * 0.25
        for sx in (-1, 1):
            a = (sx * ra * 0.8, 0, za)
            c = (sx * ra * 2.0, 0, za + ra * 0.55)
            b.add(Capsule(a, c, ra * 0.05), arm_color, "arm")
            m = (sx * ra * 1.6, 0, za + ra * 0.37)
            b.add(Capsule(m, (sx * ra * 1.8, 0, za + ra * 0.75), ra * 0.04), arm_color, "twig")
    scarf = b.accent(["red", "blue", "green", "purple", "yellow", "pink"], exclude=(hat_color,)) if b.chance(0.35) else None
    if scarf:
        zn = centers[-1] - radii[-1] * 0.75
        b.add(Torus((0, 0, zn), radii[-1] * 0.72, radii[-1] * 0.16), scarf, "scarf")
    return dict(balls=balls, hat=hat, hat_color=hat_color, buttons=buttons, arms=arms, scarf_color=scarf)
