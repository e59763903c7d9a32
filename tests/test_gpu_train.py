"""The GPU training run's preparation and its run, dry on the CPU: the pack (WebP copies within a
size budget that the training folders read), and the very `dbrt train` command the GPU run
gives, with its log parsed for the step time and its checkpoints slimmed for shipping."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from benchmarks import gpu_train


def _photo(seed: int, h: int = 240, w: int = 320) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = (rng.random((h, w, 3)) * 60 + 150).astype(np.uint8)
    cv2.putText(image, "TEXT", (30, 140), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (0, 0, 0), 5)
    return image


def _data(root):
    for split in ("train", "val"):
        folder = root / split
        folder.mkdir(parents=True)
        for i in (1, 2):
            cv2.imwrite(str(folder / f"img_{i}.jpg"), _photo(i))
            (folder / f"gt_img_{i}.txt").write_text("28,90,230,90,230,150,28,150,TEXT\n")
    masks = root / "masks"
    masks.mkdir()
    for i in range(3):
        cv2.imwrite(str(masks / f"p{i}.jpg"), _photo(10 + i, 900, 1200))
        mask = np.zeros((900, 1200), np.uint8)
        mask[400:460, 100:700] = 255
        cv2.imwrite(str(masks / f"p{i}_mask.png"), mask)
    wheels = root / "wheels"
    wheels.mkdir()
    (wheels / "pyclipper-1.4.0-cp312-cp312-manylinux2014_x86_64.whl").write_bytes(b"wheel")
    return root


def _pack(data, out, budget_mib=5.0):
    return gpu_train.main(["pack", "--out", str(out), "--icdar", str(data / "train"), "--val",
                           str(data / "val"), "--masks", str(data / "masks"), "--wheels",
                           str(data / "wheels"), "--budget-mib", str(budget_mib)])


def test_pack_writes_webp_copies_the_training_folders_read(tmp_path):
    from export.train.data import IcdarDataset, MaskDataset

    data = _data(tmp_path / "data")
    assert _pack(data, tmp_path / "pack") == 0
    pack = tmp_path / "pack"
    manifest = json.loads((pack / "MANIFEST.json").read_text())
    assert manifest["masks_packed"] == 3 and manifest["mib"] < 5
    assert sorted(p.name for p in (pack / "ic15_train").iterdir()) == [
        "gt_img_1.txt", "gt_img_2.txt", "img_1.webp", "img_2.webp"]
    assert (pack / "wheels").is_dir() and len(list((pack / "wheels").iterdir())) == 1
    photo = cv2.imread(str(pack / "masks" / "p0.webp"))
    assert max(photo.shape[:2]) == gpu_train.MASK_SIDE  # reduced, the mask with it
    assert cv2.imread(str(pack / "masks" / "p0_mask.png"), 0).shape == photo.shape[:2]
    assert IcdarDataset(pack / "ic15_train", 1, crop=64)[0]["gt"].shape == (64, 64)
    assert MaskDataset(pack / "masks", 1, crop=64)[0]["image"].shape == (64, 64, 3)
    # a budget the masks do not fit keeps the ICDAR splits and as many masked photos as fit
    tight = (manifest["mib"] * 2 ** 20 - 2 * (pack / "masks" / "p0.webp").stat().st_size) / 2 ** 20
    assert _pack(data, tmp_path / "tight", budget_mib=tight) == 0
    assert json.loads((tmp_path / "tight" / "MANIFEST.json").read_text())["masks_packed"] < 3
    with pytest.raises(SystemExit, match="the ICDAR splits alone"):
        _pack(data, tmp_path / "tiny", budget_mib=0.001)
    # without --masks the pack holds the ICDAR splits only, and the run trains on them + synth
    assert gpu_train.main(["pack", "--out", str(tmp_path / "plain"), "--icdar", str(data / "train"),
                           "--val", str(data / "val"), "--wheels", str(data / "wheels")]) == 0
    assert not (tmp_path / "plain" / "masks").exists()
    args = gpu_train.train_args(tmp_path / "plain", tmp_path / "r", 2, 1, 0, False, 0, 0)
    sources = [args[i + 1] for i, flag in enumerate(args) if flag == "--data"]
    assert sources == [f"{tmp_path / 'plain' / 'ic15_train'}=0.8", "synth=0.2"]


@pytest.mark.slow
def test_the_gpu_run_command_trains_here_and_its_checkpoint_ships(tmp_path):
    torch = pytest.importorskip("torch")
    from export.model import DBNet
    from export.train.weights import load_weights

    data = _data(tmp_path / "data")
    _pack(data, tmp_path / "pack")
    args = gpu_train.train_args(tmp_path / "pack", tmp_path / "run", steps=2, batch=1, workers=0,
                                amp=True, time_limit=0, val_every=0)
    # the same command with the device and crop a CPU test affords
    args[args.index("cuda")] = "cpu"
    args[args.index("--crop") + 1] = "64"
    torch.set_num_threads(1)
    log = tmp_path / "train.log"
    assert gpu_train._dbrt(args + ["--log-every", "1", "--threads", "1"], log) == 0
    assert gpu_train.step_seconds(log) > 0
    assert 0 <= gpu_train.loader_share(log) <= 100
    assert "validation step 2" in log.read_text()
    gpu_train.slim_checkpoint(tmp_path / "run" / "best.pt", tmp_path / "best_slim.pt")
    slim = torch.load(str(tmp_path / "best_slim.pt"), weights_only=True)
    assert set(slim) == {"model", "step", "config", "validation"} and slim["config"]["amp"] is True
    load_weights(DBNet("resnet18", width=0.5), tmp_path / "best_slim.pt")  # what ship reads


def test_calibration_falls_back_to_float32_when_amp_fails(tmp_path, monkeypatch):
    """A GPU whose bfloat16 path fails must not cost the run: the step time is measured again
    without --amp, and a run where both fail stops with one message."""
    calls = []

    def fake_dbrt(argv, log):
        calls.append("--amp" in argv)
        if "--amp" in argv:
            raise RuntimeError("bfloat16 not supported")
        log.write_text("".join(f"step {20 * i}/120 loss 1.0 lr 1e-3 {0.5 if i == 1 else 0.08} s/it eta 1 min\n"
                               for i in range(1, 7)))
        return 0

    monkeypatch.setattr(gpu_train, "_dbrt", fake_dbrt)
    assert gpu_train.calibrate(tmp_path, tmp_path, batch=32, workers=2) == (pytest.approx(0.08), False)
    assert calls == [True, False]
    monkeypatch.setattr(gpu_train, "_dbrt", lambda argv, log: 1)
    with pytest.raises(SystemExit, match="with and without --amp"):
        gpu_train.calibrate(tmp_path, tmp_path, batch=32, workers=2)
