"""What a training run keeps in its --out folder and what it finds there: the thresholds it
started with, a best.pt it did not write, a folder it made for a run that never started."""
import json
import shutil
from pathlib import Path

import pytest

from pipeline.cli import main

SHIPPED = Path(__file__).parents[1] / "export" / "assets" / "dbnet_default.pt"
POST_KEYS = ("thresh", "box_thresh", "unclip_ratio")
TINY = ["--steps", "2", "--batch", "1", "--crop", "64", "--warmup", "1", "--workers", "0",
        "--threads", "1"]


def _shipped_post() -> dict:
    post = json.loads(SHIPPED.with_suffix(".json").read_text())["spec"]["post"]
    return {k: post[k] for k in POST_KEYS}


def test_a_run_keeps_its_init_models_thresholds_when_the_init_file_goes(tmp_path):
    """Validation on --resume, and shipping last.pt, went by the --init file as it was then:
    moved or deleted, DB's defaults instead of the thresholds the run started with."""
    pytest.importorskip("torch")
    from export.checkpoint import trained_post_settings
    from export.synth.dataset import write_dataset

    init = tmp_path / "init" / "model.pt"
    init.parent.mkdir()
    shutil.copy(SHIPPED, init)
    shutil.copy(SHIPPED.with_suffix(".json"), init.with_suffix(".json"))
    write_dataset(tmp_path / "val", 1, height=128, width=192)
    out = tmp_path / "run"
    # stops after its first step (time limit), validated at the thresholds of --init
    assert main(["train", "--out", str(out), "--init", str(init), *TINY, "--lr", "1e-9",
                 "--time-limit", "1e-6", "--val", str(tmp_path / "val")]) == 0
    assert json.loads((out / "config.json").read_text())["post"] == _shipped_post()
    shutil.rmtree(init.parent)                           # the --init model is moved away
    assert main(["train", "--out", str(out), "--resume", "--time-limit", "0"]) == 0
    lines = [json.loads(x) for x in (out / "val.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    assert {k: lines[-1][k] for k in POST_KEYS} == _shipped_post()
    assert trained_post_settings(out / "last.pt") == _shipped_post()   # what ship takes


def test_a_new_run_does_not_compete_with_a_best_pt_it_did_not_write(tmp_path, capsys):
    """best.pt of an earlier run (its last.pt and val.jsonl gone) was the score a new run had
    to beat, and a better model of the new run replaced it: refused, naming the folder."""
    torch = pytest.importorskip("torch")
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": {}, "step": 9, "validation": {"hmean": 0.99}}, str(out / "best.pt"))
    before = (out / "best.pt").read_bytes()
    assert main(["train", "--out", str(out), "--width", "0.25", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out} holds best.pt of an earlier run" in err
    assert (out / "best.pt").read_bytes() == before and sorted(out.iterdir()) == [out / "best.pt"]


def test_a_run_that_cannot_start_removes_the_out_folder_it_made(tmp_path, capsys):
    """It left an empty --out folder (and the missing folders above it) behind; a folder that
    was there before stays."""
    pytest.importorskip("torch")
    (tmp_path / "empty").mkdir()
    failing = ["--width", "0.25", *TINY, "--data", str(tmp_path / "empty")]
    assert main(["train", "--out", str(tmp_path / "new" / "run"), *failing]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    assert main(["train", "--out", str(tmp_path / "kept"), *failing]) == 2
    assert (tmp_path / "kept").is_dir()


def test_shipping_that_fails_removes_the_out_folder_it_made(tmp_path):
    torch = pytest.importorskip("torch")
    from export.model import DBNet
    from export.train import ship

    torch.save({"model": DBNet("resnet18", width=0.25).state_dict(), "step": 1,
                "config": {"arch": "resnet18", "width": 0.25}}, str(tmp_path / "w.pt"))
    with pytest.raises(SystemExit, match="^error: .*thresh"):
        ship.main([str(tmp_path / "w.pt"), "--out", str(tmp_path / "new" / "model"), "--thresh", "5"])
    assert not (tmp_path / "new").exists()


def test_the_last_steps_snapshot_is_last_pt_and_the_finished_run_still_resumes_and_ships(tmp_path, capsys):
    """A run whose last step fell on keep_every wrote step_NNNNNN.pt beside last.pt with the
    same weights, optimiser and step: twice the disk for one checkpoint (50 MB at the default
    width). Snapshots before the last step stay; --resume and shipping go by last.pt."""
    torch = pytest.importorskip("torch")
    from export.train import ship
    from export.train.config import TrainConfig
    from export.train.loop import train

    out = tmp_path / "run"
    cfg = TrainConfig(out_dir=str(out), width=0.25, steps=4, batch=1, crop=64, warmup=1, workers=0,
                      threads=1, save_every=100, keep_every=2)
    assert train(cfg) == out / "last.pt"
    assert sorted(p.name for p in out.glob("*.pt")) == ["last.pt", "step_000002.pt"]
    assert torch.load(str(out / "step_000002.pt"), weights_only=True)["step"] == 2
    assert torch.load(str(out / "last.pt"), weights_only=True)["step"] == 4
    # only last.pt, which --resume reads, carries the raw weights and the optimiser (4x the size)
    assert {"raw", "optimizer"} <= set(torch.load(str(out / "last.pt"), weights_only=True))
    assert not {"raw", "optimizer"} & set(torch.load(str(out / "step_000002.pt"), weights_only=True))
    assert ship.main([str(out / "step_000002.pt"), "--out", str(tmp_path / "snap"),
                      "--limit-side", "64"]) == 0
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert "finished at step 4 of 4: nothing to resume" in capsys.readouterr().out
    assert ship.main([str(out / "last.pt"), "--out", str(tmp_path / "model"), "--limit-side", "64"]) == 0
    assert json.loads((tmp_path / "model" / "dbnet.json").read_text())["checkpoint_step"] == 4
