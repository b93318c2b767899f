"""Furniture: chair, table, lamp. Design units ~ metres, z up, front = -y."""
from __future__ import annotations

from ..builder import Builder
from ..primitives import Box, Cone, Cylinder, Difference, Ellipsoid, Intersection, halfspace_box


def _leg(b: Builder, x, y, z0, z1, r, shape, color=None, label="leg"):
    if shape == "round":
        b.add(Cylinder((x, y, z0), (x, y, z1), r), color, label)
    else:
        b.add(Box((x, y, (z0 + z1) / 2), (r * 0.9, r * 0.9, (z1 - z0) / 2)), color, label)


def chair(b: Builder) -> dict:
    seat_h = b.u(0.42, 0.50)
    sw, sd = b.u(0.44, 0.56), b.u(0.40, 0.50)
    st = b.u(0.045, 0.07)
    back_height = b.choice(["tall", "short"], p=[0.6, 0.4])
    hb = b.u(0.45, 0.62) if back_height == "tall" else b.u(0.22, 0.30)
    leg_thickness = b.choice(["thin", "thick"])
    leg_shape = b.choice(["round", "square"])
    lr = b.u(0.018, 0.024) if leg_thickness == "thin" else b.u(0.032, 0.042)
    back_style = b.choice(["solid", "slatted", "ladder"])
    arms = b.chance(0.3)
    cushion = b.accent(["white", "red", "blue", "green", "gray", "black", "yellow"]) if b.chance(0.25) else None

    top = seat_h
    # seat
    b.add(Box((0, 0, top - st / 2), (sw / 2, sd / 2, st / 2)), label="seat")
    # legs; back legs continue up as posts unless the back is a solid panel
    ix, iy = sw / 2 - lr - 0.01, sd / 2 - lr - 0.01
    for x in (-ix, ix):
        _leg(b, x, -iy, 0, top - st, lr, leg_shape)
    post_top = top + hb
    for x in (-ix, ix):
        _leg(b, x, iy, 0, post_top if back_style != "solid" else top - st, lr, leg_shape)
    bt = max(0.03, lr * 1.3)  # back thickness
    if back_style == "solid":
        b.add(Box((0, iy, top + hb / 2), (sw / 2, bt / 2, hb / 2), round=0.008), label="back")
    elif back_style == "slatted":
        n = b.randint(3, 5)
        rail = b.u(0.05, 0.08)
        b.add(Box((0, iy, post_top - rail / 2), (ix + lr, bt / 2, rail / 2)), label="rail")
        for i in range(n):
            x = -ix + (i + 1) * 2 * ix / (n + 1)
            b.add(Box((x, iy, top + (hb - rail) / 2), (0.016, bt / 2 * 0.8, (hb - rail) / 2)), label="slat")
    else:  # ladder
        n = b.randint(2, 4) if back_height == "tall" else 2
        for i in range(n):
            z = top + hb * (i + 1) / n - 0.03
            b.add(Box((0, iy, z), (ix, bt / 2 * 0.8, 0.028)), label="rung")
    if arms:
        az = top + min(0.22, hb * 0.8)
        for x in (-sw / 2 + 0.025, sw / 2 - 0.025):
            b.add(Box((x, 0.0, az), (0.03, sd / 2, 0.02)), label="armrest")
            b.add(Cylinder((x, -sd / 2 + 0.05, top), (x, -sd / 2 + 0.05, az), 0.016), label="arm support")
    if cushion:
        b.add(Box((0, -0.01, top + 0.018), (sw / 2 - 0.03, sd / 2 - 0.05, 0.02), round=0.012), cushion, "cushion")
    return dict(back_height=back_height, back_style=back_style, leg_count=4, leg_thickness=leg_thickness,
                leg_shape=leg_shape, arms=arms, cushion_color=cushion)


