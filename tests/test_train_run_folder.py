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
