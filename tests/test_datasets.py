"""Dataset readers (pipeline.datasets): ICDAR 2015 folders, Total-Text files, realdev JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import DbrtError
from pipeline.datasets import (
    DatasetError, GroundTruth, open_dataset, parse_icdar_gt, parse_icdar_line, parse_totaltext_gt,
    read_gt_file)

ICDAR_GT = ("\ufeff377,117,463,117,465,130,378,130,Genaxis Theatre\r\n"
            "493,115,519,115,519,131,493,131,[06]\r\n"
            "374,155,409,155,409,170,374,170,###\r\n"
            "492,151,551,151,551,170,492,170,62,03\r\n"
            "10,10,20,10,20,20,10,20,2008\r\n")

TOTALTEXT_GT = (
    "x: [[115 503 494 115]], y: [[322 346 426 404]], ornt: [u'h'], transcriptions: [u'nauGHTY']\n"
    "x: [[734 1058 1061 744]], y: [[360 369 449 430]], ornt: [u'#'], transcriptions: [u'#']\n"
    "x: [[10 20 30 40 50 50 40 30 20 10]], y: [[5 0 0 0 5 15 10 10\n 10 15]], ornt: [u'c'],"
    " transcriptions: [u\"don't\"]\n")


def test_icdar_lines_bom_crlf_commas_in_text_and_numeric_text():
    gt = parse_icdar_gt(ICDAR_GT)
    assert len(gt) == 5
    assert gt.texts == ("Genaxis Theatre", "[06]", "###", "62,03", "2008")
    assert gt.ignore.tolist() == [False, False, True, False, False]
    assert gt.care_count == 4
    np.testing.assert_array_equal(gt.polygons[0], [[377, 117], [463, 117], [465, 130], [378, 130]])
    assert all(p.dtype == np.float32 and p.shape == (4, 2) for p in gt.polygons)


def test_mhliao_variable_length_lines():
    points, text = parse_icdar_line("0,0,10,0,20,5,10,10,0,10,word", n_coords=None)
    assert points.shape == (5, 2) and text == "word"
    points, text = parse_icdar_line("0,0,10,0,10,10,0,10,2008", n_coords=None)  # numeric text
    assert points.shape == (4, 2) and text == "2008"


@pytest.mark.parametrize("line", ["1,2,3,word", "a,b,c,d,e,f,g,h,text", ""])
def test_bad_icdar_lines_raise(line):
    with pytest.raises(DatasetError):
        parse_icdar_line(line)


def test_totaltext_records_including_wrapped_lines():
    gt = parse_totaltext_gt(TOTALTEXT_GT)
    assert len(gt) == 3
    assert gt.ignore.tolist() == [False, True, False]
    assert gt.texts[2] == "don't"
    assert gt.polygons[2].shape == (10, 2)
    np.testing.assert_array_equal(gt.polygons[0][:, 0], [115, 503, 494, 115])
    with pytest.raises(DatasetError):
        parse_totaltext_gt("not a total-text file")


def test_ground_truth_checks_lengths():
    with pytest.raises(DatasetError):
        GroundTruth((np.zeros((4, 2)),), [False, True])
    assert issubclass(DatasetError, DbrtError)


def write_icdar_folder(root, n=3, layout="flat"):
    cv2 = pytest.importorskip("cv2")
    images = root / ("ch4_test_images" if layout == "split" else "")
    gts = root / ("Challenge4_Test_Task1_GT" if layout == "split" else "")
    images.mkdir(parents=True, exist_ok=True)
    gts.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        cv2.imwrite(str(images / f"img_{i}.jpg"), np.full((20, 30, 3), i, np.uint8))
        name = f"gt_img_{i}.txt" if layout != "mhliao" else f"img_{i}.jpg.txt"
        (gts / name).write_text(ICDAR_GT, encoding="utf-8")
    return root


@pytest.mark.parametrize("layout", ["flat", "split", "mhliao"])
def test_icdar_folder_layouts(tmp_path, layout):
    root = write_icdar_folder(tmp_path / "ic15", n=11, layout=layout)
    ds = open_dataset(root)
    assert len(ds) == 11 and ds.format == "icdar2015"
    assert [s.name for s in ds][:3] == ["img_1.jpg", "img_2.jpg", "img_3.jpg"]  # natural order
    assert ds[9].name == "img_10.jpg"
    assert ds.polygon_count == 55
    image = ds[1].read_image()
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8 and image[0, 0, 0] == 2
    assert len(ds.head(2)) == 2 and len(ds.head(None)) == 11


def test_totaltext_folder(tmp_path):
    cv2 = pytest.importorskip("cv2")
    (tmp_path / "Images").mkdir()
    (tmp_path / "Groundtruth").mkdir()
    cv2.imwrite(str(tmp_path / "Images" / "img11.jpg"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "Groundtruth" / "poly_gt_img11.txt").write_text(TOTALTEXT_GT)
    ds = open_dataset(tmp_path)
    assert ds.format == "totaltext" and len(ds[0].gt) == 3


def test_missing_ground_truth_is_one_clear_error(tmp_path):
    root = write_icdar_folder(tmp_path, n=2)
    (root / "gt_img_2.txt").unlink()
    with pytest.raises(DatasetError, match="1 image.*img_2.jpg"):
        open_dataset(root)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nope", "not found"),
    (lambda p: (p / "x.txt").write_text("") * 0 or p / "x.txt", "is a file"),
    (lambda p: p, "no images"),
])
def test_bad_dataset_paths(tmp_path, make, message):
    with pytest.raises(DatasetError, match=message):
        open_dataset(make(tmp_path))


def test_json_dataset(tmp_path):
    cv2 = pytest.importorskip("cv2")
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    records = [{"image": "a.jpg", "polygons": [[[0, 0], [4, 0], [4, 4], [0, 4]]], "ignore": [True]}]
    (tmp_path / "gt.json").write_text(json.dumps(records))
    ds = open_dataset(tmp_path)
    assert ds.format == "json" and ds[0].gt.ignore.tolist() == [True]
    (tmp_path / "gt.json").write_text(json.dumps([{"image": "missing.jpg", "polygons": []}]))
    with pytest.raises(DatasetError, match="missing.jpg"):
        open_dataset(tmp_path / "gt.json")
    (tmp_path / "gt.json").write_text("{broken")
    with pytest.raises(DatasetError):
        open_dataset(tmp_path)


def test_read_gt_file_reports_the_file(tmp_path):
    bad = tmp_path / "gt_img_1.txt"
    bad.write_text("1,2,3\n")
    with pytest.raises(DatasetError, match="gt_img_1.txt"):
        read_gt_file(bad)


def test_realdev(shared_data):
    ds = open_dataset(shared_data / "realdev")
    assert len(ds) == 13 and ds.polygon_count == 103
    assert sum(int(s.gt.ignore.sum()) for s in ds) == 65
    curved = [p for s in ds if s.name.startswith("totaltext") for p in s.gt.polygons]
    assert max(len(p) for p in curved) > 4
    assert ds[0].read_image().shape == (720, 1280, 3)


def test_a_polygon_of_fewer_than_three_points_is_named_not_silently_dropped(tmp_path):
    import json as _json

    import cv2

    from engine.errors import DbrtWarning
    from pipeline.datasets import open_dataset

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "gt.json").write_text(_json.dumps(
        [{"image": "a.png", "polygons": [[[0, 0], [4, 0], [4, 4], [0, 4]], [[1, 1], [2, 2]]],
          "ignore": [False, False]}]))
    with pytest.warns(DbrtWarning, match=r"a.png: polygon\(s\) \[1\] have fewer than 3 points"):
        open_dataset(tmp_path)


def test_a_coordinate_that_is_no_pixel_is_an_error_in_every_layout(tmp_path):
    """NaN / overflowing coordinates in a gt.json or a Total-Text file: one error naming the
    record, as ICDAR files name the line (one reader for training and evaluation)."""
    import cv2

    from dbnet.gt_json import GroundTruthError, read_gt_records

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "gt.json").write_text(
        '[{"image": "a.png", "polygons": [[[0, 0], [4, 0], [4, 4], [0, 4]], '
        '[[0, 0], [NaN, 0], [4, 4]]]}]')
    where = r"record 0 \(a.png\), polygon 1: coordinate nan is not a finite number"
    with pytest.raises(GroundTruthError, match=where):  # what training reads too
        read_gt_records(tmp_path / "gt.json")
    with pytest.raises(DatasetError, match=where):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="Total-Text record 3: coordinate 1e\\+40 is beyond 1,000,000 pixels"):
        parse_totaltext_gt(TOTALTEXT_GT.replace("[[10 20 30", "[[10 1e40 30"))
    assert len(parse_icdar_gt("-5,-5,2000,-5,2000,900,-5,900,word")) == 1  # a little outside: a word


@pytest.mark.parametrize("line, ignored", [
    ("10,10,100,10,100,40,10,40,###", True),
    ('10,10,100,10,100,40,10,40,"###"', True),     # the official reader unquotes
    ("10,10,100,10,100,40,10,40,#", False),        # a word in ICDAR 2015 files
    ("10,10,100,10,100,40,10,40, ###", False),     # the official compares the exact text
    ("10,10,100,10,100,40,10,40,a,###", False),
])
def test_do_not_care_is_exactly_what_the_official_icdar_2015_script_says(line, ignored):
    """Checked against the RRC's script.py for task 4.1 and MhLiao/DB's iou.py: "#", " ###"
    and a quoted "###" were read otherwise than the official evaluation reads them."""
    assert list(parse_icdar_gt(line + "\r\n", n_coords=8).ignore) == [ignored]


def test_a_ground_truth_file_without_its_image_is_named_not_silently_dropped(tmp_path):
    import warnings

    from engine.errors import DbrtWarning

    root = write_icdar_folder(tmp_path / "ic15", n=2)
    (root / "img_2.jpg").unlink()  # an image not copied: its words would leave the recall unsaid
    with pytest.warns(DbrtWarning, match=r"1 ground-truth file\(s\) have no image.*gt_img_2.txt"):
        assert len(open_dataset(root)) == 1
    (root / "gt_img_2.txt").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(open_dataset(root)) == 1


def test_a_ground_truth_file_that_is_not_utf8_is_read_and_said(tmp_path):
    """A Latin-1 file was read with 'café' turned into 'caf\ufffd' without a word: with --e2e
    that word can never count as read right."""
    import warnings

    from engine.errors import DbrtWarning

    path = tmp_path / "gt_img_1.txt"
    path.write_bytes("1,1,9,1,9,9,1,9,café\n".encode("latin-1"))
    with pytest.warns(DbrtWarning, match=r"gt_img_1.txt is not UTF-8 .*save it as UTF-8"):
        gt = read_gt_file(path)
    assert gt.texts == ("caf\ufffd",)
    path.write_bytes("\ufeff1,1,9,1,9,9,1,9,café\n".encode("utf-8"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # UTF-8, with or without a BOM: no warning
        assert read_gt_file(path).texts == ("café",)


def test_two_images_sharing_one_ground_truth_file_are_one_error_naming_both(tmp_path):
    """img_1.jpg and img_1.png both found gt_img_1.txt: its words were scored twice."""
    cv2 = pytest.importorskip("cv2")
    root = write_icdar_folder(tmp_path / "ic15", n=2)
    cv2.imwrite(str(root / "img_1.png"), np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"^img_1.jpg and img_1.png in .* both take their ground "
                                           r"truth from .*gt_img_1.txt: keep the annotated one"):
        open_dataset(root)
    (root / "gt_img_1.txt").rename(root / "img_1.jpg.txt")  # each its own: both are scored
    (root / "img_1.png.txt").write_text(ICDAR_GT, encoding="utf-8")
    assert [s.name for s in open_dataset(root)] == ["img_1.jpg", "img_1.png", "img_2.jpg"]


def test_an_image_listed_twice_in_gt_json_is_one_error(tmp_path):
    """Two records for one image (annotation files merged) scored its words twice."""
    cv2 = pytest.importorskip("cv2")
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "b.jpg"), np.zeros((8, 8, 3), np.uint8))
    box = [[[0, 0], [4, 0], [4, 4], [0, 4]]]
    records = [{"image": name, "polygons": box} for name in ("a.jpg", "b.jpg", "a.jpg")]
    (tmp_path / "gt.json").write_text(json.dumps(records))
    with pytest.raises(DatasetError, match=r"gt.json: records 0 and 2 are both for image a.jpg"):
        open_dataset(tmp_path)


def test_a_dataset_given_as_dot_or_a_bare_gt_json_is_named_after_its_folder(tmp_path, monkeypatch):
    """`dbrt eval --dataset gt.json` (or `.`) printed ' (json, 1 images): ...' and 'best on  (...)':
    the name of '.' is empty."""
    cv2 = pytest.importorskip("cv2")
    root = write_icdar_folder(tmp_path / "ic15", n=1)
    monkeypatch.chdir(root)
    assert open_dataset(".").name == "ic15"
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "gt.json").write_text(json.dumps([{"image": "a.jpg", "polygons": []}]))
    monkeypatch.chdir(tmp_path)
    assert open_dataset("gt.json").name == tmp_path.name
    monkeypatch.chdir(root)
    assert open_dataset("../gt.json").name == tmp_path.name
