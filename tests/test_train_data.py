"""DB training data: targets on hand-made polygons, losses, augmentation, the synthetic, ICDAR and
mask sources, their mix and the batches the model takes."""

import re

import cv2
import numpy as np
import pytest

from export.train.augment import AugmentConfig, augment, photometric
from export.train.data import SynthDataset, normalise, read_icdar_folder
from export.train.labels import THRESH_MAX, THRESH_MIN, make_targets, offset_distance
from train_folders import icdar_folder, mask_folder

RECT = np.float32([[20, 30], [120, 30], [120, 50], [20, 50]])  # 100 x 20


def test_offset_distance_is_the_paper_formula():
    # D = A (1 - r^2) / L = 2000 * 0.84 / 240
    assert offset_distance(RECT) == pytest.approx(7.0)


def test_shrink_map_of_a_rectangle():
    t = make_targets([RECT], [False], 80, 160)
    ys, xs = np.nonzero(t["gt"])
    # shrunk by 7 px on every side: x 27..113, y 37..43
    assert xs.min() == 27 and xs.max() == 113 and ys.min() == 37 and ys.max() == 43
    assert t["mask"].min() == 1.0


def test_threshold_map_peaks_on_the_border_and_stays_in_range():
    t = make_targets([RECT], [False], 80, 160)
    tm, tmask = t["thresh_map"], t["thresh_mask"]
    assert tm.min() >= THRESH_MIN - 1e-6 and tm.max() <= THRESH_MAX + 1e-6
    assert tm[30, 70] == pytest.approx(THRESH_MAX, abs=1e-3)       # on the top edge
    assert tm[40, 70] == pytest.approx(THRESH_MIN, abs=1e-3)       # centre: > D from any edge
    assert tm[5, 5] == pytest.approx(THRESH_MIN)                   # far away
    assert tmask[40, 70] == 1 and tmask[24, 70] == 1 and tmask[5, 5] == 0  # expanded by 7 px
    assert tm[33, 70] > tm[35, 70] > tm[36, 70]                    # decays inwards


def test_ignored_and_tiny_polygons_are_masked_not_targets():
    tiny = np.float32([[5, 5], [40, 5], [40, 9], [5, 9]])          # 4 px high < min size 8
    t = make_targets([RECT, tiny], [True, False], 80, 160)
    assert t["gt"].sum() == 0
    assert t["mask"][40, 70] == 0 and t["mask"][7, 20] == 0 and t["mask"][70, 150] == 1
    assert t["thresh_mask"].sum() == 0


def test_losses_prefer_the_right_answer():
    torch = pytest.importorskip("torch")
    from export.train.losses import balanced_bce, db_loss

    t = make_targets([RECT], [False], 80, 160)
    batch = {k: torch.from_numpy(v)[None] for k, v in t.items()}
    gt = batch["gt"][:, None]
    good = {"binary": gt * 0.98 + 0.01, "thresh_binary": gt * 0.98 + 0.01,
            "thresh": batch["thresh_map"][:, None]}
    bad = {k: 1 - v for k, v in good.items()}
    g, b = db_loss(good, batch), db_loss(bad, batch)
    assert g["loss"] < 0.2 and b["loss"] > 10 * g["loss"] and g["l1"] < 1e-6
    # text-free image: negatives still learn (minimum number of mined negatives)
    empty = torch.zeros(1, 16, 16)
    assert balanced_bce(torch.full((1, 16, 16), 0.9), empty, torch.ones(1, 16, 16)) > 1.0


def test_augment_keeps_polygons_on_their_text():
    rng = np.random.default_rng(0)
    img = np.zeros((200, 300, 3), np.uint8)
    cv2.fillPoly(img, [RECT.astype(np.int32) * 2], (255, 255, 255))
    out, polys, ignore = augment(rng, img, [RECT * 2], [False], 160, AugmentConfig(text_crop_prob=1.0))
    assert out.shape == (160, 160, 3) and len(polys) == 1
    mask = np.zeros((160, 160), np.uint8)
    cv2.fillPoly(mask, [np.round(polys[0]).astype(np.int32)], 1)
    white = out[..., 0] > 128
    assert (white & (mask > 0)).sum() >= 0.8 * min(white.sum(), mask.sum())


def test_scale_range_sets_the_size_of_the_text():
    """AugmentConfig.scale (dbrt train --scale) is the size change applied to real images."""
    img = np.zeros((200, 300, 3), np.uint8)
    for size in (0.5, 1.5):
        cfg = AugmentConfig(scale=(size, size), max_angle=0.0, text_crop_prob=1.0)
        _, polys, _ = augment(np.random.default_rng(1), img, [RECT * 2], [False], 400, cfg)
        assert np.ptp(polys[0][:, 0]) == pytest.approx(200 * size, abs=1e-3)


