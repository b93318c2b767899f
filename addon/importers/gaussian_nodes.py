"""How a splat point cloud is shown: points, opaque ellipsoids, or Gaussian splats.

One geometry-nodes group does all three from the same point attributes (``scale``,
``rotation_euler``, ``opacity``, ``color``), chosen by its "Display" input:

* points: one sphere per Gaussian (the fastest viewport);
* ellipsoids: an opaque icosphere per Gaussian at "Splat Size" sigmas (the look before
  Gaussian splats, kept for comparison);
* Gaussian splats: an icosphere at 3 sigma whose material lets each splat fade as the
  Gaussian does. Seen along a ray, a 3D Gaussian peaks where the ray passes closest to its
  centre in the Gaussian's own metric; with ``p`` the shading point and ``d`` the view
  direction in the splat's unit frame (the instance's object space, where the Gaussian is
  isotropic with sigma 1/3), that peak is ``q = 9 * (p.p - (p.d)^2 / d.d)`` and the splat
  covers ``opacity * exp(-q / 2)`` of what lies behind it. That is the 3DGS alpha of the
  projected (EWA) Gaussian, exact for an orthographic view; back faces are transparent so each
  splat counts once, and the renderer's depth order gives 3DGS's front-to-back compositing.

A "Viewport Limit" thins the viewport to about that many splats (a random subset); renders
always get all of them. Built in code so it works from Blender 3.4 on: the node-group
interface API changed in 4.0 and Instance-on-Points takes a Rotation socket since 4.0, so
each difference is probed rather than assumed.
"""

import bpy

from .node_trees import with_nodes

GROUP_NAME = "TRELLIS Splats v2"
MODIFIER_NAME = "TRELLIS Splats"
SHADING_COLOR = "splat_color"
GAUSSIAN_EXTENT = 3.0  # sigmas the Gaussian display's icospheres reach (3DGS cuts splats at 3 sigma too)
DISPLAYS = {"POINTS": 0, "ELLIPSOIDS": 1, "GAUSSIANS": 2}
DEFAULT_VIEWPORT_LIMIT = 50000
MATERIAL_INPUTS = {"POINTS": "Points Material", "ELLIPSOIDS": "Ellipsoid Material", "GAUSSIANS": "Gaussian Material"}


# -- node helpers that work on 3.4 .. 5.x ------------------------------------------
def _new_socket(group, in_out, socket_type, name):
    if hasattr(group, "interface"):  # 4.0+
        return group.interface.new_socket(name, in_out=in_out, socket_type=socket_type)
    return (group.inputs if in_out == "INPUT" else group.outputs).new(socket_type, name)


def _output(node, name, index=0):
    """The enabled output called ``name`` (3.x nodes keep one hidden output per data type)."""
    for sock in node.outputs:
        if sock.name == name and getattr(sock, "enabled", True):
            return sock
    return node.outputs[index]


def _input(node, name):
    """The enabled input called ``name`` (3.x Switch/Compare/Store have one per data type)."""
    for sock in node.inputs:
        if sock.name == name and getattr(sock, "enabled", True):
            return sock
    return node.inputs[name]


def _node(nodes, kind, location, **props):
    node = nodes.new(kind)
    node.location = location
    for key, value in props.items():
        setattr(node, key, value)
    return node


def _named_attribute(nodes, name, data_type, location):
    node = _node(nodes, "GeometryNodeInputNamedAttribute", location, data_type=data_type)
    node.inputs["Name"].default_value = name
    return _output(node, "Attribute")


def _switch(nodes, links, input_type, condition, false, true, location):
    node = _node(nodes, "GeometryNodeSwitch", location, input_type=input_type)
    links.new(condition, _input(node, "Switch"))
    for name, value in (("False", false), ("True", true)):
        if isinstance(value, bpy.types.NodeSocket):
            links.new(value, _input(node, name))
        else:
            _input(node, name).default_value = value
    return _output(node, "Output")


def _int_equals(nodes, links, socket, value, location):
    node = _node(nodes, "FunctionNodeCompare", location, data_type="INT", operation="EQUAL")
    links.new(socket, _input(node, "A"))
    _input(node, "B").default_value = value
    return _output(node, "Result")


def _math(nodes, links, operation, a, b, location):
    node = _node(nodes, "ShaderNodeMath", location, operation=operation)
    for sock, value in zip(node.inputs, (a, b)):
        if value is None:
            continue
        if isinstance(value, bpy.types.NodeSocket):
            links.new(value, sock)
        else:
            sock.default_value = value
    return node.outputs[0]


