"""The add-on's bpy-free half (addon/core) and the add-on's import structure, without Blender."""

import ast
import importlib
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADDON = os.path.join(ROOT, "addon")
sys.path.insert(0, ROOT)


def addon_modules():
    """{dotted name relative to the add-on: file path} for every module of the add-on."""
    out = {}
    for dirpath, _, files in os.walk(ADDON):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, name), ADDON)[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith("__init__") else rel] = os.path.join(dirpath, name)
    return out


def imports_of(module, path):
    """(imported add-on module, imported names) pairs of one module, relative imports resolved."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".") if package and package != "__init__" else []
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            target = ".".join(base + ([node.module] if node.module else []))
            found.append((target or "__init__", [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
    return found


def import_graph():
    modules = addon_modules()
    graph = {}
    for module, path in modules.items():
        edges = set()
        for target, names in imports_of(module, path):
            for name in names:  # "from . import jobs" imports the module jobs
                if (target + "." + name if target != "__init__" else name) in modules:
                    edges.add(target + "." + name if target != "__init__" else name)
            if target in modules:
                edges.add(target)
        graph[module] = edges - {module}
    return graph


def test_addon_import_graph_has_no_cycle():
    graph, state, stack = import_graph(), {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                pytest.fail("import cycle: %s" % " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_core_imports_neither_bpy_nor_the_bpy_half():
    graph = import_graph()
    for module, path in addon_modules().items():
        if not module.startswith("core"):
            continue
        for target, _ in imports_of(module, path):
            assert target.split(".")[0] not in ("bpy", "mathutils", "bmesh", "addon_utils"), (module, target)
        outside = [t for t in graph[module] if not t.startswith("core")]
        assert not outside, "%s imports %s (core must stay below the bpy half)" % (module, outside)


def test_no_module_imports_a_private_name_of_another():
    for module, path in addon_modules().items():
        for target, names in imports_of(module, path):
            private = [n for n in names if n.startswith("_")]
            assert not private, "%s imports private %s from %s" % (module, private, target)


def test_every_core_module_imports_in_plain_python():
    for module in addon_modules():
        if module.startswith("core"):
            importlib.import_module("addon." + module)
    assert "bpy" not in sys.modules


def test_box_region_is_the_clipped_aabb_in_object_space():
    from addon.core.region import box_region

    to_local = np.eye(4)
    to_local[:3, 3] = [0.4, 0.0, 0.0]  # a box of half size 0.25 centred at x = 0.4: clipped at 0.5
    region = box_region(to_local, 0.25)
    assert region["box_min"] == pytest.approx([0.15, -0.25, -0.25]) and region["box_max"] == [0.5, 0.25, 0.25]
    rotated = np.array([[0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]], dtype=float)  # 90 deg, z x2
    assert box_region(rotated, 0.1)["box_max"] == pytest.approx([0.1, 0.1, 0.2])
    far = np.eye(4)
    far[:3, 3] = [3, 0, 0]
    with pytest.raises(ValueError, match="does not overlap"):
        box_region(far, 0.5, "Box", "Chair")


def test_voxels_of_points_dilates_inside_the_grid():
    from addon.core.region import voxels_of_points

    assert voxels_of_points([[-0.5, -0.5, -0.5]], dilate=0) == [[0, 0, 0]]
    corner = voxels_of_points([[-0.5, -0.5, -0.5]], dilate=1)
    assert len(corner) == 8 and [1, 1, 1] in corner  # the 2x2x2 block the 3x3x3 step leaves inside the grid
    middle = voxels_of_points([[0.0, 0.0, 0.0], [0.001, 0.0, 0.0]], dilate=1)
    assert len(middle) == 27 and middle == sorted(middle)
    assert voxels_of_points([[0.5, 0.5, 0.5]], dilate=0) == [[63, 63, 63]]


def test_default_model_follows_the_condition():
    from addon.core import paths, requests

    text, image = paths.embedded_model_dir(), paths.embedded_model_dir(for_image=True)
    if not (text and image):
        pytest.skip("this checkout has no embedded models")
    assert requests.model_for("", {"prompt": "a chair"}) == text
    assert requests.model_for("", {"image": "/x.png"}) == image
    assert requests.model_for("", {"image": ["/a.png", "/b.png"], "prompt": "x"}) == image
    assert requests.model_for("/my/model", {"image": "/x.png"}) == "/my/model"


def test_requests_check_and_names():
    from addon.core import requests

    with pytest.raises(ValueError, match="Type a prompt"):
        requests.check("generate", {"seed": 1})
    assert requests.slug("A red chair!") == "a_red_chair" and requests.slug("") == "asset"
    assert requests.job_name("chair", 3, kind="edit").startswith("chair_edit_s3_")
    assert requests.outputs_for_kinds({"mesh", "gaussians"}) == "BOTH"
    assert requests.outputs_for_kinds({"gaussians"}) == "GAUSSIANS"
    assert requests.outputs_for_kinds(set()) == "MESH"
