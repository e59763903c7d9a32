"""Misses and false alarms sorted by kind (pipeline.eval_errors) on hand-made cases."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.evaluate import EvalResult, evaluate_image, prepare_truth, score_image


def rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def kinds(gts, dets, ignore=None):
    res = evaluate_image(gts, ignore or [False] * len(gts), dets)
    return res.miss_kinds, res.false_alarm_kinds


def test_one_box_over_two_words_is_two_merged_misses_and_a_several_words_false_alarm():
    assert kinds([rect(0, 0, 40, 20), rect(60, 0, 100, 20)], [rect(0, 0, 100, 20)]) == (
        ("merged", "merged"), ("several_words",))


def test_the_word_left_out_of_a_line_box_that_matched_its_neighbour_is_merged():
    # the box matches the first word (IoU 0.7); the second lies inside it, a fifth of its area
    assert kinds([rect(0, 0, 70, 20), rect(75, 0, 100, 20)], [rect(0, 0, 100, 20)]) == (("merged",), ())


def test_a_word_boxed_in_two_halves_is_split_and_each_half_is_on_the_word():
    assert kinds([rect(0, 0, 100, 20)], [rect(0, 0, 50, 20), rect(50, 0, 100, 20)]) == (
        ("split",), ("on_word", "on_word"))


@pytest.mark.parametrize("det", [
    rect(60, 0, 100, 20),   # holds 0.4 of the word
    rect(30, 0, 130, 20),   # holds 0.7 of it but is no larger: shifted, IoU 0.54 -> matched
    rect(45, 0, 145, 20),   # holds 0.55, shifted further: IoU 0.38
])
def test_one_box_holding_part_of_a_word_is_partial(det):
    res = evaluate_image([rect(0, 0, 100, 20)], [False], [det])
    if res.matched:
        assert res.miss_kinds == () and res.false_alarm_kinds == ()
    else:
        assert (res.miss_kinds, res.false_alarm_kinds) == (("partial",), ("on_word",))


def test_nothing_near_a_word_is_not_found_and_a_box_far_away_is_background():
    assert kinds([rect(0, 0, 100, 20)], []) == (("not_found",), ())
    assert kinds([rect(0, 0, 100, 20)], [rect(200, 200, 260, 220), rect(97, 0, 140, 20)]) == (
        ("not_found",), ("background", "background"))  # the second: 3 of its 43 px on the word


def test_a_box_reaching_into_do_not_care_text_is_a_dont_care_false_alarm():
    # 20 of its 70 px of width lie on the "###" region: not enough to be ignored
    res = evaluate_image([rect(0, 0, 100, 20)], [True], [rect(80, 0, 150, 20)])
    assert res.det_dont_care == () and res.false_alarm_kinds == ("dont_care",)
    assert res.miss_kinds == ()


def test_counts_summary_and_json_sum_over_images():
    a = evaluate_image([rect(0, 0, 40, 20), rect(60, 0, 100, 20)], [False, False], [rect(0, 0, 100, 20)])
    b = evaluate_image([rect(0, 0, 100, 20)], [False], [rect(300, 0, 340, 20)])
    total = EvalResult((a, b))
    assert total.error_counts() == {
        "missed": {"merged": 2, "split": 0, "partial": 0, "not_found": 1},
        "false_alarms": {"several_words": 1, "on_word": 0, "dont_care": 0, "background": 1}}
    assert total.errors_summary() == ("missed 3: 2 in a larger box, 1 not found; "
                                      "false alarms 2: 1 over several words, 1 on background")
    d = json.loads(json.dumps(total.to_dict()))
    assert d["errors"] == total.error_counts()
    assert d["per_image"][0]["missed_kinds"] == ["merged", "merged"]
    assert d["per_image"][1]["false_alarm_kinds"] == ["background"]
    perfect = EvalResult((evaluate_image([rect(0, 0, 10, 10)], [False], [rect(0, 0, 10, 10)]),))
    assert perfect.errors_summary() == "missed 0; false alarms 0"


def test_scoring_without_explaining_leaves_the_kinds_out():
    truth = prepare_truth([rect(0, 0, 100, 20)], [False])
    quick = score_image(truth, [rect(0, 0, 30, 20)], explain=False)
    full = score_image(truth, [rect(0, 0, 30, 20)])
    assert quick.missed == full.missed == (0,) and quick.false_alarms == full.false_alarms == (0,)
    assert quick.miss_kinds is None and full.miss_kinds == ("partial",)
    result = EvalResult((quick,))
    assert result.error_counts() is None and result.errors_summary() is None
    assert "errors" not in result.to_dict() and "missed_kinds" not in result.to_dict()["per_image"][0]