# -- the geometry-nodes group ---------------------------------------------------------
def _viewport_subset(nodes, links, geometry, limit):
    """Delete a random share of the points in the viewport so that about ``limit`` stay."""
    count = _node(nodes, "GeometryNodeAttributeDomainSize", (-1300, -300), component="MESH")
    links.new(geometry, count.inputs[0])
    rand = _node(nodes, "FunctionNodeRandomValue", (-1300, -500), data_type="FLOAT")
    scaled = _math(nodes, links, "MULTIPLY", _output(rand, "Value"), _output(count, "Point Count"), (-1100, -450))
    over = _math(nodes, links, "GREATER_THAN", scaled, limit, (-950, -450))
    viewport = _node(nodes, "GeometryNodeIsViewport", (-1100, -650))
    both = _node(nodes, "FunctionNodeBooleanMath", (-800, -500), operation="AND")
    links.new(viewport.outputs[0], both.inputs[0])
    links.new(over, both.inputs[1])
    delete = _node(nodes, "GeometryNodeDeleteGeometry", (-650, -300), domain="POINT")
    links.new(geometry, delete.inputs["Geometry"])
    links.new(both.outputs[0], delete.inputs["Selection"])
    return delete.outputs[0]


def build_node_group():
    group = bpy.data.node_groups.new(GROUP_NAME, "GeometryNodeTree")
    _new_socket(group, "INPUT", "NodeSocketGeometry", "Geometry")
    display = _new_socket(group, "INPUT", "NodeSocketInt", "Display")
    display.default_value, display.min_value, display.max_value = DISPLAYS["GAUSSIANS"], 0, 2
    limit = _new_socket(group, "INPUT", "NodeSocketInt", "Viewport Limit")
    limit.default_value, limit.min_value = DEFAULT_VIEWPORT_LIMIT, 1
    size = _new_socket(group, "INPUT", "NodeSocketFloat", "Splat Size")
    size.default_value, size.min_value = 2.0, 0.0
    detail = _new_socket(group, "INPUT", "NodeSocketInt", "Detail")
    detail.default_value, detail.min_value, detail.max_value = 2, 1, 4
    for name in MATERIAL_INPUTS.values():
        _new_socket(group, "INPUT", "NodeSocketMaterial", name)
    _new_socket(group, "OUTPUT", "NodeSocketGeometry", "Geometry")

    nodes, links = group.nodes, group.links
    gin, gout = _node(nodes, "NodeGroupInput", (-1600, 0)), _node(nodes, "NodeGroupOutput", (900, 0))
    points = _viewport_subset(nodes, links, _output(gin, "Geometry"), _output(gin, "Viewport Limit"))

    # Cycles does not resolve an Attribute node named "color" (a reserved name there), so the
    # shading copy is stored under SHADING_COLOR; the data keeps the plain "color" attribute.
    store = _node(nodes, "GeometryNodeStoreNamedAttribute", (-450, 150), data_type="FLOAT_COLOR", domain="POINT")
    store.inputs["Name"].default_value = SHADING_COLOR
    links.new(points, store.inputs["Geometry"])
    links.new(_named_attribute(nodes, "color", "FLOAT_COLOR", (-650, 250)), _input(store, "Value"))
    painted = store.outputs["Geometry"]
    is_points = _int_equals(nodes, links, _output(gin, "Display"), DISPLAYS["POINTS"], (-450, 450))
    is_gauss = _int_equals(nodes, links, _output(gin, "Display"), DISPLAYS["GAUSSIANS"], (-450, -700))
    scale_attr = _named_attribute(nodes, "scale", "FLOAT_VECTOR", (-650, -450))

    # points: spheres of the mean sigma
    mean = _node(nodes, "ShaderNodeVectorMath", (-250, 500), operation="DOT_PRODUCT")
    links.new(scale_attr, mean.inputs[0])
    mean.inputs[1].default_value = (1 / 3, 1 / 3, 1 / 3)
    to_points = _node(nodes, "GeometryNodeMeshToPoints", (0, 450))
    links.new(painted, to_points.inputs["Mesh"])
    links.new(_output(mean, "Value", 1), to_points.inputs["Radius"])
    points_mat = _node(nodes, "GeometryNodeSetMaterial", (200, 450))
    links.new(to_points.outputs[0], points_mat.inputs["Geometry"])
    links.new(_output(gin, "Points Material"), points_mat.inputs["Material"])

    # ellipsoids / Gaussian splats: one icosphere instance per point, its material set on the sphere
    ico = _node(nodes, "GeometryNodeMeshIcoSphere", (-450, -250))
    ico.inputs["Radius"].default_value = 1.0
    links.new(_output(gin, "Detail"), ico.inputs["Subdivisions"])
    material = _switch(nodes, links, "MATERIAL", is_gauss, _output(gin, "Ellipsoid Material"),
                       _output(gin, "Gaussian Material"), (-250, -500))
    ico_mat = _node(nodes, "GeometryNodeSetMaterial", (-250, -250))
    links.new(ico.outputs["Mesh"], ico_mat.inputs["Geometry"])
    links.new(material, ico_mat.inputs["Material"])
    sigmas = _switch(nodes, links, "FLOAT", is_gauss, _output(gin, "Splat Size"), GAUSSIAN_EXTENT, (-250, -700))
    scaled = _node(nodes, "ShaderNodeVectorMath", (-50, -500), operation="SCALE")
    links.new(scale_attr, scaled.inputs[0])
    links.new(sigmas, scaled.inputs["Scale"])
    inst = _node(nodes, "GeometryNodeInstanceOnPoints", (150, -150))
    links.new(painted, inst.inputs["Points"])
    links.new(ico_mat.outputs[0], inst.inputs["Instance"])
    links.new(_output(scaled, "Vector"), inst.inputs["Scale"])
    rotation = _named_attribute(nodes, "rotation_euler", "FLOAT_VECTOR", (-250, -900))
    if inst.inputs["Rotation"].type == "ROTATION" and hasattr(bpy.types, "FunctionNodeEulerToRotation"):
        to_rot = _node(nodes, "FunctionNodeEulerToRotation", (-50, -900))
        links.new(rotation, to_rot.inputs[0])
        rotation = to_rot.outputs[0]
    links.new(rotation, inst.inputs["Rotation"])
    # Instances stay instances: each keeps its own object space (the Gaussian material's frame) and
    # carries the point attributes on the instance domain, which materials read as "Instancer".

    out = _switch(nodes, links, "GEOMETRY", is_points, inst.outputs["Instances"], points_mat.outputs[0], (500, 0))
    links.new(out, gout.inputs["Geometry"])
    return group


