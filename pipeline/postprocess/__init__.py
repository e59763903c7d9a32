"""DB post-processing: probability maps -> text polygons, box for box the reference
(PaddleOCR `DBPostProcess`, MhLiao `SegDetectorRepresenter`), on the CPU or the GPU.

    from pipeline.postprocess import DBPostprocessor, PostprocessConfig
    post = DBPostprocessor(spec.post)
    detections = post(prob, letterboxes)   # one Detections per map

- cpu.py: NumPy / OpenCV, the reference's steps with the per-contour Python work vectorised;
- compiled.py: the steps done in C where the optional extension is built (_steps.c: bitmap, ring
  sums, arc lengths, rectangle corners; _fill.c: fillPoly + mean scores), each with the NumPy /
  OpenCV fallback giving the same results;
- gpu.py: CuPy maps stay on the GPU: threshold / dilation there and one bit-packed copy of the
  bitmaps, contours and geometry on the host as cpu.py, the score crops gathered in one copy;
  the same array code runs with NumPy for the tests;
- geometry.py: the host steps both share (rectangle corners and order, unclip, frame mapping).

Quirks kept on purpose: hole contours are candidates, truncation at max_candidates keeps the
bottom-most contours, pyclipper truncates to integers, the "fast" score uses OpenCV's fillPoly
rule, output coordinates are rounded to whole frame pixels. One deliberate difference: in
polygon mode score_mode="slow" scores the filled contour (PaddleOCR ignores score_mode there).
CuPy is imported only when a CuPy map is processed.
"""
from dbnet.postprocess_config import BOX_TYPES, SCORE_MODES, PostprocessConfig, PostprocessError
from .postprocessor import DBPostprocessor

__all__ = ["DBPostprocessor", "PostprocessConfig", "PostprocessError", "BOX_TYPES", "SCORE_MODES"]
