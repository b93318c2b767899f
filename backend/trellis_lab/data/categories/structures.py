"""Buildings and vehicles: house, rocket, car. Design units ~ metres, z up, front = -y
(the car drives towards +x)."""
from __future__ import annotations

import numpy as np

from ..builder import Builder
from ..primitives import (Box, Cone, Cylinder, Intersection, Lathe, Offset, convex_from_vertices, prism_x, rot_z,
                          transformed_vertices)


def house(b: Builder) -> dict:
    w, d = b.u(0.8, 1.15), b.u(0.6, 0.85)
    floors = b.choice([1, 2], p=[0.6, 0.4])
    fh = b.u(0.34, 0.42)
    h = floors * fh
    roof = b.choice(["gable", "pyramid", "flat"], p=[0.5, 0.3, 0.2])
    roof_color = b.accent(["red", "brown", "gray", "black", "blue", "green"])
    door_color = b.accent(["brown", "white", "black", "red", "blue", "yellow"], exclude=(roof_color,))
    window_color = b.accent(["blue", "white", "yellow", "black"], exclude=(door_color,))
    per_floor = b.randint(1, 3)
    chimney = roof != "flat" and b.chance(0.4)

    b.add(Box((0, 0, h / 2), (w / 2, d / 2, h / 2)), label="walls")
    o = 0.06  # overhang
    if roof == "gable":
        rh = d * b.u(0.45, 0.7)
        b.add(prism_x([(-d / 2 - o, h - 0.02), (d / 2 + o, h - 0.02), (0, h + rh)], -w / 2 - o, w / 2 + o),
              roof_color, "roof")
    elif roof == "pyramid":
        rh = min(w, d) * b.u(0.4, 0.6)
        x, y = w / 2 + o, d / 2 + o
        verts = [(-x, -y, h - 0.02), (x, -y, h - 0.02), (x, y, h - 0.02), (-x, y, h - 0.02), (0, 0, h + rh)]
        b.add(convex_from_vertices(verts), roof_color, "roof")
    else:
        rh = 0.06
        b.add(Box((0, 0, h + 0.03), (w / 2 + o * 0.6, d / 2 + o * 0.6, 0.04)), roof_color, "roof")
    if chimney:
        cx = w * 0.25
        b.add(Box((cx, d * 0.15, h + rh * 0.6), (0.06, 0.06, rh * 0.55)), None, "chimney")
    # door on the front (-y), windows on the front and back
    dw, dh = b.u(0.16, 0.2), min(fh * 0.8, b.u(0.26, 0.32))
    door_x = b.u(-0.15, 0.15) * w
    b.add(Box((door_x, -d / 2 - 0.005, dh / 2), (dw / 2, 0.02, dh / 2)), door_color, "door")
    ws = b.u(0.11, 0.14)
    n_front = 0
    for f in range(floors):
        zc = f * fh + fh * 0.58
        slots = np.linspace(-w / 2, w / 2, per_floor + 3)[1:-1] if f > 0 else np.linspace(-w / 2, w / 2, per_floor + 2)[1:-1]
        for x in slots:
            if f == 0 and abs(x - door_x) < dw / 2 + ws / 2 + 0.04:
                continue
            for y in (-d / 2 - 0.004, d / 2 + 0.004):
                b.add(Box((x, y, zc), (ws / 2, 0.016, ws / 2)), window_color, "window")
            n_front += 1
    # side windows
    for x in (-w / 2 - 0.004, w / 2 + 0.004):
        b.add(Box((x, 0, fh * 0.58), (0.016, ws / 2, ws / 2)), window_color, "window")
    return dict(floors=floors, roof=roof, roof_color=roof_color, door_color=door_color, window_color=window_color,
                windows=n_front, chimney=chimney)


def rocket(b: Builder) -> dict:
    r = b.u(0.085, 0.11)
    hb = r * b.u(5.0, 6.5)
    nose = b.choice(["pointed", "rounded"])
    hn = r * (b.u(1.8, 2.5) if nose == "pointed" else b.u(1.3, 1.7))
    nose_color = b.accent(["red", "white", "black", "gray", "orange", "blue"]) if b.chance(0.5) else None
    fins = b.choice([3, 4])
    fin_color = b.accent(["red", "white", "black", "gray", "orange", "blue", "yellow"]) if b.chance(0.5) else None
    windows = b.choice([0, 1, 2, 3], p=[0.25, 0.35, 0.25, 0.15])
    window_color = b.accent(["blue", "white", "black", "yellow"], exclude=(fin_color, nose_color))
    boosters = b.chance(0.25)
    z0 = r * 0.5  # nozzle height
    b.add(Cylinder((0, 0, z0), (0, 0, z0 + hb), r), label="body")
    if nose == "pointed":
        b.add(Cone((0, 0, z0 + hb - 0.002), (0, 0, z0 + hb + hn), r, r * 0.03), nose_color, "nose")
    else:
        t = np.linspace(0, 1, 24)
        zs = z0 + hb - 0.002 + hn * t
        rs = r * np.sqrt(np.clip(1 - t ** 2, 0, 1)) * 0.999 + 1e-4
        b.add(Lathe(zs, rs), nose_color, "nose")
    b.add(Cone((0, 0, 0), (0, 0, z0 + 0.01), r * 0.8, r * 0.6), "gray" if b.main != "gray" else "black", "nozzle")
    span = r * b.u(0.9, 1.4)
    root = hb * b.u(0.25, 0.35)
    tip = root * b.u(0.35, 0.6)
    ft = max(0.1 * r, hb / 57.6 * 1.3) / 2
    for i in range(fins):
        ang = 2 * np.pi * i / fins + (np.pi / 4 if fins == 4 else np.pi / 2)
        R = rot_z(ang)
        prof = [(r * 0.5, z0 - r * 0.5), (r * 0.5, z0 + root), (r + span, z0 - r * 0.4 + tip), (r + span, z0 - r * 0.6)]
        verts = [(x, s, z) for (x, z) in prof for s in (-ft, ft)]
        b.add(convex_from_vertices(transformed_vertices(verts, R)), fin_color, "fin")
    for i in range(windows):
        zc = z0 + hb * (0.78 - 0.2 * i)
        b.add(Cylinder((0, -r * 0.6, zc), (0, -r * 1.04, zc), r * 0.3), window_color, "window")
    if boosters:
        for sx in (-1, 1):
            x = sx * r * 1.55
            hbb = hb * 0.45
            b.add(Cylinder((x, 0, z0), (x, 0, z0 + hbb), r * 0.45), None, "booster")
            b.add(Cone((x, 0, z0 + hbb - 0.002), (x, 0, z0 + hbb + r), r * 0.45, r * 0.03), nose_color, "booster nose")
    return dict(nose=nose, nose_color=nose_color, fins=fins, fin_color=fin_color, windows=windows,
                window_color=window_color if windows else None, boosters=boosters)


