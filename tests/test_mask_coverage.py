"""benchmarks.mask_coverage: words found and boxes on text of mask-labelled photos."""
import json

import numpy as np
import pytest

from benchmarks import mask_coverage as mc
from tests.train_folders import mask_folder


def _rect(x0, y0, x1, y1):
    return np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


@pytest.fixture
def two_words():
    mask = np.zeros((100, 200), bool)
    mask[20:30, 10:60] = True  # word A
    mask[60:70, 100:180] = True  # word B
    mask[90:93, 5:8] = True  # 9 px: under MIN_PIXELS, not a word
    return mask


def test_a_word_is_found_when_half_its_kernel_is_boxed(two_words):
    got = mc.coverage(two_words, [_rect(5, 15, 65, 35), _rect(100, 55, 130, 75)])
    # B's box covers 30 of its 80 columns: not found, but the box holds text
    assert got == {"words": 2, "words_found": 1, "boxes": 2, "boxes_on_text": 2}
    halves = mc.coverage(two_words, [_rect(100, 55, 140, 75), _rect(140, 55, 185, 75)])
    assert halves["words_found"] == 1  # letters boxed apart count for their word together


def test_a_box_on_background_or_far_above_the_text_scale_finds_nothing(two_words):
    got = mc.coverage(two_words, [_rect(150, 5, 195, 40)])
    assert got == {"words": 2, "words_found": 0, "boxes": 1, "boxes_on_text": 0}
    # one box over the whole image (short side 99 > 3 x 10 + 8) holds both words but is no detection of them
    assert mc.coverage(two_words, [_rect(0, 0, 199, 99)]) == {"words": 2, "words_found": 0, "boxes": 1,
                                                             "boxes_on_text": 0}
    assert mc.coverage(two_words, [])["boxes"] == 0


def test_a_line_box_over_two_words_finds_both():
    mask = np.zeros((100, 200), bool)
    mask[20:30, 10:60] = mask[20:30, 80:120] = True
    got = mc.coverage(mask, [_rect(5, 12, 125, 38)])  # short side 26 <= 3 x 10 + 8
    assert got == {"words": 2, "words_found": 2, "boxes": 1, "boxes_on_text": 1}


def test_summary_is_the_harmonic_mean_of_the_two_shares():
    s = mc.summarise([{"words": 4, "words_found": 3, "boxes": 2, "boxes_on_text": 1},
                      {"words": 0, "words_found": 0, "boxes": 2, "boxes_on_text": 2}])
    assert (s["recall"], s["precision"]) == (0.75, 0.75) and s["hmean"] == 0.75
    assert mc.summarise([])["hmean"] == 0.0


def test_the_shipped_model_on_a_mask_folder_writes_its_report(tmp_path, monkeypatch):
    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path / "results"))
    folder = mask_folder(tmp_path / "signs", n=2)
    argv = [str(folder), "--model", f"my model={mc.SHIPPED}", "--no-rapidocr", "--threads", "1", "--name", "mc"]
    assert mc.main(argv, log=lambda *_: None) == 0
    report = json.loads((tmp_path / "results" / "mc.json").read_text())
    row = report["detectors"]["my model"]
    assert "--model 'my model=" in report["command"]  # as a shell needs it
    assert report["photos"] == 2 and row["words"] == 2 and len(row["per_image"]) == 2
    assert 0 <= row["boxes_on_text"] <= row["boxes"]
    assert "| my model | 2 |" in (tmp_path / "results" / "mc.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["{missing}"], "no such folder"),
    (["{folder}", "--model", "x.onnx"], "want NAME=MODEL.onnx"),
    (["{folder}", "--model", "a={missing}"], "no such file"),
])
def test_bad_arguments_fail_with_one_line(tmp_path, capsys, argv, message):
    folder = mask_folder(tmp_path / "signs", n=1)
    argv = [a.format(folder=folder, missing=tmp_path / "nope") for a in argv]
    with pytest.raises(SystemExit) as exc:
        mc.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_a_mask_without_its_photo_is_one_line(tmp_path):
    folder = mask_folder(tmp_path / "signs", n=1)
    (folder / "img_0.jpg").unlink()
    lines = []
    assert mc.main([str(folder), "--no-rapidocr"], log=lines.append) == 2
    assert len(lines) == 1 and "has no photo" in lines[0]


def test_an_unreadable_mask_is_one_line(tmp_path):
    folder = mask_folder(tmp_path / "signs", n=1)
    (folder / "img_0_mask.png").write_bytes(b"not a png")
    lines = []
    assert mc.main([str(folder), "--no-rapidocr"], log=lines.append) == 2
    assert len(lines) == 2 and lines[1].startswith("mask_coverage: cannot read") and "img_0_mask.png" in lines[1]