def test_real_sources_take_the_scale_range(tmp_path):
    from export.train.data import open_source

    folder = icdar_folder(tmp_path / "icdar")
    assert open_source(str(folder), 4, 64, 0).aug.scale == (0.5, 3.0)  # the DB paper's
    source = open_source(str(folder), 4, 64, 0, scale=(0.3, 0.6))
    assert source.aug.scale == (0.3, 0.6) and source.aug.flip == 0.5  # the rest stays the paper's


def test_a_smaller_shrink_ratio_thins_the_kernel_and_widens_the_border_band():
    # r = 0.3: D = 2000 * 0.91 / 240 = 7.58 px against 7.0 at the paper's 0.4
    assert offset_distance(RECT, 0.3) == pytest.approx(2000 * 0.91 / 240)
    paper, thin = (make_targets([RECT], [False], 80, 160, shrink_ratio=r) for r in (0.4, 0.3))
    assert thin["gt"].sum() < paper["gt"].sum() and thin["thresh_mask"].sum() > paper["thresh_mask"].sum()
    ys, xs = np.nonzero(thin["gt"])
    assert xs.min() == 28 and ys.min() == 38  # shrunk by about 8 px, not 7


def test_shrink_ratio_reaches_the_polygon_sources_not_the_masks(tmp_path):
    from export.train.config import TrainConfig
    from export.train.data import open_source
    from export.train.labels import SHRINK_RATIO

    assert TrainConfig(out_dir="").shrink_ratio == SHRINK_RATIO == 0.4  # the CLI shows the labels' default
    icdar, masks = icdar_folder(tmp_path / "icdar"), mask_folder(tmp_path / "masks")
    sources = [open_source(name, 4, 64, 0, shrink_ratio=0.3) for name in (str(icdar), "synth")]
    assert [s.shrink_ratio for s in sources] == [0.3, 0.3]
    paper, thin = (open_source(str(icdar), 4, 160, 0, shrink_ratio=r) for r in (0.4, 0.3))
    assert all(np.array_equal(paper[i]["image"], thin[i]["image"]) for i in range(4))  # same crops
    kernels = [(int(paper[i]["gt"].sum()), int(thin[i]["gt"].sum())) for i in range(4)]
    assert all(t <= p for p, t in kernels) and any(t < p for p, t in kernels)
    paper, thin = (open_source(str(masks), 4, 96, 0, shrink_ratio=r) for r in (0.4, 0.3))
    assert np.array_equal(paper[0]["gt"], thin[0]["gt"])  # the mask set comes shrunk


def test_shrink_ratio_flag_is_checked_and_reaches_the_config(capsys, tmp_path):
    from pipeline.cli import build_parser, main
    from pipeline.commands.train import _new_config

    for bad in ("0", "1", "-0.2", "x"):
        assert main(["train", "--out", "unused", "--shrink-ratio", bad]) == 2
        err = capsys.readouterr().err
        assert "--shrink-ratio" in err and "Traceback" not in err
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "r"), "--shrink-ratio", "0.3"])
    assert _new_config(args).shrink_ratio == 0.3


def test_scale_flag_is_checked(capsys):
    from pipeline.cli import main

    for bad, why in (("2,1", "0 < LO <= HI"), ("0,1", "0 < LO <= HI"), ("big", "two numbers")):
        assert main(["train", "--out", "unused", "--scale", bad]) == 2
        err = capsys.readouterr().err
        assert "--scale" in err and why in err and "Traceback" not in err


def test_synth_dataset_samples_are_deterministic():
    ds = SynthDataset(4, crop=96, seed=3)
    a, b = ds[2], ds[2]
    assert a["image"].shape == (96, 96, 3) and a["gt"].shape == (96, 96)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_read_icdar_folder(tmp_path):
    items = read_icdar_folder(icdar_folder(tmp_path / "icdar"))
    assert [p.name for p, _, _ in items] == ["img_1.jpg", "img_2.jpg"]
    assert items[0][2] == [False, True] and items[0][1][0].shape == (4, 2)
    # every image kind the runtime reads (dbnet.files), e.g. WebP copies of a dataset
    webp = read_icdar_folder(icdar_folder(tmp_path / "webp", ".webp"))
    assert [p.name for p, _, _ in webp] == ["img_1.webp", "img_2.webp"]


