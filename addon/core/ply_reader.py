"""Minimal PLY reader for the INRIA 3D Gaussian Splatting layout.

Blender ships numpy but not plyfile, so this reads the header by hand and the
vertex element with one structured-dtype ``frombuffer`` (binary) or
``loadtxt`` (ascii). Only the first element's properties are returned; the
3DGS layout has just ``vertex``. No bpy here.
"""

import numpy as np

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


class PLYError(ValueError):
    pass


def read_header(fh):
    """Return (format, [(element, count, [(name, dtype)])]) and leave fh at the data."""
    if fh.readline().strip() != b"ply":
        raise PLYError("not a PLY file (missing 'ply' magic)")
    fmt, elements = None, []
    while True:
        line = fh.readline()
        if not line:
            raise PLYError("PLY header has no end_header")
        words = line.decode("ascii", "replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property":
            if not elements:
                raise PLYError("property before any element")
            if words[1] == "list":
                raise PLYError("list properties are not supported (property %s)" % words[-1])
            if words[1] not in _TYPES:
                raise PLYError("unknown PLY type %r" % words[1])
            elements[-1][2].append((words[2], _TYPES[words[1]]))
        elif words[0] == "end_header":
            break
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
        raise PLYError("unsupported PLY format %r" % fmt)
    return fmt, elements


def read_ply(path):
    """Return (element_name, {property: float/int ndarray}) of the first element."""
    with open(path, "rb") as fh:
        fmt, elements = read_header(fh)
        if not elements:
            raise PLYError("PLY has no elements")
        name, count, props = elements[0]
        if fmt == "ascii":
            table = np.loadtxt(fh, max_rows=count, ndmin=2) if count else np.zeros((0, len(props)))
            return name, {p: table[:, i].astype(t) for i, (p, t) in enumerate(props)}
        order = "<" if fmt == "binary_little_endian" else ">"
        dtype = np.dtype([(p, order + t) for p, t in props])
        data = fh.read(dtype.itemsize * count)
        if len(data) < dtype.itemsize * count:
            raise PLYError("PLY file is truncated: expected %d vertices" % count)
        table = np.frombuffer(data, dtype=dtype, count=count)
        return name, {p: np.ascontiguousarray(table[p]) for p, _ in props}
