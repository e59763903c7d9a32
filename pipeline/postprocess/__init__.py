"""DB post-processing: probability maps -> text polygons, reference-exact on CPU and GPU.

    from pipeline.postprocess import DBPostprocessor, PostprocessConfig
    post = DBPostprocessor(PostprocessConfig.from_spec(spec))
    detections = post(prob, letterboxes, metas)   # one Detections per map

CuPy is imported only when a CuPy map is processed.
"""
from .config import BOX_TYPES, SCORE_MODES, PostprocessConfig, PostprocessError
from .postprocessor import DBPostprocessor

__all__ = ["DBPostprocessor", "PostprocessConfig", "PostprocessError", "BOX_TYPES", "SCORE_MODES"]