def test_ground_truth_is_read_for_training_as_eval_reads_it(tmp_path):
    """Lines of coordinates only (detection labels) were dropped: every target was background
    and training ran on without a word, while dbrt eval read the same words; a line that is
    neither was skipped without a word. Do-not-care is "###" exactly, as the official ICDAR 2015
    evaluation has it ("#" is a word)."""
    from engine.errors import DbrtError
    from pipeline.datasets import read_gt_file

    folder = icdar_folder(tmp_path / "icdar")
    gt = folder / "gt_img_1.txt"
    gt.write_text("18,40,110,40,110,78,18,78\r\n1,1,9,1,9,9,1,9,#\r\n20,80,90,80,90,99,20,99,a,b\r\n"
                  '2,2,8,2,8,8,2,8,"###"\r\n')
    polys, ignore = {p.name: (q, i) for p, q, i in read_icdar_folder(folder)}["img_1.jpg"]
    assert len(polys) == 4 and ignore == list(read_gt_file(gt).ignore) == [False, False, False, True]
    gt.write_text("18,40,110,40,110,78,18,78,TEXT\n18,40,110,40,HELLO\n")
    with pytest.raises(DbrtError, match=r"gt_img_1.txt, line 2: expected 8 coordinates"):
        read_icdar_folder(folder)


@pytest.mark.parametrize("value, why", [("nan", "coordinate nan is not a finite number"),
                                        ("inf", "coordinate inf is not a finite number"),
                                        ("1e40", "coordinate 1e+40 is beyond 1,000,000 pixels")])
def test_a_coordinate_that_is_no_pixel_is_an_error_naming_the_file_and_line(tmp_path, value, why):
    """Training drew its targets from a NaN or overflowing corner (float32 inf) with a
    RuntimeWarning or a traceback, while dbrt eval dropped or scored the word: both readers now
    refuse the label file alike."""
    from engine.errors import DbrtError
    from pipeline.datasets import DatasetError, open_dataset

    folder = icdar_folder(tmp_path / "icdar")
    (folder / "gt_img_2.txt").write_text(f"18,40,110,40,110,78,18,78,TEXT\n5,5,{value},5,15,15,5,15,###\n")
    expected = re.escape(f"gt_img_2.txt, line 2: {why}")
    with pytest.raises(DbrtError, match=expected):
        read_icdar_folder(folder)
    with pytest.raises(DatasetError, match=expected):
        open_dataset(folder)


def test_mask_samples_train_the_probability_map_only(tmp_path):
    from export.train.augment import AugmentConfig
    from export.train.data import MaskDataset, is_mask_folder

    root = mask_folder(tmp_path / "m")
    assert is_mask_folder(root) and not is_mask_folder(icdar_folder(tmp_path / "icdar"))
    still = AugmentConfig(scale=(1.0, 1.0), max_angle=0.0, text_crop_prob=0.0, brightness=0, contrast=0)
    s = MaskDataset(root, 4, crop=160, aug=still)[0]
    assert s["image"].shape == (160, 160, 3)
    assert set(np.unique(s["gt"])) == {0, 1}
    ys, xs = np.nonzero(s["gt"])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (50, 63, 28, 119)  # the mask, unmoved
    assert s["mask"].min() == 1 and s["thresh_mask"].max() == 0            # no threshold target


def test_flip_mirrors_image_and_polygons_together():
    image = np.zeros((100, 200, 3), np.uint8)
    image[40:60, 10:50] = 255                        # a bright word on the left
    poly = np.float32([[10, 40], [50, 40], [50, 60], [10, 60]])
    cfg = AugmentConfig(scale=(1.0, 1.0), max_angle=0.0, text_crop_prob=0.0, brightness=0,
                        contrast=0, flip=1.0)
    out, polys, _ = augment(np.random.default_rng(0), image, [poly], [False], 200, cfg)
    assert out[50, 150:190].mean() > 200 and out[50, 10:50].mean() < 50  # now on the right
    assert polys[0][:, 0].min() == pytest.approx(150, abs=1) and polys[0][:, 0].max() == pytest.approx(190, abs=1)


def test_mixed_dataset_follows_the_weights_reproducibly(tmp_path):
    from export.train.data import MixedDataset, parse_source

    class Source:
        def __init__(self, tag):
            self.tag = tag

        def __getitem__(self, i):
            return self.tag

    mix = MixedDataset([Source("a"), Source("b")], [3, 1], 4000, seed=1)
    picks = [mix[i] for i in range(4000)]
    assert 0.72 < picks.count("a") / 4000 < 0.78
    assert picks == [MixedDataset([Source("a"), Source("b")], [3, 1], 4000, seed=1)[i] for i in range(4000)]
    assert parse_source("synth") == ("synth", 1.0) and parse_source("/d/x=0.25") == ("/d/x", 0.25)
    from engine.errors import DbrtError

    for bad in ("synth=0", "synth=abc"):
        with pytest.raises(DbrtError, match="weight"):
            parse_source(bad)



