"""Generation pipeline: conditioning, rectified-flow samplers, stages, exports.

`TrellisPipeline` is imported lazily so that `import trellis_backend.pipeline.samplers`
(or the server's protocol code) does not pull in every model at import time.
"""

__all__ = ["TrellisPipeline", "PIPELINE_VERSION"]


def __getattr__(name):
    if name in ("TrellisPipeline", "PIPELINE_VERSION"):
        from . import pipeline as _p

        return getattr(_p, name)
    raise AttributeError(name)