def splat_node_group():
    group = bpy.data.node_groups.get(GROUP_NAME)
    if group is None or group.bl_idname != "GeometryNodeTree":
        before = set(bpy.data.node_groups)
        try:
            group = build_node_group()
        except Exception:
            for half_built in set(bpy.data.node_groups) - before:  # never leave a broken group to be reused
                bpy.data.node_groups.remove(half_built)
            raise
    return group


def _input_identifier(group, name):
    if hasattr(group, "interface"):
        for item in group.interface.items_tree:
            if getattr(item, "in_out", None) == "INPUT" and item.name == name:
                return item.identifier
    else:
        for sock in group.inputs:
            if sock.name == name:
                return sock.identifier
    return None


def set_modifier_input(obj, name, value):
    """Set one input of the object's splat modifier; False when it has none."""
    mod = obj.modifiers.get(MODIFIER_NAME)
    ident = _input_identifier(mod.node_group, name) if mod is not None and mod.node_group else None
    if ident is None:
        return False
    mod[ident] = value
    obj.update_tag()
    return True


def set_display(obj, display=None, viewport_limit=None):
    """Switch a splat object's display (a DISPLAYS key) and/or its viewport splat limit."""
    done = True
    if display is not None:
        done &= set_modifier_input(obj, "Display", DISPLAYS[display])
    if viewport_limit is not None:
        done &= set_modifier_input(obj, "Viewport Limit", max(1, int(viewport_limit)))
    return done


def add_splat_modifier(obj, materials, display="GAUSSIANS", viewport_limit=DEFAULT_VIEWPORT_LIMIT):
    """Attach the display modifier; returns it, or None when this Blender cannot build it."""
    try:
        group = splat_node_group()
    except (KeyError, RuntimeError, AttributeError, TypeError) as exc:
        print("TRELLIS: splat display unavailable on this Blender (%s); showing points only" % exc)
        return None
    mod = obj.modifiers.new(MODIFIER_NAME, "NODES")
    mod.node_group = group
    for kind, name in MATERIAL_INPUTS.items():
        set_modifier_input(obj, name, materials[kind])
    set_display(obj, display, viewport_limit)
    return mod


