"""Unclip geometry against the reference's own library: area and perimeter bit for bit as shapely."""
import cv2
import numpy as np
import pyclipper
import pytest

from pipeline.postprocess.geometry import (_corner_formula, _corners, box_points, expand_quads,
                                            offset_polygon, rect_array, ring_areas_lengths,
                                            unclip_distances)

shapely = pytest.importorskip("shapely", reason="shapely (a dev dependency) is the reference here")

TINY = 9.18e-17
# minAreaRect corners of an axis-aligned 3x3 box: cos(90 deg) leaves +-9.18e-17 in x. A plain
# shoelace sum gives 8.999999999999993 here, so D = 1.4999999 and pyclipper rounds the other way.
QUAD = np.array([[TINY, 67.0], [3.0, 67.0], [3.0, 70.0], [-TINY, 70.0]])


def _shapely(poly):
    polygon = shapely.Polygon(np.asarray(poly, np.float64).reshape(-1, 2))
    return polygon.area, polygon.length


def test_the_near_square_quad_has_area_9_and_distance_1_5(postprocess_path):
    area, length = ring_areas_lengths(QUAD[None])
    assert area[0] == 9.0 and length[0] == 12.0
    assert unclip_distances(QUAD[None], 2.0)[0] == 1.5
    assert unclip_distances([QUAD], 2.0)[0] == 1.5  # the ragged (polygon mode) form too
    expected = pyclipper.PyclipperOffset()
    expected.AddPath(QUAD, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    (ours,) = offset_polygon(QUAD, unclip_distances(QUAD[None], 2.0)[0])
    assert ours == expected.Execute(1.5)[0]


def test_expand_quads_uses_the_reference_distance():
    ((box,),) = [expand_quads(QUAD[None], unclip_distances(QUAD[None], 2.0), 0)]
    expanded = np.asarray(offset_polygon(QUAD, 1.5)[0]).reshape(-1, 1, 2)
    np.testing.assert_array_equal(np.sort(box, axis=0),
                                  np.sort(cv2.boxPoints(cv2.minAreaRect(expanded)), axis=0))


def _random_quads(rng, n):
    centres = rng.uniform(0, 2000, (n, 2))
    sizes = rng.uniform(0.5, 300, (n, 2))
    angles = rng.choice([0.0, 90.0, -90.0, 45.0], n) + rng.choice([0, 0, 1], n) * rng.uniform(-90, 90, n)
    return np.stack([cv2.boxPoints(((float(cx), float(cy)), (float(w), float(h)), float(a)))
                     for (cx, cy), (w, h), a in zip(centres, sizes, angles)])


def _random_polygons(rng, n):
    polys = []
    for _ in range(n):
        k = int(rng.integers(3, 40))
        angle = np.sort(rng.uniform(0, 2 * np.pi, k))
        radius = rng.uniform(1, 200, k)
        centre = rng.uniform(-50, 3000, 2)
        points = centre + np.stack([np.cos(angle), np.sin(angle)], 1) * radius[:, None]
        polys.append(np.round(points).astype(np.int32) if rng.random() < 0.5 else points)
    return polys


def test_quads_match_shapely_bit_for_bit(postprocess_path):
    quads = _random_quads(np.random.default_rng(0), 3000)
    area, length = ring_areas_lengths(quads)
    expected = np.array([_shapely(q) for q in quads])
    np.testing.assert_array_equal(area, expected[:, 0])
    np.testing.assert_array_equal(length, expected[:, 1])
    reference = expected[:, 0] * 1.5 / expected[:, 1]
    np.testing.assert_array_equal(unclip_distances(quads, 1.5), reference)


def test_ragged_polygons_match_shapely_bit_for_bit(postprocess_path):
    polys = _random_polygons(np.random.default_rng(1), 1500)
    area, length = ring_areas_lengths(polys)
    expected = np.array([_shapely(p) for p in polys])
    np.testing.assert_array_equal(area, expected[:, 0])
    np.testing.assert_array_equal(length, expected[:, 1])
    np.testing.assert_array_equal(unclip_distances(polys, 2.0), expected[:, 0] * 2.0 / expected[:, 1])


def test_degenerate_and_empty_inputs(postprocess_path):
    assert unclip_distances(np.zeros((0, 4, 2)), 1.5).shape == (0,)
    assert unclip_distances([], 1.5).shape == (0,)
    assert unclip_distances(np.zeros((1, 4, 2)), 1.5)[0] == 0.0


def test_box_points_match_opencv_bit_for_bit():
    rng = np.random.default_rng(2)
    rects = [cv2.minAreaRect(rng.normal(500, 200, (int(rng.integers(1, 30)), 2)).astype(np.float32))
             for _ in range(3000)]
    rects += [((float(x), float(y)), (float(w), float(h)), float(a)) for x, y, w, h, a in
              zip(*rng.uniform(-10, 3000, (2, 3000)), *rng.uniform(0, 500, (2, 3000)),
                  rng.choice([90.0, -90.0, 0.0, 45.0], 3000) + rng.uniform(-180, 180, 3000)
                  * rng.integers(0, 2, 3000))]
    rects = [((float(r[0]), float(r[1])), (float(r[2]), float(r[3])), float(r[4]))
             for r in rect_array(rects)]  # float32 values, as minAreaRect returns them
    expected = np.stack([cv2.boxPoints(r) for r in rects])
    assert _corner_formula() is not None  # this OpenCV's arithmetic is known: vectorised
    for part in (rects, rects[:5], rects[:1], []):  # vectorised, and one call per rectangle
        np.testing.assert_array_equal(box_points(part).view(np.int32),
                                      expected[:len(part)].reshape(-1, 4, 2).view(np.int32))


def test_opencv4_corners_mirror_the_first_two_through_the_centre():
    array = rect_array([((10.5, 20.25), (7.0, 3.5), 30.0), ((0.1, 3.3), (1.0, 9.0), 90.0)])
    four, five = _corners(array, opencv5=False), _corners(array, opencv5=True)
    np.testing.assert_array_equal(four[:, :2], five[:, :2])
    np.testing.assert_array_equal(four[:, 2:], np.float32(2) * array[:, None, :2] - four[:, :2])
