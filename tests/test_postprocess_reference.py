"""Differential tests: the CPU path against an independent copy of the reference.

Hundreds of random and adversarial maps (holes, border-touching components, more components
than max_candidates, dilation, fast / slow score, quad / poly): same keep / drop decisions, same
boxes, vertex for vertex, same scores.
"""
import itertools

import cv2
import numpy as np
import pytest

pytest.importorskip("shapely", reason="shapely (dev extra) is the reference's geometry library")

from pipeline.postprocess import DBPostprocessor, PostprocessConfig  # noqa: E402
from pipeline.preprocess import make_letterbox  # noqa: E402

from postprocess_maps import random_map  # noqa: E402
from reference_db import ReferenceDB  # noqa: E402

MODES = list(itertools.product([False, True], ["fast", "slow"], ["quad", "poly"]))


def _compare(prob, options, frame=None):
    h, w = prob.shape
    fh, fw = frame or (h, w)
    ref_boxes, ref_scores = ReferenceDB(**options)(prob, fw, fh)
    (det,) = DBPostprocessor(PostprocessConfig(**options), device="cpu")(
        prob[None], [make_letterbox(fh, fw, h, w)])
    assert len(det) == len(ref_boxes), options
    for ours, ref in zip(det.polygons, ref_boxes):
        assert ours.shape == ref.shape
        assert np.array_equal(ours, ref), options
    np.testing.assert_allclose(det.scores, np.asarray(ref_scores, np.float32), atol=1e-5)
    return len(det)


@pytest.mark.parametrize("dilation, score_mode, box_type", MODES)
def test_random_maps_match_the_reference(dilation, score_mode, box_type, postprocess_path):
    rng = np.random.default_rng(MODES.index((dilation, score_mode, box_type)))
    options = dict(use_dilation=dilation, score_mode=score_mode, box_type=box_type)
    found = 0
    for _ in range(40):
        h, w = int(rng.integers(16, 120)), int(rng.integers(16, 160))
        prob = random_map(rng, h, w, int(rng.integers(1, 30)))
        opts = dict(options, thresh=float(rng.choice([0.3, 0.3, 0.5])),
                    box_thresh=float(rng.choice([0.3, 0.5, 0.6, 0.7])),
                    unclip_ratio=float(rng.choice([1.5, 2.0])))
        found += _compare(prob, opts)
    assert found > 20  # the maps do produce boxes


@pytest.mark.parametrize("box_type", ["quad", "poly"])
def test_truncation_at_max_candidates_keeps_the_reference_order(box_type, postprocess_path):
    rng = np.random.default_rng(5)
    for max_candidates in (1, 3, 10, 25):
        prob = random_map(rng, 96, 128, 60, blur=False)
        _compare(prob, dict(max_candidates=max_candidates, box_thresh=0.3, box_type=box_type))


def test_holes_border_and_scaling_to_another_frame_size():
    prob = np.zeros((64, 96), np.float32)
    prob[4:40, 4:60] = 0.9
    prob[12:30, 14:50] = 0.0           # a ring: its hole is a candidate too
    prob[50:64, 70:96] = 0.8           # touches the bottom-right border
    prob[0:6, 80:96] = 0.95            # touches the top border
    prob[:, 0:2] = 0.7                 # a 2-px column along the left border
    for opts in (dict(box_thresh=0.0), dict(box_thresh=0.5), dict(score_mode="slow"),
                 dict(box_type="poly", box_thresh=0.0), dict(use_dilation=True)):
        assert _compare(prob, opts, frame=(720, 1280)) >= 2


def test_rotated_boxes_crossing_the_border(postprocess_path):
    rng = np.random.default_rng(11)
    for _ in range(30):
        prob = np.zeros((48, 64), np.float32)
        for _ in range(4):
            centre = (float(rng.choice([0, 63, rng.uniform(0, 63)])),
                      float(rng.choice([0, 47, rng.uniform(0, 47)])))
            corners = cv2.boxPoints((centre, (float(rng.uniform(5, 40)), float(rng.uniform(3, 12))),
                                     float(rng.uniform(-90, 90))))
            cv2.fillPoly(prob, [np.round(corners).astype(np.int32)], float(rng.uniform(0.4, 1)))
        _compare(prob, dict(box_thresh=0.4))
        _compare(prob, dict(box_thresh=0.4, unclip_ratio=3.0), frame=(100, 90))


def test_letterboxed_maps_use_only_the_content_region():
    """keep_aspect letterboxing: the padding (here full of junk text) must not count, and boxes
    scale by the letterbox's own factor."""
    from pipeline.preprocess import Letterbox

    rng = np.random.default_rng(21)
    for _ in range(10):
        prob = random_map(rng, 96, 128, 25)
        ch, cw = int(rng.integers(40, 96)), int(rng.integers(40, 128))
        box = Letterbox(ch * 2, cw * 2, 96, 128, 0.5, 0.5, ch, cw)
        (det,) = DBPostprocessor(device="cpu")(prob[None], [box])
        ref_boxes, ref_scores = ReferenceDB()(np.ascontiguousarray(prob[:ch, :cw]), cw * 2, ch * 2)
        assert len(det) == len(ref_boxes)
        for ours, ref in zip(det.polygons, ref_boxes):
            assert np.array_equal(ours, ref)
        np.testing.assert_allclose(det.scores, np.float32(ref_scores), atol=1e-5)