# -- materials ------------------------------------------------------------------------
def _attribute(nodes, name, attribute_type, location):
    node = _node(nodes, "ShaderNodeAttribute", location)
    node.attribute_name = name
    node.attribute_type = attribute_type
    return node


def _vector_math(nodes, links, operation, a, b, location):
    node = _node(nodes, "ShaderNodeVectorMath", location, operation=operation)
    links.new(a, node.inputs[0])
    links.new(b, node.inputs[1])
    return _output(node, "Value", 1)


def gaussian_alpha(nodes, links, opacity):
    """opacity * exp(-q / 2), q the squared Mahalanobis distance of the view ray's closest point; 0 on back faces."""
    coords = _node(nodes, "ShaderNodeTexCoord", (-1400, -300))
    geometry = _node(nodes, "ShaderNodeNewGeometry", (-1400, -550))
    to_object = _node(nodes, "ShaderNodeVectorTransform", (-1200, -550), vector_type="VECTOR",
                      convert_from="WORLD", convert_to="OBJECT")
    links.new(geometry.outputs["Incoming"], to_object.inputs[0])
    p, d = coords.outputs["Object"], to_object.outputs[0]
    pp = _vector_math(nodes, links, "DOT_PRODUCT", p, p, (-1000, -250))
    pd = _vector_math(nodes, links, "DOT_PRODUCT", p, d, (-1000, -400))
    dd = _vector_math(nodes, links, "DOT_PRODUCT", d, d, (-1000, -550))
    along = _math(nodes, links, "DIVIDE", _math(nodes, links, "MULTIPLY", pd, pd, (-850, -400)), dd, (-700, -450))
    across = _math(nodes, links, "SUBTRACT", pp, along, (-550, -300))  # squared distance, unit-sphere units
    falloff = _math(nodes, links, "EXPONENT",
                    _math(nodes, links, "MULTIPLY", across, -0.5 * GAUSSIAN_EXTENT ** 2, (-400, -300)), None,
                    (-250, -300))
    front = _math(nodes, links, "SUBTRACT", 1.0, geometry.outputs["Backfacing"], (-250, -500))
    return _math(nodes, links, "MULTIPLY", _math(nodes, links, "MULTIPLY", falloff, opacity, (-100, -300)),
                 front, (50, -350))


def splat_material(display, name=None):
    """Emission coloured by the splat colour (splats carry radiance, not albedo) over transparency.

    GAUSSIANS: alpha falls off as the Gaussian (see the module docstring); ELLIPSOIDS: alpha is
    the opacity over the whole ellipsoid (the look before); POINTS: opaque colour. Instances
    read their attributes as "Instancer", realised points as "Geometry".
    """
    mat = bpy.data.materials.new(name or "TRELLIS Splat " + display.title())
    tree = with_nodes(mat)
    nodes, links = tree.nodes, tree.links
    nodes.clear()
    out = _node(nodes, "ShaderNodeOutputMaterial", (600, 0))
    source = "GEOMETRY" if display == "POINTS" else "INSTANCER"
    color = _attribute(nodes, SHADING_COLOR, source, (-400, 150))
    emission = _node(nodes, "ShaderNodeEmission", (0, 100))
    links.new(color.outputs["Color"], emission.inputs["Color"])
    if display == "POINTS":
        links.new(emission.outputs[0], out.inputs["Surface"])
        return mat
    opacity = _attribute(nodes, "opacity", source, (-400, -100)).outputs["Fac"]
    alpha = gaussian_alpha(nodes, links, opacity) if display == "GAUSSIANS" else opacity
    transparent = _node(nodes, "ShaderNodeBsdfTransparent", (200, -100))
    mix = _node(nodes, "ShaderNodeMixShader", (400, 0))
    links.new(alpha, mix.inputs["Fac"])
    links.new(transparent.outputs[0], mix.inputs[1])
    links.new(emission.outputs[0], mix.inputs[2])
    links.new(mix.outputs[0], out.inputs["Surface"])
    if hasattr(mat, "surface_render_method"):  # 4.2+ EEVEE
        mat.surface_render_method = "DITHERED"
    elif hasattr(mat, "blend_method"):
        mat.blend_method = "HASHED"
    if hasattr(mat, "shadow_method"):
        mat.shadow_method = "NONE"
    return mat


def splat_materials(mean_color):
    """The three display materials of one splat object; their viewport colour is the mean splat colour."""
    materials = {kind: splat_material(kind) for kind in DISPLAYS}
    for mat in materials.values():
        mat.diffuse_color = tuple(mean_color) + (1.0,)
    return materials
