"""User-facing error types.

Every error a user can act on carries a `hint` saying what to do; the server
sends `type`, `message` and `hint` to the add-on, the CLI prints them.
"""


class TrellisError(Exception):
    """Base class for errors that are the user's to fix (bad input, missing files)."""

    hint = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, "message": str(self), "hint": self.hint}


class MissingFileError(TrellisError, FileNotFoundError):
    hint = "Check the model folder path; it must contain pipeline.json and ckpts/<name>.json + .safetensors."


class UnknownModelClassError(TrellisError):
    hint = "The checkpoint json names a class this backend does not know; check the 'name' field."


class CheckpointMismatchError(TrellisError):
    hint = "The weights do not fit the configuration in the json file; use the json that came with the weights."


class BadInputError(TrellisError, ValueError):
    hint = "Check the input image or prompt."


class OutOfMemoryError(TrellisError):
    hint = ("The GPU ran out of memory. Close other GPU programs, lower the number of sampling steps, "
            "or choose the CPU device in the add-on preferences (slower).")


class Cancelled(TrellisError):
    hint = "The job was cancelled; nothing was written."


CPU_OUT_OF_MEMORY_HINT = ("The computer ran out of memory (RAM). Close other programs, generate fewer output kinds "
                          "(e.g. --formats glb), lower the number of sampling steps, or use a GPU.")


def is_out_of_memory(exc: BaseException) -> bool:
    """The one out-of-memory test (pipeline, server, CLI): MemoryError, torch's OutOfMemoryError (recognised by
    name, so this module never imports torch), ours, and runtime errors whose message says so."""
    if isinstance(exc, (MemoryError, OutOfMemoryError)) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def out_of_memory_error(exc: BaseException, on_gpu: bool | None = None) -> OutOfMemoryError:
    """The user's error for an out-of-memory `exc`: which memory ran out (GPU unless `on_gpu` is False or the
    message does not point at CUDA), the first line of the original message, and advice."""
    if isinstance(exc, OutOfMemoryError):
        return exc
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    if on_gpu is None:
        on_gpu = "cuda" in first.lower() or type(exc).__name__ == "OutOfMemoryError"
    if on_gpu:
        return OutOfMemoryError(f"the GPU ran out of memory: {first}")
    return OutOfMemoryError(f"the computer ran out of memory: {first}", hint=CPU_OUT_OF_MEMORY_HINT)
