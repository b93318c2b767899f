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
