"""`--data synth-on:DIR`: synthetic words drawn onto an ICDAR folder's photos, clear of their
labelled words, with the photo's own labels kept."""
import json

import cv2
import numpy as np
import pytest

from export.train.synth_on_real import SynthOnRealDataset, add_words, labelled_area, split_prefix
from train_folders import icdar_folder, mask_folder

WORD = np.float32([[100, 100], [220, 100], [220, 140], [100, 140]])
DONT_CARE = np.float32([[20, 20], [60, 20], [60, 40], [20, 40]])


def _photo():
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur(rng.integers(90, 170, (360, 480, 3), dtype=np.uint8), (0, 0), 3)


def test_words_are_added_clear_of_the_labelled_ones_and_the_labels_kept():
    photo = _photo()
    before = photo.copy()
    image, polys, ignore = add_words(np.random.default_rng(1), photo, [WORD, DONT_CARE], [False, True])
    assert np.array_equal(photo, before)                     # the caller's photo is not drawn on
    assert image.shape == photo.shape and not np.array_equal(image, photo)
    assert polys[0] is WORD and polys[1] is DONT_CARE and ignore[:2] == [False, True]
    added = polys[2:]
    assert added and not any(ignore[2:])                     # new words are cared for
    keep_clear = labelled_area(photo.shape, [WORD, DONT_CARE])
    for poly in added:
        ink = np.zeros(photo.shape[:2], np.uint8)
        cv2.fillPoly(ink, [np.round(poly).astype(np.int32)], 1)
        assert not (keep_clear & (ink > 0)).any()
        assert 3 <= cv2.minAreaRect(poly)[1][1] or 3 <= cv2.minAreaRect(poly)[1][0]


def test_samples_are_reproducible_and_have_text_targets(tmp_path):
    folder = icdar_folder(tmp_path / "icdar")
    ds = SynthOnRealDataset(folder, 4, crop=64, seed=3)
    a, b = ds[1], ds[1]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert set(a) == {"image", "gt", "mask", "thresh_mask", "thresh_map"} and a["image"].shape == (64, 64, 3)


def test_the_prefix_is_read_and_kept_through_the_saved_config(tmp_path, monkeypatch):
    from export.train.config import TrainConfig
    from export.train.data import open_source

    assert split_prefix("synth-on:a/b") == ("synth-on:", "a/b") and split_prefix("a/b") == ("", "a/b")
    folder = icdar_folder(tmp_path / "icdar")
    assert isinstance(open_source(f"synth-on:{folder}", 2, 64, 0), SynthOnRealDataset)
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(out_dir="run", data=["icdar=0.7", "synth-on:icdar=0.3"]).with_absolute_paths()
    assert cfg.data == [f"{folder}=0.7", f"synth-on:{folder}=0.3"]
    assert json.loads(json.dumps(cfg.data)) == cfg.data


def test_a_mask_folder_or_a_missing_one_is_one_error_naming_the_flag(tmp_path, capsys):
    pytest.importorskip("torch")
    from pipeline.cli import main

    masks = mask_folder(tmp_path / "masks")
    for bad in (f"synth-on:{masks}", f"synth-on:{tmp_path / 'missing'}"):
        assert main(["train", "--out", str(tmp_path / "x"), "--data", bad, "--steps", "1",
                     "--workers", "0"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--data" in err[0]
