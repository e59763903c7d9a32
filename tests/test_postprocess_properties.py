"""Property tests: arbitrary maps never crash the post-processing; NaN gives one clear error."""
import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="hypothesis (dev extra) generates the maps")
pytest.importorskip("shapely", reason="shapely (dev extra) is the reference's geometry library")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

from pipeline.postprocess import DBPostprocessor, PostprocessConfig, PostprocessError, cpu, gpu  # noqa: E402
from pipeline.preprocess import make_letterbox  # noqa: E402

from reference_db import ReferenceDB  # noqa: E402

finite = st.floats(-2.0, 3.0, width=32)
maps = st.tuples(st.integers(1, 24), st.integers(1, 24)).flatmap(
    lambda hw: arrays(np.float32, hw, elements=st.one_of(finite, st.sampled_from([0.0, 0.31, 1.0]))))
configs = st.builds(PostprocessConfig, thresh=st.sampled_from([0.0, 0.3, 0.99]),
                    box_thresh=st.sampled_from([0.0, 0.5]), max_candidates=st.integers(1, 30),
                    unclip_ratio=st.sampled_from([0.0, 1.5, 4.0]), min_size=st.integers(1, 4),
                    use_dilation=st.booleans(), score_mode=st.sampled_from(["fast", "slow"]),
                    box_type=st.sampled_from(["quad", "poly"]))
fast = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _run(prob, config):
    h, w = prob.shape
    return DBPostprocessor(config)(prob[None, None], [make_letterbox(2 * h, 3 * w, h, w)])[0]


@fast
@given(prob=maps, config=configs)
def test_arbitrary_maps_never_crash_and_stay_in_the_frame(prob, config):
    det = _run(prob, config)
    h, w = prob.shape
    for poly in det.polygons:
        assert (poly >= 0).all() and (poly[:, 0] <= 3 * w).all() and (poly[:, 1] <= 2 * h).all()
    assert np.all(det.scores >= config.box_thresh - 1e-6) or config.box_thresh == 0
    twin = gpu.postprocess_batch(prob[None].copy(), [prob.shape], config)[0]
    assert len(twin[0]) == len(cpu.postprocess_map(prob, config)[0])


@fast
@given(prob=maps.filter(lambda p: p.size > 1), config=configs)
def test_arbitrary_maps_match_the_reference(prob, config):
    prob = np.clip(prob, 0, 1)
    ref = ReferenceDB(**{k: v for k, v in config.to_dict().items()})
    ref_boxes, ref_scores = ref(prob)
    h, w = prob.shape
    det = DBPostprocessor(config)(prob[None], [make_letterbox(h, w, h, w)])[0]
    assert len(det) == len(ref_boxes)
    for ours, theirs in zip(det.polygons, ref_boxes):
        assert np.array_equal(ours, theirs)
    np.testing.assert_allclose(det.scores, np.float32(ref_scores), atol=1e-5)


@given(value=st.sampled_from([np.nan, np.inf, -np.inf]), y=st.integers(0, 7), x=st.integers(0, 9))
@settings(max_examples=20, deadline=None)
def test_non_finite_values_raise_one_clear_error(value, y, x):
    prob = np.zeros((8, 10), np.float32)
    prob[y, x] = value
    with pytest.raises(PostprocessError, match="NaN or infinite"):
        _run(prob, PostprocessConfig())


@pytest.mark.parametrize("shape, value", [((1, 1), 1.0), ((1, 1), 0.0), ((1, 500), 1.0),
                                          ((300, 1), 1.0), ((64, 64), 1.0), ((64, 64), 0.0)])
def test_degenerate_maps(shape, value):
    prob = np.full(shape, value, np.float32)
    for box_type in ("quad", "poly"):
        det = _run(prob, PostprocessConfig(box_type=box_type))
        big = min(shape) > 3 and value > 0.3
        assert len(det) == (1 if big else 0)


@pytest.mark.slow
def test_a_huge_all_ones_map_gives_one_frame_sized_box():
    prob = np.ones((2048, 3072), np.float32)
    det = _run(prob, PostprocessConfig())
    assert len(det) == 1
    x0, y0, x1, y1 = det.boxes_xyxy[0]
    assert (x0, y0) == (0, 0) and (x1, y1) == (3 * 3072, 2 * 2048)