def test_mixed_dataset_shares_survive_huge_weights():
    """Two weights of 1e308 summed to inf: every share was NaN and every sample came from the
    last source; the weights are scaled by their largest first."""
    from engine.errors import DbrtError
    from export.train.data import MixedDataset

    class Source:
        def __init__(self, tag):
            self.tag = tag

        def __getitem__(self, i):
            return self.tag

    sources = [Source("a"), Source("b")]
    mix = MixedDataset(sources, [1e308, 1e308], 2000, seed=3)
    np.testing.assert_allclose(mix.cumulative, [0.5, 1.0])
    assert 0.45 < sum(mix[i] == "a" for i in range(2000)) / 2000 < 0.55
    np.testing.assert_allclose(MixedDataset(sources, [3, 1], 10).cumulative, [0.75, 1.0])
    for bad in ([1, float("inf")], [1, float("nan")], [1, 0], [1, -1]):
        with pytest.raises(DbrtError, match="positive, finite"):
            MixedDataset(sources, bad, 10)


def test_normalise_and_photometric_follow_their_formulas():
    """The loader's OpenCV one-pass versions: DB normalisation to float32 CHW, and contrast about
    the mean grey plus brightness, saturated (to within OpenCV's rounding)."""
    from dbnet.spec import DB_MEAN_BGR
    image = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    expected = ((image.astype(np.float64) - DB_MEAN_BGR) / 255.0).transpose(2, 0, 1)
    out = normalise(image)
    assert out.shape == (3, 48, 64) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(out, expected, atol=1e-6)
    cfg = AugmentConfig(contrast=0.5, brightness=0.5)
    rng = np.random.default_rng(1)
    gain, bias = 1 + rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5) * 128
    formula = np.clip((image - image.mean()) * gain + image.mean() + bias, 0, 255)
    out = photometric(np.random.default_rng(1), image, cfg)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.abs(out - formula).max() <= 1.0


def test_compact_samples_become_the_float_batch_the_model_takes(tmp_path):
    """The loader moves uint8 images and targets (float16 threshold map); model_batch makes of
    them exactly what the float32 path made: normalise()'s image, make_targets' maps."""
    torch = pytest.importorskip("torch")
    from export.train.data import IcdarDataset, compact
    from export.train.loop import model_batch

    ds = IcdarDataset(icdar_folder(tmp_path / "icdar"), 2, crop=96, seed=1)
    samples = [ds[0], ds[1]]
    assert samples[0]["image"].dtype == np.uint8 and samples[0]["thresh_map"].dtype == np.float16
    assert all(samples[0][k].dtype == np.uint8 for k in ("gt", "mask", "thresh_mask"))
    batch = {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}
    out = model_batch(batch, torch.device("cpu"))
    expected = np.stack([normalise(s["image"]) for s in samples])
    assert out["image"].dtype == torch.float32 and out["image"].shape == (2, 3, 96, 96)
    np.testing.assert_allclose(out["image"].numpy(), expected, atol=1e-6)
    targets = make_targets([RECT], [False], 80, 160)
    small = compact(targets, np.zeros((80, 160, 3), np.uint8))
    back = model_batch({k: torch.from_numpy(v)[None] for k, v in small.items()}, torch.device("cpu"))
    for key in ("gt", "mask", "thresh_mask"):
        assert np.array_equal(back[key][0].numpy(), targets[key])
    np.testing.assert_allclose(back["thresh_map"][0].numpy(), targets["thresh_map"], atol=5e-4)
    assert model_batch(batch, torch.device("cpu"), channels_last=True)["image"].is_contiguous(
        memory_format=torch.channels_last)


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "cannot read training ground truth"),
    ('{"image": "a.jpg"}', "expected a JSON list"),
    ('[{"image": "a.jpg"}]', "'polygons'"),
    ('[{"image": "a.jpg", "polygons": [[[0,0],[4,0],[4,4]]], "ignore": []}]', "1 polygons but 0 ignore"),
    ('[{"image": "gone.jpg", "polygons": []}]', "1 image(s) not found, e.g."),
    ("[]", "lists no images"),
])
def test_a_bad_training_gt_json_is_one_error_naming_it(tmp_path, content, fragment):
    from engine.errors import DbrtError

    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "gt.json").write_text(content)
    with pytest.raises(DbrtError, match="gt.json") as err:
        read_icdar_folder(tmp_path)
    assert fragment in str(err.value)


