"""The core result type, the model spec and CPU preprocessing."""
import json

import numpy as np
import pytest

from engine.errors import ModelError, ShapeError
from dbnet.spec import ModelSpec, preset
from pipeline.detections import Detections, FrameResult
from dbnet.spec import target_size
from pipeline.preprocess import make_letterbox, preprocess
from pipeline.sources import Frame


def _dets():
    quads = np.array([[[0, 0], [10, 0], [10, 5], [0, 5]], [[20, 20], [30, 20], [30, 28], [20, 28]],
                      [[1, 1], [4, 1], [4, 4], [1, 4]]], np.float32)
    return Detections.from_quads(quads, [0.9, 0.5, 0.7], data={"text": np.array(["a", "b", "c"])})


def test_detections_validate_and_slice():
    d = _dets()
    assert len(d) == 3 and d.is_quads
    kept = d[d.scores > 0.6]
    assert len(kept) == 2 and list(kept.data["text"]) == ["a", "c"]
    np.testing.assert_allclose(kept.scores, [0.9, 0.7])
    assert len(d[1:]) == 2 and len(d[0]) == 1
    np.testing.assert_allclose(d.boxes_xyxy[1], [20, 20, 30, 28])
    with pytest.raises(ValueError):
        Detections((np.zeros((4, 2)),), [0.1, 0.2])
    with pytest.raises(ValueError):
        Detections((np.full((4, 2), np.nan),), [0.1])
    with pytest.raises(IndexError):
        d[np.array([True, False])]


def _result(dets):
    return FrameResult(Frame(np.zeros((40, 50, 3), np.uint8), 3, 0.12, "cam0"), dets)


def test_frame_result_json_takes_frame_facts_from_the_frame():
    d = _dets()
    line = _result(d).to_json()
    record = json.loads(line)
    assert record["frame_index"] == 3 and record["timestamp"] == pytest.approx(0.12)
    assert record["source"] == "cam0" and record["frame_size"] == [40, 50]
    back = Detections.from_json(line)
    assert len(back) == 3 and list(back.data["text"]) == ["a", "b", "c"]
    for a, b in zip(d.polygons, back.polygons):
        np.testing.assert_allclose(a, b, atol=0.01)
    assert json.loads(_result(Detections.empty()).to_json())["detections"] == []
    poly = Detections((np.array([[0, 0], [5, 0], [6, 3], [5, 6], [0, 6]]),), [0.8])
    assert not poly.is_quads and len(Detections.from_json(_result(poly).to_json()).polygons[0]) == 5
    frame, dets = _result(d)  # unpacks like the pipeline's (frame, detections) pairs
    assert frame.index == 3 and dets is d


def test_modelspec_round_trip_and_presets():
    spec = ModelSpec(arch="dbnet_resnet18").replace(thresh=0.25)
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert ModelSpec.from_metadata({"dbrt": spec.to_json()}) == spec
    assert ModelSpec.from_metadata({}) is None
    assert preset("mmocr").color == "RGB"
    with pytest.raises(ModelError):
        preset("nope")
    with pytest.raises(ModelError):
        ModelSpec(color="XYZ")


@pytest.mark.parametrize("h,w,limit,kind,expected", [
    (720, 1280, 736, "min", (736, 1312)),
    (506, 960, 736, "min", (736, 1408)),
    (506, 960, 960, "max", (512, 960)),
    (100, 100, 960, "max", (96, 96)),
    (10, 10, 960, "max", (32, 32)),
])
def test_target_size(h, w, limit, kind, expected):
    assert target_size(h, w, limit, kind) == expected


def test_preprocess_normalises_like_db():
    spec = ModelSpec()
    frame = np.full((50, 70, 3), 200, np.uint8)
    chw, box = preprocess(frame, spec, size=(64, 96))
    assert chw.shape == (3, 64, 96) and chw.dtype == np.float32
    np.testing.assert_allclose(chw[:, 10, 10], (200 - np.array(spec.mean)) / 255, atol=1e-5)
    assert (box.frame_h, box.frame_w, box.content_h, box.content_w) == (50, 70, 64, 96)
    with pytest.raises(ShapeError):
        preprocess(frame, spec, size=(60, 96))
    with pytest.raises(ShapeError):
        preprocess(frame[..., 0], spec)