def table(b: Builder) -> dict:
    top_shape = b.choice(["rectangular", "round", "square"], p=[0.45, 0.35, 0.2])
    height = b.choice(["tall", "low"], p=[0.6, 0.4])
    H = b.u(0.70, 0.78) if height == "tall" else b.u(0.36, 0.45)
    tt = b.u(0.035, 0.06)
    if top_shape == "rectangular":
        L, W = b.u(1.1, 1.6), b.u(0.6, 0.85)
    elif top_shape == "square":
        L = W = b.u(0.8, 1.0)
    else:
        L = W = 2 * b.u(0.45, 0.65)
    legs = "pedestal" if (top_shape != "rectangular" and b.chance(0.4)) else "four legs"
    leg_thickness = b.choice(["thin", "thick"])
    leg_color = b.accent(["black", "white", "gray", "brown"]) if b.chance(0.3) else None

    if top_shape == "round":
        b.add(Cylinder((0, 0, H - tt), (0, 0, H), L / 2), label="top")
    else:
        b.add(Box((0, 0, H - tt / 2), (L / 2, W / 2, tt / 2), round=0.01), label="top")
    if legs == "four legs":
        lr = b.u(0.018, 0.026) if leg_thickness == "thin" else b.u(0.035, 0.05)
        if top_shape == "round":
            off = L / 2 * 0.62
            pos = [(off, off), (-off, off), (off, -off), (-off, -off)]
            pos = [(x * 0.8, y * 0.8) for x, y in pos]
        else:
            pos = [(sx * (L / 2 - lr - 0.04), sy * (W / 2 - lr - 0.04)) for sx in (-1, 1) for sy in (-1, 1)]
        leg_shape = b.choice(["round", "square"])
        for x, y in pos:
            _leg(b, x, y, 0, H - tt, lr, leg_shape, leg_color)
        if top_shape != "round" and b.chance(0.5):  # apron
            ax, ay = L / 2 - lr - 0.04, W / 2 - lr - 0.04
            az = H - tt - 0.04
            b.add(Box((0, -ay, az), (ax, 0.012, 0.04)), label="apron")
            b.add(Box((0, ay, az), (ax, 0.012, 0.04)), label="apron")
            b.add(Box((-ax, 0, az), (0.012, ay, 0.04)), label="apron")
            b.add(Box((ax, 0, az), (0.012, ay, 0.04)), label="apron")
    else:
        cr = b.u(0.04, 0.055) if leg_thickness == "thin" else b.u(0.07, 0.09)
        b.add(Cylinder((0, 0, 0.03), (0, 0, H - tt), cr), leg_color, "pedestal")
        fr = L / 2 * b.u(0.45, 0.6)
        b.add(Cone((0, 0, 0), (0, 0, 0.05), fr, fr * 0.7), leg_color, "foot")
    return dict(top_shape=top_shape, height=height, legs=legs, leg_thickness=leg_thickness, leg_color=leg_color)


def lamp(b: Builder) -> dict:
    lamp_type = b.choice(["table", "floor"])
    shade = b.choice(["cone", "drum", "dome"])
    base_shape = b.choice(["round", "square"])
    stand_color = b.choice([None, b.accent(["black", "gray", "white", "brown", "yellow"])], p=[0.35, 0.65])
    if lamp_type == "table":
        H = b.u(0.45, 0.6)
        rs = H * b.u(0.33, 0.42)
        hs = H * b.u(0.32, 0.42)
        pole_r = H * 0.024
        rb = rs * b.u(0.55, 0.8)
        tb = H * 0.05
    else:
        H = b.u(1.5, 1.8)
        rs = H * b.u(0.14, 0.18)
        hs = H * b.u(0.18, 0.24)
        pole_r = H * 0.015
        rb = rs * b.u(0.7, 0.9)
        tb = H * 0.022
    vox = H / 57.6
    t = 1.6 * vox  # shade wall thickness
    z_top = H
    z_bot = H - hs
    if base_shape == "round":
        b.add(Cylinder((0, 0, 0), (0, 0, tb), rb), stand_color, "base")
    else:
        b.add(Box((0, 0, tb / 2), (rb * 0.85, rb * 0.85, tb / 2), round=tb * 0.3), stand_color, "base")
    pole_top = z_bot + hs * 0.6
    b.add(Cylinder((0, 0, tb), (0, 0, pole_top), pole_r), stand_color, "pole")
    b.add(Ellipsoid((0, 0, pole_top), (pole_r * 2.8, pole_r * 2.8, pole_r * 3.5)), "yellow" if b.main != "yellow" else "white", "bulb")
    if shade == "cone":
        r_top = rs * b.u(0.45, 0.65)
        outer = Cone((0, 0, z_bot), (0, 0, z_top), rs, r_top)
        inner = Cone((0, 0, z_bot - 0.01), (0, 0, z_top + 0.01), rs - t * 1.1 + 0.01 * (rs - r_top) / hs,
                     r_top - t * 1.1 - 0.01 * (rs - r_top) / hs)
        b.add(Difference(outer, inner), label="shade")
    elif shade == "drum":
        outer = Cylinder((0, 0, z_bot), (0, 0, z_top), rs * 0.85)
        inner = Cylinder((0, 0, z_bot - 0.01), (0, 0, z_top + 0.01), rs * 0.85 - t)
        b.add(Difference(outer, inner), label="shade")
    else:  # dome: half ellipsoid shell, open at the bottom
        hz = hs * 1.1
        outer = Ellipsoid((0, 0, z_top - hz), (rs, rs, hz))
        inner = Ellipsoid((0, 0, z_top - hz), (rs - t, rs - t, hz - t))
        clip = halfspace_box((-rs - 1, -rs - 1, z_top - hz), (rs + 1, rs + 1, z_top + 1))
        b.add(Intersection(Difference(outer, inner), clip), label="shade")
    return dict(lamp_type=lamp_type, shade=shade, base_shape=base_shape, stand_color=stand_color)