def test_a_gt_json_without_ignore_flags_trains_every_polygon(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "gt.json").write_text('[{"image": "a.jpg", "polygons": [[[0,0],[4,0],[4,4],[0,4]]]}]')
    [(image, polys, ignore)] = read_icdar_folder(tmp_path)
    assert image.name == "a.jpg" and len(polys) == 1 and ignore == [False]


def test_a_mask_folder_pairs_every_photo_with_its_mask(tmp_path):
    """A .JPG photo was called missing beside its mask, and a photo without a mask was dropped
    without a word."""
    from engine.errors import DbrtError
    from export.train.data import read_mask_folder

    folder = mask_folder(tmp_path / "m", n=2)
    (folder / "img_1.jpg").rename(folder / "img_1.JPG")
    assert [(i.name, m.name) for i, m in read_mask_folder(folder)] == [
        ("img_0.jpg", "img_0_mask.png"), ("img_1.JPG", "img_1_mask.png")]
    (folder / "._img_0.jpg").write_bytes(b"macOS metadata")  # hidden copies are not photos
    (folder / "._img_0_mask.png").write_bytes(b"macOS metadata")
    assert len(read_mask_folder(folder)) == 2
    (folder / "img_0.png").write_bytes((folder / "img_0.jpg").read_bytes())
    with pytest.raises(DbrtError, match=r"photos img_0.jpg and img_0.png in .* would share"):
        read_mask_folder(folder)
    (folder / "img_0.png").unlink()
    (folder / "img_1_mask.png").unlink()
    with pytest.raises(DbrtError, match=r"photo .*img_1.JPG has no mask img_1_mask.png"):
        read_mask_folder(folder)
    (folder / "img_1.JPG").unlink()
    (folder / "img_0.jpg").unlink()
    with pytest.raises(DbrtError, match=r"mask .*img_0_mask.png has no photo img_0.jpg"):
        read_mask_folder(folder)


def test_a_ground_truth_file_without_its_image_is_an_error_naming_it(tmp_path):
    """Its words were left out of training without a word (an image not copied, a renamed one)."""
    from engine.errors import DbrtError

    folder = icdar_folder(tmp_path / "icdar")
    (folder / "img_2.jpg").unlink()
    with pytest.raises(DbrtError, match=r"ground truth .*gt_img_2.txt has no image img_2.jpg"):
        read_icdar_folder(folder)
    (folder / "gt_img_2.txt").unlink()
    assert len(read_icdar_folder(folder)) == 1
    split = tmp_path / "split"  # the images/ + gts/ layout
    (split / "gts").mkdir(parents=True)
    (folder).rename(split / "images")
    (split / "images" / "gt_img_1.txt").rename(split / "gts" / "gt_img_1.txt")
    (split / "gts" / "gt_img_9.txt").write_text("1,1,20,1,20,20,1,20,X\n")
    with pytest.raises(DbrtError, match=r"gts/gt_img_9.txt has no image img_9.jpg"):
        read_icdar_folder(split)


@pytest.mark.parametrize("kind", ["icdar", "masks", "gt.json"])
def test_an_image_that_cannot_be_decoded_stops_the_run_before_it_trains(tmp_path, kind, capsys):
    """It stopped the run only when training first sampled it, possibly hundreds of steps in,
    with the steps since the last save lost."""
    pytest.importorskip("torch")  # dbrt train says it needs torch before it reads its data
    import json

    from pipeline.cli import main

    if kind == "masks":
        folder, bad = mask_folder(tmp_path / "data", n=3), "img_2_mask.png"
    else:
        folder, bad = icdar_folder(tmp_path / "data"), "img_2.jpg"
    if kind == "gt.json":
        (folder / "gt.json").write_text(json.dumps(
            [{"image": f"img_{i}.jpg", "polygons": [[[18, 40], [110, 40], [110, 78], [18, 78]]]}
             for i in (1, 2)]))
    (folder / bad).write_bytes(b"<html>not found</html>")  # a download that went wrong
    run = ["train", "--out", str(tmp_path / "run"), "--data", str(folder), "--width", "0.25",
           "--crop", "64", "--batch", "1", "--steps", "1", "--workers", "0", "--threads", "1"]
    assert main(run) == 2  # one step: the broken file was never sampled, and the run passed
    assert f"cannot read image {folder / bad}" in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.json").exists()