def test_letterbox_keeps_aspect_and_pads():
    box = make_letterbox(100, 200, 64, 64, keep_aspect=True)
    assert (box.content_h, box.content_w) == (32, 64)
    frame = np.zeros((100, 200, 3), np.uint8)
    chw, _ = preprocess(frame, ModelSpec(), size=(64, 64), keep_aspect=True)
    assert np.all(chw[:, 40:, :] == 0)


def test_detections_compare_by_value_and_refuse_float_indices():
    a, b = _dets(), _dets()
    assert a == b and a in [b] and Detections.empty() == Detections.empty()
    assert a != a[:2] and a != b[np.array([2, 1, 0])]
    with pytest.raises(TypeError):
        hash(a)
    with pytest.raises(IndexError, match="columns are in .data"):
        a[a.scores]
    assert len(a[a.scores > 0.6]) == 2


def test_records_json_sees_a_column_added_after_it_was_cached():
    d = _dets()
    first = d.records_json()
    d.data["extra"] = np.array([1, 2, 3])
    assert '"extra":1' in d.records_json() and '"extra"' not in first


def test_numpy_scalars_are_valid_settings():
    spec = ModelSpec().replace(box_thresh=np.float32(0.5), max_candidates=np.int64(500),
                               unclip_ratio=np.float64(1.5))
    assert (spec.post.box_thresh, spec.post.max_candidates, spec.post.unclip_ratio) == (0.5, 500, 1.5)


def test_a_spec_with_a_dict_for_resize_is_refused_at_once():
    with pytest.raises(ModelError, match="resize must be a Resize"):
        ModelSpec().replace(resize={"limit_side": 640})


def test_the_json_follows_values_changed_in_place():
    """The cached JSON was keyed by the columns' ids: polygons or a column changed in place
    after a sink had encoded the frame were written with their old values."""
    dets = Detections.from_quads(np.float32([[[1, 2], [9, 2], [9, 6], [1, 6]]]), [0.9],
                                 {"track_id": np.array([0])})
    first = dets.records_json()
    for poly in dets.polygons:
        poly *= 2
    dets.data["track_id"] += 100
    again = json.loads(dets.records_json())
    assert again == dets.to_records() and again[0]["polygon"][0] == [2.0, 4.0]
    assert again[0]["track_id"] == 100 and dets.records_json() != first


def test_json_round_trips_nan_and_multi_value_columns_and_checks_late_columns():
    """A NaN came back as None in an object column (comparisons raised); a NaN in an (n, 2)
    column raised in to_json; a column added later as a list, or too short, broke or
    misaligned silently."""
    dets = Detections.from_quads(np.zeros((2, 4, 2), np.float32) + [[0, 0], [4, 0], [4, 4], [0, 4]],
                                 [0.9, 0.8], {"text_score": np.float32([0.7, np.nan]),
                                              "velocity": np.float32([[1, 2], [np.nan, 3]])})
    line = json.loads(FrameResult(Frame(np.zeros((8, 8, 3), np.uint8), 0, 0.0, "x"), dets).to_json())
    assert line["detections"][1]["velocity"] == [None, 3.0]
    back = Detections.from_records(line["detections"])
    assert back.data["text_score"].dtype.kind == "f" and np.isnan(back.data["text_score"][1])
    assert len(back[back.data["text_score"] > 0.5]) == 1
    dets.data["label"] = ["sign", "plate"]  # a plain list, added after construction
    assert [r["label"] for r in dets.to_records()] == ["sign", "plate"]
    assert dets[np.array([False, True])].data["label"].tolist() == ["plate"]
    dets.data["short"] = np.array([1])
    with pytest.raises(ValueError, match=r"data\['short'\] has length \(1,\), expected 2"):
        dets.to_records()


