"""Generation pipeline: conditioning, rectified-flow samplers, stages, exports.

`load_pipeline(folder, ...)` loads any model folder and returns the pipeline of its family:
`TrellisPipeline` (TRELLIS, the embedded model) or `Trellis2Pipeline` (TRELLIS.2). The pipeline classes
are imported lazily so that `import trellis_backend.pipeline.samplers` (or the server's protocol code)
does not pull in every model at import time.
"""

__all__ = ["TrellisPipeline", "Trellis2Pipeline", "PIPELINE_VERSION", "load_pipeline", "detect_family"]


def __getattr__(name):
    if name in ("TrellisPipeline", "PIPELINE_VERSION"):
        from . import pipeline as _p

        return getattr(_p, name)
    if name == "Trellis2Pipeline":
        from .trellis2 import Trellis2Pipeline

        return Trellis2Pipeline
    if name in ("load_pipeline", "detect_family"):
        from . import family as _f

        return getattr(_f, name)
    raise AttributeError(name)
