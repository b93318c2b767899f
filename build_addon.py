#!/usr/bin/env python3
"""Build the installable add-on zip: dist/trellis_blender-<version>.zip.

One zip serves both install paths: Blender 4.2+ "Install from Disk" as an
extension (blender_manifest.toml) and the legacy add-on installer (bl_info),
because both accept a single top-level package folder:

    trellis_blender/                 the add-on (addon/)
    trellis_blender/backend/         the runtime of trellis_backend + trellis_kernels and
                                     requirements.txt (for 'Set up backend')
    trellis_blender/models/trellis-embedded/        the embedded text model
    trellis_blender/models/trellis-embedded-image/  the embedded image model

The zip holds the runtime only: the lab (procedural data, training, evaluation,
the random-model maker, kernel benchmarks) stays in the checkout. LAB_PATHS names
it both by its packages (trellis_lab, trellis_bench) and by the places it had
inside the runtime packages, and ``build`` refuses a zip that still has any.

Usage: python build_addon.py [--out DIR] [--no-model]
Only the standard library is needed, so it runs from any Python 3.8+.
"""

import argparse
import os
import re
import sys
import zipfile

ROOT = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "trellis_blender"
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".git"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".orig", ".rej")
ZIP_DATE = (2024, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same zip
EMBEDDED_MODELS = ("trellis-embedded", "trellis-embedded-image")
# Lab code never shipped, as paths relative to backend/ and kernels/ (folders end with "/").
LAB_PACKAGES = ("trellis_lab/", "trellis_bench/")
LAB_PATHS = LAB_PACKAGES + (
    "trellis_backend/training/", "trellis_backend/data/", "trellis_backend/pipeline/random_model.py",
    "trellis_kernels/bench", "trellis_kernels/product_timing.py",  # bench.py, bench_stages.py, bench/
)


def read_version():
    manifest = open(os.path.join(ROOT, "addon", "blender_manifest.toml"), encoding="utf-8").read()
    version = re.search(r'^version\s*=\s*"([^"]+)"', manifest, re.M).group(1)
    init = open(os.path.join(ROOT, "addon", "__init__.py"), encoding="utf-8").read()
    bl = re.search(r'"version":\s*\((\d+),\s*(\d+),\s*(\d+)\)', init)
    if bl is None or ".".join(bl.groups()) != version:
        sys.exit("error: bl_info version %s differs from blender_manifest.toml version %s"
                 % (bl and ".".join(bl.groups()), version))
    return version


def check_protocol_copies():
    a = os.path.join(ROOT, "addon", "core", "protocol.py")
    b = os.path.join(ROOT, "backend", "trellis_backend", "server", "protocol.py")
    if open(a, "rb").read() != open(b, "rb").read():
        sys.exit("error: addon/core/protocol.py and backend/trellis_backend/server/protocol.py differ; "
                 "the add-on's copy is canonical: cp %s %s" % (os.path.relpath(a, ROOT), os.path.relpath(b, ROOT)))


# optional extras the bundled runtime needs: the embedded text model's encoder (and CLIP), TRELLIS.2's DINOv3
RUNTIME_EXTRAS = ("embedded", "trellis2")


def requirements():
    """The backend's runtime dependencies from pyproject.toml (plus `RUNTIME_EXTRAS`), one pip requirement per line."""
    text = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    try:
        import tomllib

        project = tomllib.loads(text)["project"]
        extras = project.get("optional-dependencies", {})
        reqs = list(project["dependencies"]) + [r for name in RUNTIME_EXTRAS for r in extras.get(name, [])]
    except ImportError:  # Python < 3.11: the lists are simple enough to read directly
        reqs = re.findall(r'"([^"]+)"', re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.M | re.S).group(1))
        for name in RUNTIME_EXTRAS:
            found = re.search(r"^%s\s*=\s*\[(.*?)\]" % name, text, re.M | re.S)
            reqs += re.findall(r'"([^"]+)"', found.group(1)) if found else []
    return list(dict.fromkeys(reqs))


def is_lab(relpath):
    """True for a path (relative to backend/ or kernels/) that belongs to the lab, not the runtime."""
    relpath = relpath.replace(os.sep, "/")
    return any(relpath.startswith(p) or ("/" + p) in "/" + relpath for p in LAB_PATHS)


def iter_files(src, exclude=lambda rel: False):
    base = os.path.dirname(src)
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")
                             and not exclude(os.path.relpath(os.path.join(dirpath, d), base) + "/"))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if not name.endswith(SKIP_SUFFIXES) and not exclude(os.path.relpath(path, base)):
                yield path


def _info(arc, mode=0o644):
    info = zipfile.ZipInfo(arc, ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (mode | 0o100000) << 16
    return info


def add_tree(zf, src, dest, exclude=lambda rel: False):
    count = 0
    for path in iter_files(src, exclude):
        arc = "/".join([dest, os.path.relpath(path, src).replace(os.sep, "/")])
        with open(path, "rb") as fh:
            zf.writestr(_info(arc, os.stat(path).st_mode & 0o777), fh.read())
        count += 1
    return count


def build(out_dir, include_model=True):
    version = read_version()
    check_protocol_copies()
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, "%s-%s.zip" % (PACKAGE, version))
    tmp = target + ".partial"
    counts = {}
    with zipfile.ZipFile(tmp, "w") as zf:
        counts["add-on"] = add_tree(zf, os.path.join(ROOT, "addon"), PACKAGE)
        counts["trellis_backend"] = add_tree(zf, os.path.join(ROOT, "backend", "trellis_backend"),
                                             PACKAGE + "/backend/trellis_backend", is_lab)
        counts["trellis_kernels"] = add_tree(zf, os.path.join(ROOT, "kernels", "trellis_kernels"),
                                             PACKAGE + "/backend/trellis_kernels", is_lab)
        zf.writestr(_info(PACKAGE + "/backend/requirements.txt"),
                    "# Backend runtime requirements (from pyproject.toml); installed by 'Set up backend'.\n"
                    + "\n".join(requirements()) + "\n")
        for name in EMBEDDED_MODELS if include_model else ():
            model = os.path.join(ROOT, "models", name)
            if os.path.exists(os.path.join(model, "pipeline.json")):
                counts[name] = add_tree(zf, model, PACKAGE + "/models/" + name)
            else:
                print("warning: models/%s/pipeline.json not found; the zip lacks that embedded model "
                      "(users must choose a model folder in the add-on preferences)" % name, file=sys.stderr)
        shipped_lab = [n for n in zf.namelist() if n.startswith(PACKAGE + "/backend/")
                       and is_lab(n[len(PACKAGE + "/backend/"):])]
    if shipped_lab:
        os.remove(tmp)
        sys.exit("error: lab files would be shipped: %s" % ", ".join(shipped_lab[:5]))
    os.replace(tmp, target)  # never leave a half-written zip under the final name
    size = os.path.getsize(target)
    print("built %s (%d bytes, %d files): %s" % (target, size, sum(counts.values()) + 1,
                                                 ", ".join("%s %d files" % kv for kv in counts.items())))
    return target


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "dist"), help="output folder (default: dist/)")
    ap.add_argument("--no-model", action="store_true", help="leave the embedded model out")
    args = ap.parse_args(argv)
    build(args.out, include_model=not args.no_model)


if __name__ == "__main__":
    main()
