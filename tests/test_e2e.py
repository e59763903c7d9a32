"""End-to-end scoring: IoU matching as for detection, then equal transcriptions (stripped,
case folded); '###' ground truth ignored; detections without text dropped."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.datasets import open_dataset
from pipeline.detections import Detections
from pipeline.e2e import e2e_image

A = [[0, 0], [100, 0], [100, 30], [0, 30]]
B = [[0, 50], [100, 50], [100, 80], [0, 80]]
C = [[200, 0], [300, 0], [300, 30], [200, 30]]


def _read(polys, texts):
    return Detections.from_quads(np.float32(polys), np.ones(len(polys)),
                                 {"text": texts, "text_score": np.ones(len(polys))})


def test_a_match_needs_the_transcription_equal_up_to_case_and_surrounding_space():
    scored = e2e_image([A, B, C], [False, False, True], ["Exit", "CAFÉ", "###"],
                       _read([A, B, C], [" EXIT", "CAFE", "whatever"]))
    assert scored.correct == 1 and scored.wrong == (("CAFÉ", "CAFE"),)
    assert scored.detection.gt_care == 2 and scored.detection.det_care == 2  # C: don't care


def test_detections_without_text_are_dropped_before_matching():
    scored = e2e_image([A], [False], ["open"], _read([A, B], ["", "OPEN"]))
    assert scored.correct == 0 and scored.detection.det_care == 1  # B is read but misplaced


def test_detections_must_carry_texts():
    with pytest.raises(ValueError, match="texts"):
        e2e_image([A], [False], ["x"], Detections.from_quads(np.float32([A]), [1.0]))


def test_a_gt_json_takes_its_transcriptions_from_sources_json(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((90, 310, 3), np.uint8))
    (tmp_path / "gt.json").write_text(json.dumps(
        [{"image": "a.png", "polygons": [A, B], "ignore": [False, True]}]))
    (tmp_path / "SOURCES.json").write_text(json.dumps(
        [{"image": "a.png", "texts": ["Exit", "###"]}]))
    assert open_dataset(tmp_path)[0].gt.texts == ("Exit", "###")


def test_dbrt_eval_e2e_on_realdev(shared_data, capsys, tmp_path):
    pytest.importorskip("rapidocr", reason="the PP-OCR rec model comes with the rapidocr wheel")
    from pipeline.cli import main
    from pipeline.shipped import default_model_path

    assert main(["eval", "--dataset", str(shared_data / "realdev"), "--e2e", "--device", "cpu",
                 "--max-images", "2", "--quiet", "--json", str(tmp_path / "e2e.json")]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "end-to-end precision" in line and "6 ground truth" in line
    assert "ms/image incl. decoding the image file and reading" in line  # timed as plain eval is
    payload = json.loads((tmp_path / "e2e.json").read_text())  # described as the plain --json is
    assert payload["format"] == "json" and payload["model"] == str(default_model_path())
    assert payload["ms_per_image"] > 0
    assert payload["protocol"] == {"name": "icdar2015 end-to-end", "iou": 0.5, "area_precision": 0.5,
                                   "normalisation": "strip + casefold",
                                   "gt_may_drop_at_each_end": "!?.:,*\"()·[]/'"}


@pytest.mark.parametrize("truth, read, match", [
    ("Hotel", "HOTEL ", True), ("EXIT.", "EXIT", True), ("(Open)", "Open", True),
    ("don't", "DON'T", True), ("Blush!", "Blush", True), ("[06]", "06", True),
    ("EXIT", "EXIT.", False), ("a.b", "ab", False), ("Café", "Cafe", False), ("NEW YORK", "NEWYORK", False)])
def test_transcriptions_match_as_the_robust_reading_script_allows(truth, read, match):
    from pipeline.e2e import transcription_match

    assert transcription_match(truth, read) is match


def test_the_e2e_json_holds_the_per_image_numbers_it_prints():
    from pipeline.e2e import E2EResult

    first = e2e_image([A, B], [False, False], ["Exit", "Cafe"], _read([A, B], ["exit", "cafe!"]), "a")
    second = e2e_image([A], [False], ["open"], _read([A, C], ["open", "x"]), "b")
    out = E2EResult((first, second)).to_dict()
    assert [(im["image"], im["correct"], im["gt_care"], im["det_care"]) for im in out["per_image"]] \
        == [("a", 1, 2, 2), ("b", 1, 1, 2)]
    assert out["per_image"][0]["wrong"] == [{"gt": "Cafe", "read": "cafe!"}]
    assert sum(im["correct"] for im in out["per_image"]) == out["correct"]


def test_the_e2e_json_has_each_images_detections_and_readings_as_dbrt_run_writes_them():
    """As the detection scoring's --json does: a consumer sees what was read where, in the
    records of detections.jsonl (a box read as empty too: it is in the run's output)."""
    from pipeline.e2e import E2EResult

    found = _read([A, B], ["exit", ""])
    (image,) = E2EResult((e2e_image([A], [False], ["Exit"], found, "a"),)).to_dict()["per_image"]
    assert image["detections"] == found.to_records()
    assert [(d["text"], d["score"]) for d in image["detections"]] == [("exit", 1.0), ("", 1.0)]


def _two_images_with_sources(folder, texts_b):
    import cv2

    for name in ("a.png", "b.png"):
        cv2.imwrite(str(folder / name), np.zeros((90, 310, 3), np.uint8))
    (folder / "gt.json").write_text(json.dumps(
        [{"image": "a.png", "polygons": [A, B], "ignore": [False, True]},
         {"image": "b.png", "polygons": [A, C], "ignore": [False, False]}]))
    (folder / "SOURCES.json").write_text(json.dumps(
        [{"image": "a.png", "texts": ["Exit", "###"]}, {"image": "b.png", "texts": texts_b}]))


def test_transcriptions_that_do_not_fit_the_polygons_are_said_not_silently_dropped(tmp_path):
    """SOURCES.json texts whose count differs from gt.json's polygons left the image without
    transcriptions, and --e2e scored its words as never read right, without a word."""
    from engine.errors import DbrtWarning

    _two_images_with_sources(tmp_path, ["Open"])  # one text for two polygons
    with pytest.warns(DbrtWarning, match=r"SOURCES.json: b.png has 1 transcriptions for 2 polygons: "
                                         r"its transcriptions are left out"):
        dataset = open_dataset(tmp_path)
    assert dataset[0].gt.texts == ("Exit", "###") and dataset[1].gt.texts == ("", "")
    records = json.loads((tmp_path / "gt.json").read_text())
    records[1]["texts"] = ["Open", "Shut", "extra"]  # the gt.json's own texts: it is named
    (tmp_path / "gt.json").write_text(json.dumps(records))
    with pytest.warns(DbrtWarning, match=r"gt.json: b.png has 3 transcriptions for 2 polygons"):
        open_dataset(tmp_path)


def test_e2e_refuses_cared_for_words_without_transcriptions(tmp_path, capsys):
    import warnings

    from pipeline.cli import main

    _two_images_with_sources(tmp_path, ["Open"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["eval", "--dataset", str(tmp_path), "--e2e", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"--e2e: 1 image(s) of {tmp_path} have cared-for words without a "
                            "transcription (e.g. b.png: 2 of 2), which no reading can match: "
                            "transcribe them, or mark them '###'")
    assert len([line for line in err if "error" in line]) == 1
