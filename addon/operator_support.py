"""What the TRELLIS operators share: how they run (wait or not) and how they report.

Interactive Blender: a job returns at once and a timer applies its events.
Background mode (``blender -b``, the bpy module): it blocks until the job is
done, so scripts can simply call the operator.
"""

import bpy

from . import jobs
from .core import protocol as P

RUN_MODES = [
    ("AUTO", "Auto", "Block in background mode, run in the background otherwise"),
    ("SYNC", "Wait", "Block until the job is done"),
    ("ASYNC", "Don't wait", "Return at once; a timer imports the result"),
]


def should_wait(run_mode):
    return bpy.app.background if run_mode == "AUTO" else run_mode == "SYNC"


def reject(operator, context, message, hint):
    """Refuse a request before any job starts: the panel shows why, the operator reports it."""
    jobs.controller().reject(context, message, hint)
    operator.report({"ERROR"}, message)
    return {"CANCELLED"}


def report_failure(operator, job, status):
    """Report a job that ended cancelled or failed (the panel already shows the status)."""
    operator.report({"WARNING"} if job.state == P.CANCELLED else {"ERROR"},
                    "TRELLIS: %s: %s %s" % (status.error_type or job.error_type,
                                            status.error_message or job.error_message,
                                            status.error_hint or job.error_hint or ""))
    return {"CANCELLED"}
