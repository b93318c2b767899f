#!/usr/bin/env python3
"""Build the installable add-on zip: dist/trellis_blender-<version>.zip.

One zip serves both install paths: Blender 4.2+ "Install from Disk" as an
extension (blender_manifest.toml) and the legacy add-on installer (bl_info),
because both accept a single top-level package folder:

    trellis_blender/                 the add-on (addon/)
    trellis_blender/backend/         trellis_backend + trellis_kernels sources and
                                     requirements.txt (for 'Set up backend')
    trellis_blender/models/trellis-embedded/   the embedded default model, if built

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
    a = os.path.join(ROOT, "addon", "protocol.py")
    b = os.path.join(ROOT, "backend", "trellis_backend", "server", "protocol.py")
    if open(a, "rb").read() != open(b, "rb").read():
        sys.exit("error: addon/protocol.py and backend/trellis_backend/server/protocol.py differ; "
                 "the add-on's copy is canonical: cp %s %s" % (os.path.relpath(a, ROOT), os.path.relpath(b, ROOT)))


def requirements():
    """The backend's runtime dependencies from pyproject.toml, one pip requirement per line."""
    text = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    try:
        import tomllib

        return list(tomllib.loads(text)["project"]["dependencies"])
    except ImportError:  # Python < 3.11: the dependencies list is simple enough to read directly
        block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.M | re.S).group(1)
        return re.findall(r'"([^"]+)"', block)


def iter_files(src):
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if not name.endswith(SKIP_SUFFIXES):
                yield os.path.join(dirpath, name)


def _info(arc, mode=0o644):
    info = zipfile.ZipInfo(arc, ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (mode | 0o100000) << 16
    return info


def add_tree(zf, src, dest):
    count = 0
    for path in iter_files(src):
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
                                             PACKAGE + "/backend/trellis_backend")
        counts["trellis_kernels"] = add_tree(zf, os.path.join(ROOT, "kernels", "trellis_kernels"),
                                             PACKAGE + "/backend/trellis_kernels")
        zf.writestr(_info(PACKAGE + "/backend/requirements.txt"),
                    "# Backend runtime requirements (from pyproject.toml); installed by 'Set up backend'.\n"
                    + "\n".join(requirements()) + "\n")
        model = os.path.join(ROOT, "models", "trellis-embedded")
        if include_model and os.path.exists(os.path.join(model, "pipeline.json")):
            counts["embedded model"] = add_tree(zf, model, PACKAGE + "/models/trellis-embedded")
        elif include_model:
            print("warning: models/trellis-embedded/pipeline.json not found; the zip has no embedded model "
                  "(users must choose a model folder in the add-on preferences)", file=sys.stderr)
    os.replace(tmp, target)  # never leave a half-written zip under the final name
    size = os.path.getsize(target) / 1e6
    print("built %s (%.1f MB): %s" % (target, size, ", ".join("%s %d files" % kv for kv in counts.items())))
    return target


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "dist"), help="output folder (default: dist/)")
    ap.add_argument("--no-model", action="store_true", help="leave the embedded model out")
    args = ap.parse_args(argv)
    build(args.out, include_model=not args.no_model)


if __name__ == "__main__":
    main()