def test_a_column_of_python_objects_is_never_served_stale():
    tags = np.empty(1, object)
    tags[0] = ["a"]
    dets = Detections.from_quads(np.zeros((1, 4, 2), np.float32) + [[0, 0], [4, 0], [4, 4], [0, 4]],
                                 [0.9], {"tags": tags})
    dets.records_json()
    tags[0].append("z")
    assert json.loads(dets.records_json())[0]["tags"] == ["a", "z"]


def test_a_column_of_texts_and_nones_is_encoded_once_and_follows_changes():
    """track_text holds None for a track not read yet (an object column): the frame's JSON is
    still encoded once for all its sinks, and a text replaced in place is seen."""
    texts = np.array([None, "EXIT"], dtype=object)
    dets = Detections.from_quads(np.zeros((2, 4, 2), np.float32) + [[0, 0], [4, 0], [4, 4], [0, 4]],
                                 [0.9, 0.8], {"track_text": texts})
    first = dets.records_json()
    assert dets.records_json() is first
    assert [r["track_text"] for r in json.loads(first)] == [None, "EXIT"]
    texts[0] = "OPEN"
    assert [r["track_text"] for r in json.loads(dets.records_json())] == ["OPEN", "EXIT"]


def test_a_single_bool_is_no_index_and_out_of_range_indices_are_named():
    d = _dets()
    for flag in (True, False, np.True_):  # True is 1 to Python: d[True] took the second one
        with pytest.raises(IndexError, match="boolean mask"):
            d[flag]
    assert d[-1] == d[2] and len(d[np.zeros(3, bool)]) == 0 and len(Detections.empty()[[]]) == 0
    for index in (3, -4, [0, 5], np.array([-7])):
        with pytest.raises(IndexError, match="out of range for 3 detections"):
            d[index]
    with pytest.raises(IndexError, match="out of range for 0 detections"):
        Detections.empty()[0]


def test_a_selection_has_its_own_points_like_its_scores_and_columns():
    d = _dets()
    for chosen in (d[0], d[:2], d[d.scores > 0.6], d[[0, 0]]):
        chosen.polygons[0][:] += 100  # e.g. moving a crop's boxes into its frame
        chosen.scores[0] = 0
    assert d == _dets()


def test_frames_and_results_can_be_compared_and_looked_up():
    """Frame == Frame compared the pixel arrays field by field and raised 'the truth value of
    an array ... is ambiguous', as did `result in results` and FrameResult ==."""
    a, b = (Frame(np.zeros((40, 50, 3), np.uint8), 3, 0.12, "cam0") for _ in range(2))
    assert a == a and a != b and a in [b, a] and [b, a].index(a) == 1 and {a: 1}[a] == 1
    result = FrameResult(a, _dets())
    assert result == FrameResult(a, _dets()) and result != FrameResult(b, _dets())
    assert result in [FrameResult(b, _dets()), result]


def test_data_may_be_none_and_anything_but_a_mapping_is_named():
    """Detections(polygons, scores, None) failed with "'NoneType' object has no attribute
    'items'" (from_quads took None), a list of pairs likewise."""
    d = _dets()
    assert Detections(d.polygons, d.scores, None) == Detections(d.polygons, d.scores)
    with pytest.raises(TypeError, match="data must be a dict of per-instance columns"):
        Detections(d.polygons, d.scores, [("text", ["a", "b", "c"])])


def test_a_column_null_on_every_detection_comes_back_as_nones_or_nans_by_its_kind():
    """A frame whose tracks had no voted text yet wrote track_text null on every detection:
    read back, it was a float column of NaN, where the tracker gives None (a string column)."""
    quads = np.zeros((2, 4, 2), np.float32) + [[0, 0], [4, 0], [4, 4], [0, 4]]
    dets = Detections.from_quads(quads, [0.9, 0.8], {
        "track_text": np.array([None, None], dtype=object),
        "track_text_score": np.float32([np.nan, np.nan])})
    frame = Frame(np.zeros((8, 8, 3), np.uint8), 0, 0.0, "x")
    back = Detections.from_json(FrameResult(frame, dets).to_json())
    assert back.data["track_text"].tolist() == [None, None]
    assert back.data["track_text_score"].dtype.kind == "f"
    assert np.isnan(back.data["track_text_score"]).all()
