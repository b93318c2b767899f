"""Geometry-nodes setup that displays splat points as oriented, coloured ellipsoids.

Built in code so it works on every Blender from 3.4 on: the node-group
interface API changed in 4.0 (``interface.new_socket`` vs ``inputs.new``) and
Instance-on-Points takes a Rotation socket since 4.0 (an Euler vector before),
so each difference is probed rather than assumed. If a node is missing the
object still imports as a plain point cloud with all its attributes.
"""

import bpy

GROUP_NAME = "TRELLIS Splats"
SHADING_COLOR = "splat_color"


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
    """The enabled input called ``name`` (3.x Store Named Attribute has one per data type)."""
    for sock in node.inputs:
        if sock.name == name and getattr(sock, "enabled", True):
            return sock
    return node.inputs[name]


def _named_attribute(nodes, name, data_type, location):
    node = nodes.new("GeometryNodeInputNamedAttribute")
    node.data_type = data_type
    node.inputs["Name"].default_value = name
    node.location = location
    return _output(node, "Attribute")


def build_node_group():
    group = bpy.data.node_groups.new(GROUP_NAME, "GeometryNodeTree")
    _new_socket(group, "INPUT", "NodeSocketGeometry", "Geometry")
    size = _new_socket(group, "INPUT", "NodeSocketFloat", "Splat Size")
    size.default_value, size.min_value = 2.0, 0.0
    detail = _new_socket(group, "INPUT", "NodeSocketInt", "Detail")
    detail.default_value, detail.min_value, detail.max_value = 1, 1, 4
    _new_socket(group, "INPUT", "NodeSocketMaterial", "Material")
    _new_socket(group, "OUTPUT", "NodeSocketGeometry", "Geometry")

    nodes, links = group.nodes, group.links
    gin, gout = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    gin.location, gout.location = (-900, 0), (700, 0)

    ico = nodes.new("GeometryNodeMeshIcoSphere")
    ico.location = (-500, -250)
    ico.inputs["Radius"].default_value = 1.0
    links.new(_output(gin, "Detail"), ico.inputs["Subdivisions"])

    scale_attr = _named_attribute(nodes, "scale", "FLOAT_VECTOR", (-700, -450))
    scaled = nodes.new("ShaderNodeVectorMath")
    scaled.operation = "SCALE"
    scaled.location = (-500, -450)
    links.new(scale_attr, scaled.inputs[0])
    links.new(_output(gin, "Splat Size"), scaled.inputs["Scale"])

    # Cycles does not resolve an Attribute node named "color" (a reserved name there), so the
    # shading copy is stored under SHADING_COLOR; the data keeps the plain "color" attribute.
    store = nodes.new("GeometryNodeStoreNamedAttribute")
    store.data_type, store.domain, store.location = "FLOAT_COLOR", "POINT", (-500, 150)
    store.inputs["Name"].default_value = SHADING_COLOR
    links.new(_output(gin, "Geometry"), store.inputs["Geometry"])
    links.new(_named_attribute(nodes, "color", "FLOAT_COLOR", (-700, 200)), _input(store, "Value"))

    inst = nodes.new("GeometryNodeInstanceOnPoints")
    inst.location = (-200, 0)
    links.new(store.outputs["Geometry"], inst.inputs["Points"])
    links.new(ico.outputs["Mesh"], inst.inputs["Instance"])
    links.new(_output(scaled, "Vector"), inst.inputs["Scale"])

    rotation = _named_attribute(nodes, "rotation_euler", "FLOAT_VECTOR", (-700, -650))
    if inst.inputs["Rotation"].type == "ROTATION" and hasattr(bpy.types, "FunctionNodeEulerToRotation"):
        to_rot = nodes.new("FunctionNodeEulerToRotation")
        to_rot.location = (-450, -650)
        links.new(rotation, to_rot.inputs[0])
        rotation = to_rot.outputs[0]
    links.new(rotation, inst.inputs["Rotation"])

    # Realised geometry carries the point attributes (color, opacity) onto every
    # splat vertex, which the material's Attribute node reads in any engine.
    realize = nodes.new("GeometryNodeRealizeInstances")
    realize.location = (100, 0)
    links.new(inst.outputs["Instances"], realize.inputs["Geometry"])

    set_mat = nodes.new("GeometryNodeSetMaterial")
    set_mat.location = (400, 0)
    links.new(realize.outputs["Geometry"], set_mat.inputs["Geometry"])
    links.new(_output(gin, "Material"), set_mat.inputs["Material"])
    links.new(set_mat.outputs["Geometry"], gout.inputs["Geometry"])
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


def add_splat_modifier(obj, material):
    """Attach the display modifier; returns it, or None when this Blender cannot build it."""
    try:
        group = splat_node_group()
    except (KeyError, RuntimeError, AttributeError, TypeError) as exc:
        print("TRELLIS: splat display unavailable on this Blender (%s); showing points only" % exc)
        return None
    mod = obj.modifiers.new("TRELLIS Splats", "NODES")
    mod.node_group = group
    ident = _input_identifier(group, "Material")
    if ident:
        mod[ident] = material
    return mod


def splat_material(name="TRELLIS Splat"):
    """Emission coloured by the splat colour, faded by ``opacity`` (splats carry radiance, not albedo)."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    out.location = (500, 0)
    color = nodes.new("ShaderNodeAttribute")
    color.attribute_name, color.location = SHADING_COLOR, (-400, 100)
    opacity = nodes.new("ShaderNodeAttribute")
    opacity.attribute_name, opacity.location = "opacity", (-400, -150)
    emission = nodes.new("ShaderNodeEmission")
    emission.location = (-100, 50)
    links.new(color.outputs["Color"], emission.inputs["Color"])
    transparent = nodes.new("ShaderNodeBsdfTransparent")
    transparent.location = (-100, -100)
    mix = nodes.new("ShaderNodeMixShader")
    mix.location = (200, 0)
    links.new(opacity.outputs["Fac"], mix.inputs["Fac"])
    links.new(transparent.outputs[0], mix.inputs[1])
    links.new(emission.outputs[0], mix.inputs[2])
    links.new(mix.outputs[0], out.inputs["Surface"])
    if hasattr(mat, "surface_render_method"):  # 4.2+ EEVEE
        mat.surface_render_method = "DITHERED"
    elif hasattr(mat, "blend_method"):
        mat.blend_method = "HASHED"
    return mat
