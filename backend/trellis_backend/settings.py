"""The runtime's ``TRELLIS_*`` environment variables, read in this one place, once.

Every switch of the installed runtime (`trellis_backend` and `trellis_kernels`) is a field of
the frozen `Settings`, filled from the environment the first time `current()` is called and
kept for the life of the process; runtime code reads `current().<field>`, never `os.environ`.
This module imports only the standard library, so every layer (the kernels included) may use it.

=================================  ===========  ==========================================================
Variable                           Default      Meaning
=================================  ===========  ==========================================================
``TRELLIS_ACCEL``                  ``1``        ``0``: a CUDA pipeline runs the plain PyTorch path (no
                                                `trellis_backend.accel` fast path)
``TRELLIS_ACCEL_GRAPHS``           ``all``      CUDA graphs of a half-precision pipeline's flow models:
                                                ``all`` (both stages), ``dense`` (stage 1 only), ``none``
``TRELLIS_ACCEL_UNIFORM_CONTEXT``  ``1``        ``0``: the fused cross-attention attends over a uniform
                                                context (e.g. the zero negative condition) instead of
                                                taking its value row
``TRELLIS_ACCEL_GELU_EPILOGUE``    ``1``        ``0``: the fused MLP never uses cuBLASLt's GELU epilogue
``TRELLIS_CONV_BACKEND``           ``auto``     sparse conv backend: ``auto``, ``torch`` or ``spconv``
                                                (`trellis_backend.sparse.conv`)
``TRELLIS_KERNELS``                ``1``        ``0``: `trellis_kernels` ops run their PyTorch references
                                                and the fast path registers no Triton kernel
``TRELLIS_KERNELS_AUTOTUNE``       ``1``        ``0``: the Triton conv and attention use fixed block
                                                configs instead of timing candidates
``TRELLIS_KERNELS_DETERMINISTIC``  ``0``        ``1``: the Triton conv never splits K (bitwise
                                                reproducible; the pipeline asks for this anyway)
``TRELLIS_KERNELS_TUNED``          (none)       a tuned-config table (JSON) read before the GPU's own
                                                table in ``trellis_kernels/tuned``
``TRELLIS_MODELS_ROOT``            (none)       where ``<org>/<repo>/ckpts/<name>`` model references of a
                                                pipeline.json are looked for (after ``--models-root``)
``TRELLIS_DINOV2_CHECKPOINT``      (none)       the DINOv2 checkpoint file, looked at before the model
                                                folder, the models root and the torch hub cache
=================================  ===========  ==========================================================

Booleans accept ``1/0``, ``true/false``, ``yes/no``, ``on/off``; an empty variable counts as
unset. A value outside these sets is refused with a `BadInputError` naming the variable.
Tests change settings with ``with settings.override(accel_graphs="none"): ...``.
Benchmark and training scripts (the lab) read their own variables; the add-on's
``TRELLIS_BLENDER_DATA_DIR`` belongs to the add-on.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from typing import Iterator, Mapping, Optional

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
GRAPH_MODES = ("none", "dense", "all")
CONV_BACKENDS = ("auto", "torch", "spconv")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The runtime switches (see the module docstring for the variable behind each field)."""

    accel: bool = True
    accel_graphs: str = "all"
    accel_uniform_context: bool = True
    accel_gelu_epilogue: bool = True
    conv_backend: str = "auto"
    kernels: bool = True
    kernels_autotune: bool = True
    kernels_deterministic: bool = False
    kernels_tuned: Optional[str] = None
    models_root: Optional[str] = None
    dinov2_checkpoint: Optional[str] = None

    def __post_init__(self) -> None:
        if self.accel_graphs not in GRAPH_MODES:
            _refuse("TRELLIS_ACCEL_GRAPHS", self.accel_graphs, GRAPH_MODES)
        if self.conv_backend not in CONV_BACKENDS:
            _refuse("TRELLIS_CONV_BACKEND", self.conv_backend, CONV_BACKENDS)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        """Settings from `environ` (unset or empty variables keep the defaults)."""
        def text(name: str) -> Optional[str]:
            value = environ.get(name, "").strip()
            return value or None

        def flag(name: str, default: bool) -> bool:
            value = text(name)
            if value is None:
                return default
            if value.lower() in _TRUE:
                return True
            if value.lower() in _FALSE:
                return False
            _refuse(name, value, ("1", "0"))

        return cls(
            accel=flag("TRELLIS_ACCEL", True),
            accel_graphs=(text("TRELLIS_ACCEL_GRAPHS") or "all").lower(),
            accel_uniform_context=flag("TRELLIS_ACCEL_UNIFORM_CONTEXT", True),
            accel_gelu_epilogue=flag("TRELLIS_ACCEL_GELU_EPILOGUE", True),
            conv_backend=(text("TRELLIS_CONV_BACKEND") or "auto").lower(),
            kernels=flag("TRELLIS_KERNELS", True),
            kernels_autotune=flag("TRELLIS_KERNELS_AUTOTUNE", True),
            kernels_deterministic=flag("TRELLIS_KERNELS_DETERMINISTIC", False),
            kernels_tuned=text("TRELLIS_KERNELS_TUNED"),
            models_root=text("TRELLIS_MODELS_ROOT"),
            dinov2_checkpoint=text("TRELLIS_DINOV2_CHECKPOINT"),
        )


def _refuse(name: str, value: str, allowed) -> None:
    from .errors import BadInputError

    raise BadInputError(f"environment variable {name}={value!r} is not one of {', '.join(allowed)}",
                        hint=f"Set {name} to one of {', '.join(allowed)}, or unset it for the default.")


_lock = threading.Lock()
_current: Optional[Settings] = None


def current() -> Settings:
    """The process's settings: read from the environment on the first call, then kept."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = Settings.from_environ()
    return _current


@contextlib.contextmanager
def override(**changes) -> Iterator[Settings]:
    """Run a block with some fields changed (tests); the previous settings come back afterwards."""
    global _current
    previous = current()
    _current = dataclasses.replace(previous, **changes)
    try:
        yield _current
    finally:
        _current = previous


def reset() -> None:
    """Forget the settings read so far: the next `current()` reads the environment again (tests)."""
    global _current
    _current = None
