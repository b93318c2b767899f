"""Drive the add-on in a real interactive Blender window (under Xvfb) and take screenshots.

    xvfb-run -a -s "-screen 0 1600x1000x24" blender -P blender_tests/gui_session.py -- \
        --model MODEL --python BACKEND_PYTHON --out DIR

This is the one path the bpy module cannot exercise: Generate returns at once,
``bpy.app.timers`` applies the events while the UI keeps running. A heartbeat
timer records the longest gap between UI ticks during the job (a frozen UI
would show it), the N-panel is screenshotted mid-job and after the import,
and ``gui_result.json`` in DIR says what happened.
"""

import json
import os
import sys
import tempfile
import time

import bpy

HERE = os.path.dirname(os.path.realpath(__file__))
ROOT = os.path.dirname(HERE)


def parse():
    import argparse

    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompt", default="a red wooden chair")
    ap.add_argument("--steps", type=int, default=30, help="enough steps to catch the job mid-way")
    ap.add_argument("--stall-timeout", type=float, default=240,
                    help="give up when no progress event came for this long (a hung job, not a slow machine)")
    ap.add_argument("--timeout", type=float, default=1500, help="give up after this long in any case")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds between the import and the last screenshot (EEVEE compiles its shaders first)")
    ap.add_argument("--separate", action="store_true", help="move the splats beside the mesh (for pictures)")
    return ap.parse_args(argv)


ARGS = parse()
OUT = os.path.abspath(ARGS.out)
os.makedirs(OUT, exist_ok=True)
STATE = {"ticks": [], "shots": [], "t0": None, "saw_running": False, "result": {}, "progress": None,
         "progress_at": None, "finished": False}


def view3d():
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                return window, area
    return None, None


def enable_addon():
    import addon_utils

    bpy.context.preferences.use_preferences_save = False  # never write this session into the user's prefs
    link_dir = tempfile.mkdtemp(prefix="trellis-addon-")
    os.symlink(os.path.join(ROOT, "addon"), os.path.join(link_dir, "trellis_blender"))
    sys.path.insert(0, link_dir)
    addon_utils.enable("trellis_blender", default_set=True, handle_error=None)
    prefs = bpy.context.preferences.addons["trellis_blender"].preferences
    prefs.python_path, prefs.model_dir, prefs.device = ARGS.python, os.path.abspath(ARGS.model), "cpu"
    prefs.output_dir = os.path.join(OUT, "files")


def show_panel():
    """Open the sidebar on the TRELLIS tab (Blender < 4.? cannot switch tabs from Python: show it in 'Tool')."""
    window, area = view3d()
    area.spaces.active.show_region_ui = True
    region = next(r for r in area.regions if r.type == "UI")
    try:
        region.active_panel_category = "TRELLIS"
    except (TypeError, AttributeError):
        panel = getattr(bpy.types, "VIEW3D_PT_trellis")
        bpy.utils.unregister_class(panel)
        panel.bl_category = "Tool"
        panel.bl_order = -1
        bpy.utils.register_class(panel)
    area.tag_redraw()


def screenshot(name):
    window, area = view3d()
    path = os.path.join(OUT, name + ".png")
    with bpy.context.temp_override(window=window, area=area):
        bpy.ops.screen.screenshot(filepath=path)
    STATE["shots"].append(path)


def heartbeat():
    STATE["ticks"].append((time.time(), bpy.context.window_manager.trellis_status.state))
    return 0.05


def jobs_module():
    return sys.modules["trellis_blender.jobs"]


def finish(extra):
    ticks = STATE["ticks"]
    gaps = [(b[0] - a[0], a[1]) for a, b in zip(ticks, ticks[1:])]
    running = [g for g, state in gaps if state in ("STARTING", "RUNNING")]
    st = bpy.context.window_manager.trellis_status
    STATE["result"].update(extra, state=st.state, error_type=st.error_type, error=st.error_message,
                           objects=st.last_objects.split(";") if st.last_objects else [],
                           max_ui_gap_while_running_s=round(max(running), 3) if running else None,
                           max_ui_gap_s=round(max(g for g, _ in gaps), 3) if gaps else None, ticks=len(ticks),
                           saw_running=STATE["saw_running"], shots=STATE["shots"],
                           blender=bpy.app.version_string, controller_stats=jobs_module().controller().stats)
    with open(os.path.join(OUT, "gui_result.json"), "w") as fh:
        json.dump(STATE["result"], fh, indent=1)
    bpy.ops.wm.quit_blender()


def on_job_finished(job, objects):
    """The controller's own completion callback (main thread, after the import): no polling deadline."""
    STATE["finished"] = True

    def done():
        window, area = view3d()
        region = next(r for r in area.regions if r.type == "WINDOW")
        try:
            with bpy.context.temp_override(window=window, area=area, region=region):
                bpy.ops.view3d.view_selected()
        except RuntimeError as exc:
            print("view_selected failed:", exc)
        area.spaces.active.shading.type = "MATERIAL"  # EEVEE: the splats show as Gaussians
        if ARGS.separate and len(objects) == 2:
            objects[1].location.x += 1.1
            with bpy.context.temp_override(window=window, area=area, region=region):
                bpy.ops.view3d.view_all()
        bpy.app.timers.register(lambda: screenshot("panel_done"), first_interval=ARGS.settle)
        bpy.app.timers.register(lambda: finish({}), first_interval=ARGS.settle + 1.5)

    bpy.app.timers.register(done, first_interval=0.5)


def watch():
    """Screenshot the panel mid-job; give up only when the job stalls (no new progress) or runs absurdly long."""
    if STATE["finished"]:
        return None
    st = bpy.context.window_manager.trellis_status
    now = time.time()
    progress = (st.state, st.stage, st.step)
    if progress != STATE["progress"]:
        STATE["progress"], STATE["progress_at"] = progress, now
    if st.state == "RUNNING" and st.stage in ("sparse_structure", "slat") and not STATE["saw_running"] \
            and st.step >= 2:
        STATE["saw_running"] = True
        bpy.app.timers.register(lambda: screenshot("panel_running"), first_interval=0.3)
    stalled = now - STATE["progress_at"] > ARGS.stall_timeout
    if stalled or now - STATE["t0"] > ARGS.timeout:
        jobs_module().controller().cancel()
        finish({"timeout": "no progress for %.0f s" % ARGS.stall_timeout if stalled else
                "over %.0f s" % ARGS.timeout, "last_progress": list(progress)})
        return None
    return 0.1


def start():
    for obj in list(bpy.data.objects):  # the default cube/camera/light
        bpy.data.objects.remove(obj)
    enable_addon()
    show_panel()
    s = bpy.context.scene.trellis
    s.prompt, s.seed = ARGS.prompt, 1
    s.custom_sampling, s.ss_steps, s.slat_steps = True, ARGS.steps, ARGS.steps
    window, area = view3d()
    jobs_module().controller().on_finish.append(on_job_finished)
    STATE["t0"] = STATE["progress_at"] = time.time()
    with bpy.context.temp_override(window=window, area=area):
        ret = bpy.ops.trellis.generate()  # interactive: returns at once
    STATE["result"]["returned_after_s"] = round(time.time() - STATE["t0"], 3)
    STATE["result"]["operator"] = sorted(ret)
    bpy.app.timers.register(heartbeat)
    bpy.app.timers.register(watch, first_interval=0.1)


bpy.app.timers.register(start, first_interval=1.0)