def car(b: Builder) -> dict:
    kind = b.choice(["sedan", "pickup", "van", "sports car"])
    L = b.u(0.9, 1.1)
    W = L * b.u(0.42, 0.48)
    rw = L * (b.u(0.1, 0.12) if kind != "sports car" else b.u(0.09, 0.1))
    if kind == "pickup" and b.chance(0.4):
        rw *= 1.25  # big wheels
    big_wheels = rw > L * 0.125
    zb = rw * 0.55
    hb = L * (b.u(0.16, 0.2) if kind != "sports car" else b.u(0.1, 0.13))
    window_color = b.accent(["black", "blue", "white", "gray"])
    b.add(Box((0, 0, zb + hb / 2), (L / 2, W / 2, hb / 2), round=min(hb, W) * 0.2), label="body")
    top = zb + hb
    inset = W * 0.06
    if kind == "sedan":
        x0, x1, ch = -L * 0.3, L * 0.2, L * b.u(0.15, 0.18)
        prof = [(x0, top - 0.01), (x1 + L * 0.1, top - 0.01), (x1 - L * 0.03, top + ch), (x0 + L * 0.08, top + ch)]
    elif kind == "sports car":
        x0, x1, ch = -L * 0.25, L * 0.2, L * b.u(0.1, 0.12)
        prof = [(x0 - L * 0.05, top - 0.01), (x1 + L * 0.12, top - 0.01), (x1 - L * 0.04, top + ch), (x0 + L * 0.08, top + ch)]
    elif kind == "van":
        x0, x1, ch = -L * 0.5, L * 0.3, L * b.u(0.2, 0.25)
        prof = [(x0, top - 0.01), (x1 + L * 0.12, top - 0.01), (x1, top + ch), (x0, top + ch)]
    else:  # pickup: cab at the front, open bed behind
        x0, x1, ch = L * 0.0, L * 0.25, L * b.u(0.18, 0.22)
        prof = [(x0, top - 0.01), (x1 + L * 0.08, top - 0.01), (x1, top + ch), (x0, top + ch)]
        wt = W * 0.06
        bed_h = L * 0.07
        for y in (-W / 2 + wt / 2, W / 2 - wt / 2):
            b.add(Box(((-L / 2 + x0) / 2, y, top + bed_h / 2), ((x0 + L / 2) / 2, wt / 2, bed_h / 2)), label="bed")
        b.add(Box((-L / 2 + wt / 2, 0, top + bed_h / 2), (wt / 2, W / 2, bed_h / 2)), label="bed")
    verts = [(x, y, z) for (x, z) in prof for y in (-W / 2 + inset, W / 2 - inset)]
    b.add(convex_from_vertices(verts), label="cabin")
    # windows: a slightly larger, shrunk-in-height copy of the cabin band
    wz0, wz1 = top + ch * 0.35, top + ch * 0.85
    cabin = b.parts[-1].prim
    slab = Box((0, 0, (wz0 + wz1) / 2), (L, W, (wz1 - wz0) / 2))
    b.add(Intersection(Offset(cabin, 0.006), slab), window_color, "windows")
    # wheels along y
    n_axles = 2
    wx = L / 2 - rw * 1.25
    wheel_color = "black" if b.main != "black" else "gray"
    for x in (-wx, wx):
        for sy in (-1, 1):
            y0, y1 = sy * (W / 2 - 0.07 * L), sy * (W / 2 + 0.02 * L)
            b.add(Cylinder((x, y0, rw), (x, y1, rw), rw), wheel_color, "wheel")
            b.add(Cylinder((x, y1 - sy * 0.01, rw), (x, y1 + sy * 0.006, rw), rw * 0.5), "gray" if wheel_color != "gray" else "white", "hubcap")
    light = "yellow" if b.main != "yellow" else "white"
    for sy in (-1, 1):
        b.add(Box((L / 2, sy * W * 0.3, zb + hb * 0.6), (0.012, W * 0.08, hb * 0.14)), light, "headlight")
    return dict(kind=kind, wheels=2 * n_axles, wheel_color=wheel_color, big_wheels=big_wheels,
                window_color=window_color)
