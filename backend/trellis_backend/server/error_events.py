"""Turn any exception from a job into the (type, message, hint) a user sees.

TrellisError subclasses already carry a hint; out-of-memory errors from torch
are recognised by `errors.is_out_of_memory` (torch is never imported here) and get advice;
anything else is reported as an internal error with its traceback attached
as ``detail`` for the log, never as the headline.
"""

import traceback

from ..errors import TrellisError, is_out_of_memory, out_of_memory_error

MISSING_DEPENDENCY_HINT = ("The backend's Python environment lacks a package. Run 'Set up backend' in the "
                           "TRELLIS add-on preferences, or pip install the backend requirements into the "
                           "interpreter the add-on is configured to use.")
INTERNAL_HINT = "This is a bug in the backend. The backend log (stderr) has the full traceback."


def describe_exception(exc):
    """Return dict(error_type, message, hint, detail) for an exception raised by a job."""
    if is_out_of_memory(exc):
        exc = out_of_memory_error(exc)
    if isinstance(exc, TrellisError):
        return {"error_type": type(exc).__name__, "message": str(exc), "hint": exc.hint, "detail": None}
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, ImportError):
        return {"error_type": "MissingDependency", "message": str(exc), "hint": MISSING_DEPENDENCY_HINT,
                "detail": detail}
    if isinstance(exc, FileNotFoundError):
        return {"error_type": "MissingFileError", "message": str(exc),
                "hint": "Check that the file exists and the path is spelled right.", "detail": detail}
    if isinstance(exc, OSError):  # permissions, a full disk, a folder where a file should be: the user's to fix
        return {"error_type": "FileSystemError", "message": "%s: %s" % (type(exc).__name__, exc),
                "hint": "Check that the output folder exists, is writable and has free space.", "detail": detail}
    return {"error_type": "InternalError", "message": "%s: %s" % (type(exc).__name__, exc),
            "hint": INTERNAL_HINT, "detail": detail}


def free_accelerator_memory():
    """Release cached GPU memory if torch is already loaded (never imports it)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # a broken CUDA context must not stop shutdown
            pass
