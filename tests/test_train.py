"""DB training runs: a smoke run, fine-tuning from its checkpoint, the fp16 shipping path,
validation and the best checkpoint, resuming, interrupting, mixed precision, safe loading."""
import json
from pathlib import Path

import numpy as np
import pytest

from train_folders import icdar_folder, mask_folder


@pytest.mark.slow
def test_smoke_training_then_fine_tune_then_ship(tmp_path):
    torch = pytest.importorskip("torch")
    from export.checkpoint import load_checkpoint, sidecar_calib_method
    from export.model import DBNet
    from export.train.config import TrainConfig
    from export.train.loop import train
    from export.train.ship import ship

    torch.set_num_threads(1)
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), width=0.25, steps=3, batch=2, crop=64,
                      warmup=1, workers=0, threads=1, save_every=2, log_every=1)
    last = train(cfg)
    ck = torch.load(str(last), weights_only=True)  # plain tensors and values only
    assert ck["step"] == 3 and ck["config"]["crop"] == 64
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 3

    ft = TrainConfig(out_dir=str(tmp_path / "ft"), data=str(icdar_folder(tmp_path / "icdar")),
                     width=0.25, steps=2, batch=2, crop=64, warmup=1, workers=0, threads=1,
                     init=str(last), lr=1e-4, log_every=1)
    tuned = train(ft)
    assert torch.load(str(tuned), weights_only=True)["step"] == 2

    rec = ship(tuned, {"limit_side": 64}, weights=tmp_path / "w.pt",
               onnx_path=tmp_path / "m.onnx", record=tmp_path / "w.json",
               int8_calibration={"method": "entropy"})
    assert rec["weights"]["dtype"] == "float16" and rec["onnx"]["fp16_initializers"] > 10
    assert sidecar_calib_method(tmp_path / "w.pt") == "entropy"  # what `dbrt export w.pt` calibrates with
    assert rec["onnx"]["ort_vs_torch_max_abs"] < 1e-3
    model = DBNet("resnet18", width=0.25)
    load_checkpoint(model, tmp_path / "w.pt")           # the export helper's strict loader reads it
    import onnx

    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert any(n.op_type == "Cast" for n in proto.graph.node)
    assert json.loads({p.key: p.value for p in proto.metadata_props}["dbrt"])["resize"]["limit_side"] == 64


def test_dbrt_train_rejects_bad_data(tmp_path, capsys):
    pytest.importorskip("torch")
    from pipeline.cli import main

    assert main(["train", "--out", str(tmp_path / "x"), "--data", str(tmp_path / "missing")]) == 2
    assert "--data" in capsys.readouterr().err


@pytest.mark.parametrize("weight", ["inf", "nan", "0", "-1"])
def test_a_source_weight_must_be_positive_and_finite(tmp_path, capsys, weight):
    """--data synth=inf trained on synth alone (every other source's share became 0)."""
    pytest.importorskip("torch")
    from pipeline.cli import main

    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--width", "0.25", "--steps", "1", "--batch", "1",
                 "--crop", "64", "--workers", "0", "--threads", "1",
                 "--data", f"synth={weight}", "--data", "synth=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--data 'synth={weight}': the weight must be a positive, finite number" in err
    assert not (out / "config.json").exists()


def test_fp16_storage_keeps_out_of_range_tensors_fp32():
    torch = pytest.importorskip("torch")
    from export.model import DBNet
    from export.train.ship import fits_fp16, fp16_state

    assert fits_fp16(np.array([1.0, -2.5, 1e-3], np.float32))
    assert not fits_fp16(np.array([1.0, 2e5], np.float32))       # overflows fp16
    model = DBNet("resnet18", width=0.25)
    model.decoder.binarize[1].running_var.fill_(2e5)              # as trained DB heads have
    state = fp16_state(model)
    assert state["decoder.binarize.1.running_var"].dtype == torch.float32
    assert state["decoder.binarize.0.weight"].dtype == torch.float16


@pytest.mark.slow
def test_mixed_training_validates_and_keeps_the_best(tmp_path):
    torch = pytest.importorskip("torch")
    from export.train.config import TrainConfig
    from export.train.loop import train

    torch.set_num_threads(1)
    icdar = icdar_folder(tmp_path / "icdar")
    masks = mask_folder(tmp_path / "masks")
    scores = iter([0.2, 0.5, 0.4])
    seen = []

    def validate(model):
        seen.append(model.training)
        return {"hmean": next(scores)}

    cfg = TrainConfig(out_dir=str(tmp_path / "run"), data=[f"{icdar}=1", f"{masks}=1", "synth=1"],
                      width=0.25, steps=3, batch=2, crop=64, warmup=1, workers=0, threads=1,
                      log_every=1, val_every=1)
    train(cfg, validate=validate)
    lines = [json.loads(x) for x in (tmp_path / "run" / "val.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3] and seen == [False, False, False]
    best = torch.load(str(tmp_path / "run" / "best.pt"), weights_only=True)
    assert best["step"] == 2 and best["validation"]["hmean"] == 0.5
    assert "optimizer" not in best and "raw" not in best  # --resume reads last.pt only


@pytest.mark.slow
def test_tuned_validation_records_its_thresholds_and_ship_takes_them(tmp_path):
    torch = pytest.importorskip("torch")
    import argparse

    from export.synth.dataset import write_dataset
    from export.train.ship import POST_DEFAULTS, WEIGHTS, post_settings
    from pipeline.cli import main

    write_dataset(tmp_path / "val", 2, height=256, width=384)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--width", "0.25", "--steps", "1", "--batch", "1",
                 "--crop", "64", "--warmup", "1", "--workers", "0", "--threads", "1",
                 "--val", str(tmp_path / "val"), "--val-tune"]) == 0
    line = json.loads((out / "val.jsonl").read_text().splitlines()[-1])
    assert {"thresh", "box_thresh", "unclip_ratio", "untuned_hmean"} <= set(line)
    assert line["hmean"] >= line["untuned_hmean"]  # the grid holds the default settings
    best = torch.load(str(out / "best.pt"), weights_only=True)["validation"]
    # what the flags give wins; the rest comes from the tuned validation
    chosen = post_settings(out / "best.pt", argparse.Namespace(thresh=None, box_thresh=0.42, unclip_ratio=None))
    assert chosen == {"thresh": best["thresh"], "box_thresh": 0.42, "unclip_ratio": best["unclip_ratio"]}
    # the tuned validation takes the untuned score from its grid's row at the default settings:
    # the same as a plain validation of the same model
    from export.model import DBNet
    from pipeline.commands.train import make_validator
    from pipeline.datasets import open_dataset

    from export.train.weights import load_weights

    model = DBNet("resnet18", width=0.5).eval()
    load_weights(model, WEIGHTS)  # the shipped model: real detections to score
    dataset = open_dataset(str(tmp_path / "val"))
    plain, tuned = make_validator(dataset)(model), make_validator(dataset, tune=True)(model)
    assert plain["hmean"] > 0 and tuned["untuned_hmean"] == plain["hmean"]
    assert {k: plain[k] for k in POST_DEFAULTS} == POST_DEFAULTS  # what it scored at, recorded
    from pipeline.tune import grid_edges
    assert tuned.get("on_grid_edge") == ("; ".join(grid_edges(tuned)) or None)  # said when there is one
    # the shipped state dict shipped again: its own record's thresholds (they were DB's
    # defaults, as export took the record's); a copy without its record: the defaults
    from export.checkpoint import sidecar_spec

    none = argparse.Namespace(thresh=None, box_thresh=None, unclip_ratio=None)
    shipped = sidecar_spec(WEIGHTS).post
    assert post_settings(WEIGHTS, none) == {k: getattr(shipped, k) for k in POST_DEFAULTS}
    (tmp_path / "copy.pt").write_bytes(WEIGHTS.read_bytes())
    assert post_settings(tmp_path / "copy.pt", none) == POST_DEFAULTS


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/dbrt_pwned_by_checkpoint",))


@pytest.mark.parametrize("where", ["init", "resume", "ship"])
def test_a_checkpoint_cannot_run_code(tmp_path, where):
    torch = pytest.importorskip("torch")
    import os

    from engine.errors import ModelError
    from export.train.config import TrainConfig
    from export.train.loop import train
    from export.train.ship import main as ship_main

    marker = "/tmp/dbrt_pwned_by_checkpoint"
    if os.path.exists(marker):
        os.remove(marker)
    evil = tmp_path / ("run" if where == "resume" else "elsewhere") / "last.pt"
    evil.parent.mkdir()
    torch.save({"model": _Boom(), "step": 1}, str(evil))
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), width=0.25, steps=2, batch=1, crop=64,
                      workers=0, threads=1, init=str(evil) if where == "init" else None,
                      resume=where == "resume")
    if where == "ship":
        with pytest.raises(SystemExit, match="weights_only=True"):
            ship_main([str(evil), "--out", str(tmp_path / "shipped")])
    else:
        with pytest.raises(ModelError, match="weights_only=True"):
            train(cfg)
    assert not os.path.exists(marker)


def test_init_of_another_architecture_is_one_clear_error(tmp_path):
    torch = pytest.importorskip("torch")
    from engine.errors import ModelError
    from export.model import DBNet
    from export.train.weights import load_weights

    path = tmp_path / "r18w025.pt"
    torch.save(DBNet("resnet18", width=0.25).state_dict(), str(path))
    with pytest.raises(ModelError, match="do not fit .*--arch / --width"):
        load_weights(DBNet("resnet18", width=0.5), path)


def test_ship_never_replaces_the_shipped_model_unless_asked(tmp_path, capsys):
    from export.train import ship

    before = ship.WEIGHTS.read_bytes(), ship.ONNX.read_bytes()
    with pytest.raises(SystemExit):
        ship.main([str(tmp_path / "any.pt")])              # neither --out nor --replace-shipped
    assert "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="checkpoint not found"):
        ship.main([str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")])
    assert (ship.WEIGHTS.read_bytes(), ship.ONNX.read_bytes()) == before


@pytest.mark.slow
def test_resume_continues_with_the_runs_own_settings(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from pipeline.cli import main

    out = str(tmp_path / "run")
    recipe = ["--width", "0.25", "--steps", "2", "--batch", "1", "--crop", "64", "--lr", "1e-3",
              "--warmup", "1", "--seed", "5", "--workers", "0", "--threads", "1", "--save-every", "1"]
    assert main(["train", "--out", out, *recipe]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    # flags left out are the run's own settings, not the defaults (width 0.5 would not even load)
    assert main(["train", "--out", out, "--resume", "--threads", "1", "--workers", "0"]) == 0
    again = json.loads((tmp_path / "run" / "config.json").read_text())
    assert {k: again[k] for k in saved if k != "resume"} == {k: saved[k] for k in saved if k != "resume"}
    assert torch.load(str(tmp_path / "run" / "last.pt"), weights_only=True)["step"] == 2
    capsys.readouterr()
    # a flag that would change the recipe midway is one clear error
    assert main(["train", "--out", out, "--resume", "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--lr 0.5" in err and "--lr 0.001" in err and "Traceback" not in err
    # a pair-valued setting is named as the flag takes it
    assert main(["train", "--out", out, "--resume", "--scale", "0.3,1"]) == 2
    err = capsys.readouterr().err
    assert "--scale 0.3,1: " in err and "(--scale 0.5,3)" in err
    assert main(["train", "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "holds no run to continue" in capsys.readouterr().err
    # the library checks it too: resuming with a config of defaults is refused, the run's
    # config.json untouched
    from engine.errors import ModelError
    from export.train.config import TrainConfig
    from export.train.loop import train

    with pytest.raises(ModelError, match=r"other settings: .*width 0.5 \(the run: 0.25\)"):
        train(TrainConfig(out_dir=out, resume=True, workers=0, threads=1))
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == again


def test_weight_average_is_the_ema_formula():
    torch = pytest.importorskip("torch")
    from export.train.loop import _Ema

    model, ema = torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.running_mean.fill_(4.0)
    model.num_batches_tracked.fill_(7)
    _Ema(ema, model).update(0.75)
    assert torch.allclose(ema.weight, torch.full((3,), 0.75 * 1.0 + 0.25 * 2.0))
    assert torch.allclose(ema.running_mean, torch.full((3,), 0.25 * 4.0))
    assert int(ema.num_batches_tracked) == 7  # integer buffers are copied


def test_mixed_precision_training_runs_and_may_be_switched_on_resume(tmp_path, monkeypatch):
    """--amp: the forward pass under bfloat16 autocast (on the CPU here, as on a GPU), the loss
    in float32; it is how a run goes, not its recipe, so a resumed run may switch it."""
    torch = pytest.importorskip("torch")
    from export.train import loop
    from pipeline.cli import main

    monkeypatch.setattr(loop, "native_bfloat16", lambda device: True)  # any CPU can emulate it

    out = str(tmp_path / "run")
    recipe = ["--width", "0.25", "--steps", "2", "--batch", "1", "--crop", "64", "--warmup", "1",
              "--workers", "0", "--threads", "1", "--save-every", "1", "--log-every", "1"]
    assert main(["train", "--out", out, *recipe, "--amp"]) == 0
    ck = torch.load(str(tmp_path / "run" / "last.pt"), weights_only=True)
    assert ck["config"]["amp"] is True and ck["step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert all(v.dtype != torch.bfloat16 for v in ck["model"].values())  # weights stay float32
    plain = str(tmp_path / "plain")
    assert main(["train", "--out", plain, *recipe]) == 0
    assert main(["train", "--out", plain, "--resume", "--amp", "--workers", "0", "--threads", "1"]) == 0
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["amp"] is True


def test_amp_trains_in_float32_where_bfloat16_would_be_emulated(tmp_path, monkeypatch, capsys):
    """A CPU without AVX512-BF16 / AMX (or a GPU before Ampere) emulates bfloat16 several times
    slower than float32: --amp then says so in one line and the forward pass runs in float32."""
    torch = pytest.importorskip("torch")
    from export.train import loop
    from pipeline.cli import main

    enabled, autocast = [], torch.autocast

    def recording_autocast(*args, **kwargs):
        enabled.append(kwargs.get("enabled", True))
        return autocast(*args, **kwargs)

    monkeypatch.setattr(loop, "native_bfloat16", lambda device: False)
    monkeypatch.setattr(loop.torch, "autocast", recording_autocast)
    out = str(tmp_path / "run")
    assert main(["train", "--out", out, "--width", "0.25", "--steps", "2", "--batch", "1",
                 "--crop", "64", "--warmup", "1", "--workers", "0", "--threads", "1", "--amp"]) == 0
    assert enabled == [False, False]
    assert "no native bfloat16" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["amp"] is True  # the recipe keeps it


def test_native_bfloat16_asks_the_hardware():
    torch = pytest.importorskip("torch")
    from export.train.loop import native_bfloat16

    assert isinstance(native_bfloat16(torch.device("cpu")), bool)


FORKED_AFTER_CV2 = """
import sys, cv2, numpy as np, torch
from export.train.config import TrainConfig
from export.train.loop import train
image = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), np.uint8)
for _ in range(3):  # OpenCV's thread pool busy in this process before the loader forks
    cv2.warpAffine(image, np.float32([[1.1, 0, 0], [0, 1.1, 0]]), (1500, 1500))
train(TrainConfig(out_dir=sys.argv[1], width=0.25, steps=2, batch=2, crop=64, warmup=1,
                  workers=1, threads=1, log_every=1))
"""


def test_loader_workers_start_after_opencv_ran_threads_in_this_process(tmp_path):
    pytest.importorskip("torch")
    # Forked while OpenCV's thread pool was up, a worker's cv2.setNumThreads waited forever (a
    # second `dbrt train` in one process, e.g. the GPU run after its calibration run, hung).
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", FORKED_AFTER_CV2, str(tmp_path / "run")], cwd=repo,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("step ")]
    assert len(lines) == 2 and all(" s/it data " in line and "% eta " in line for line in lines)


def test_resume_refuses_a_config_that_is_not_an_object():
    from export.train.config import TrainConfig

    with pytest.raises(TypeError, match="expected a JSON object"):
        TrainConfig.from_dict([1])


def test_the_shipped_record_keeps_no_local_folders():
    from export.train.ship import portable_config

    cfg = {"out_dir": "/home/me/runs/s3", "data": ["/srv/data/real/ic15_tr=0.5", "synth=0.25"],
           "init": None, "steps": 10}
    assert portable_config(cfg) == {"out_dir": "s3", "data": ["real/ic15_tr=0.5", "synth=0.25"],
                                    "init": None, "steps": 10}
    relative = {"out_dir": "runs/s3", "data": ["data/real/ic15_tr=0.5"], "init": "runs/s2/best.pt",
                "scene": "mixed"}
    assert portable_config(relative) == {"out_dir": "s3", "data": ["real/ic15_tr=0.5"], "init": "best.pt",
                                         "scene": "mixed"}
    shipped = json.loads((Path(__file__).parents[1] / "export/assets/dbnet_default.json").read_text())
    assert "/" not in shipped["train_config"]["out_dir"]
    assert not any(str(d).startswith("/") for d in shipped["train_config"]["data"])


def _tiny_run(tmp_path, **changes):
    from export.train.config import TrainConfig

    settings = dict(out_dir=str(tmp_path / "run"), width=0.25, steps=6, batch=1, crop=64,
                    workers=0, threads=1, log_every=1, save_every=100, keep_every=100)
    settings.update(changes)
    return TrainConfig(**settings)


def test_ctrl_c_saves_a_resumable_checkpoint_after_the_step(tmp_path, capsys):
    import os
    import signal

    torch = pytest.importorskip("torch")
    from export.train.loop import train

    def interrupt_at_validation(model):
        os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C, mid-run
        return {"hmean": 0.1}

    with pytest.raises(KeyboardInterrupt):
        train(_tiny_run(tmp_path, val_every=3), interrupt_at_validation)
    assert torch.load(str(tmp_path / "run" / "last.pt"), weights_only=True)["step"] == 3
    assert "interrupted at step 3" in capsys.readouterr().out
    train(_tiny_run(tmp_path, resume=True, val_every=3), lambda m: {"hmean": 0.2})
    log = capsys.readouterr().out
    assert "resumed from step 3" in log and "step 6/6" in log
    assert torch.load(str(tmp_path / "run" / "last.pt"), weights_only=True)["step"] == 6


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    pytest.importorskip("torch")
    from engine.errors import ModelError
    from export.train.loop import train

    train(_tiny_run(tmp_path, steps=1))
    with pytest.raises(ModelError, match="holds a run already: continue it with --resume"):
        train(_tiny_run(tmp_path, steps=1))


def test_progress_after_a_resume_averages_its_own_steps_and_snapshots_follow_keep_every(tmp_path, capsys):
    pytest.importorskip("torch")
    from export.train.loop import train

    train(_tiny_run(tmp_path, steps=4, log_every=2, save_every=1, keep_every=3, time_limit=1e-6))
    first = capsys.readouterr().out
    assert "time limit reached at step 1" in first
    train(_tiny_run(tmp_path, steps=4, log_every=2, save_every=1, keep_every=3, resume=True))
    resumed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step 2/4")]
    assert resumed and (tmp_path / "run" / "step_000003.pt").exists()
    train(_tiny_run(tmp_path, out_dir=str(tmp_path / "whole"), steps=4, log_every=1))
    whole = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step 2/4")]
    loss = [float(line.split(" loss ")[1].split()[0]) for line in (resumed[0], whole[0])]
    assert loss[0] == pytest.approx(loss[1], rel=1e-3)  # step 2's own loss, not half of it


def test_a_run_resumes_from_another_working_folder(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["synth", "--dataset", "ds", "--count", "2", "--size", "128x96"]) == 0
    common = ["--width", "0.25", "--crop", "64", "--batch", "1", "--steps", "3", "--workers", "0",
              "--threads", "1"]
    assert main(["train", "--out", "run", "--data", "ds=1", "--data", "synth=1", *common,
                 "--time-limit", "0.000001"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert all(d == "synth=1" or d.startswith(str(tmp_path)) for d in saved["data"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--out", str(tmp_path / "run"), "--resume"]) == 0


def test_init_takes_a_mhliao_style_checkpoint_as_export_does(tmp_path):
    torch = pytest.importorskip("torch")
    from export.model import DBNet
    from export.train.weights import load_weights

    shipped = Path(__file__).parents[1] / "export" / "assets" / "dbnet_default.pt"
    state = torch.load(str(shipped), weights_only=True)
    wrapped = {"state_dict": {f"model.module.{k}": v for k, v in state.items()
                              if not k.endswith(".num_batches_tracked")}}
    torch.save(wrapped, str(tmp_path / "mh.pth"))
    model = DBNet("resnet18", width=0.5)
    load_weights(model, tmp_path / "mh.pth")
    key = next(k for k in state if state[k].is_floating_point())
    assert torch.equal(model.state_dict()[key], state[key].float())


def test_an_untuned_checkpoint_ships_and_exports_with_its_init_models_thresholds(tmp_path):
    pytest.importorskip("torch")
    import torch
    from export.checkpoint import trained_post_settings

    shipped = Path(__file__).parents[1] / "export" / "assets" / "dbnet_default.pt"
    spec = json.loads(shipped.with_suffix(".json").read_text())["spec"]["post"]
    torch.save({"model": {}, "step": 1, "config": {"init": str(shipped)}}, str(tmp_path / "a.pt"))
    assert trained_post_settings(tmp_path / "a.pt") == {k: spec[k] for k in
                                                       ("thresh", "box_thresh", "unclip_ratio")}
    tuned = {"hmean": 0.5, "thresh": 0.25, "box_thresh": 0.5, "unclip_ratio": 1.1}
    torch.save({"model": {}, "config": {"init": str(shipped)}, "validation": tuned}, str(tmp_path / "b.pt"))
    assert trained_post_settings(tmp_path / "b.pt") == {"thresh": 0.25, "box_thresh": 0.5, "unclip_ratio": 1.1}


def test_a_validation_that_fails_is_redone_on_resume_and_best_pt_follows_its_validation(tmp_path):
    """The step's last.pt is saved before validating; a validation that fails (or a run killed
    during it) is run first on --resume; scores on another validation start best.pt over."""
    pytest.importorskip("torch")
    import dataclasses

    from engine.errors import DbrtError
    from export.train.loop import train

    scores = iter([0.5, RuntimeError("disk gone"), 0.4, RuntimeError("again"), 0.3, 0.9])

    def validate(model):
        score = next(scores)
        if isinstance(score, Exception):
            raise score
        return {"hmean": score}

    cfg = _tiny_run(tmp_path, steps=8, val_every=2, val="A")
    with pytest.raises(DbrtError, match="validation at step 4 failed: disk gone"):
        train(cfg, validate)
    out = Path(cfg.out_dir)
    assert torch_load(out / "last.pt")["step"] == 4
    with pytest.raises(DbrtError, match="validation at step 6 failed: again"):
        train(dataclasses.replace(cfg, resume=True), validate)  # step 4 first, then 6
    assert torch_load(out / "best.pt")["validation"]["hmean"] == 0.5
    # validated on another set from now on: best.pt starts over there
    train(dataclasses.replace(cfg, resume=True, val="B"), validate)
    lines = [json.loads(x) for x in (out / "val.jsonl").read_text().splitlines()]
    assert [(x["step"], x["hmean"], x["on"]["val"]) for x in lines] == [
        (2, 0.5, "A"), (4, 0.4, "A"), (6, 0.3, "B"), (8, 0.9, "B")]
    best = torch_load(out / "best.pt")
    assert (best["step"], best["validation"]["hmean"], best["validation"]["on"]["val"]) == (8, 0.9, "B")


def torch_load(path):
    import torch

    return torch.load(str(path), weights_only=True)


def test_validation_scores_at_the_thresholds_the_checkpoint_ships_with(tmp_path):
    """A fine-tune of the shipped model validated at DB's defaults while export and ship use
    the --init model's thresholds: best.pt was chosen at settings it never runs with."""
    pytest.importorskip("torch")
    from export.synth.dataset import write_dataset
    from pipeline.cli import main

    shipped = Path(__file__).parents[1] / "export" / "assets" / "dbnet_default.pt"
    post = json.loads(shipped.with_suffix(".json").read_text())["spec"]["post"]
    write_dataset(tmp_path / "val", 1, height=128, width=192)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--init", str(shipped), "--steps", "1", "--batch", "1",
                 "--crop", "64", "--warmup", "1", "--workers", "0", "--threads", "1", "--lr", "1e-9",
                 "--val", str(tmp_path / "val")]) == 0
    line = json.loads((out / "val.jsonl").read_text().splitlines()[-1])
    assert {k: line[k] for k in ("thresh", "box_thresh", "unclip_ratio")} == {
        k: post[k] for k in ("thresh", "box_thresh", "unclip_ratio")}


def test_an_unreadable_validation_image_stops_the_run_before_it_trains(tmp_path, capsys):
    pytest.importorskip("torch")
    from export.synth.dataset import write_dataset
    from pipeline.cli import main

    write_dataset(tmp_path / "val", 2, height=128, width=192)
    broken = sorted((tmp_path / "val" / "images").iterdir())[-1]
    broken.write_bytes(b"not an image")
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--width", "0.25", "--steps", "2", "--batch", "1",
                 "--crop", "64", "--workers", "0", "--threads", "1", "--val", str(tmp_path / "val")]) == 2
    err = capsys.readouterr().err
    assert broken.name in err and err.count("\n") == 1 and not out.exists()


def test_a_run_that_cannot_start_leaves_no_config_behind(tmp_path, capsys):
    from pipeline.cli import main

    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--width", "0.25", "--steps", "2", "--batch", "1",
                 "--crop", "64", "--workers", "0", "--threads", "1",
                 "--data", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (out / "config.json").exists()


def test_a_fine_tune_keeps_the_shrink_ratio_its_init_model_learnt(tmp_path, capsys):
    """The shipped model was trained at shrink ratio 0.3; the README's fine-tune command trained
    at the default 0.4 without a word, changing what the probability map means."""
    pytest.importorskip("torch")
    from pipeline.cli import main

    shipped = Path(__file__).parents[1] / "export" / "assets" / "dbnet_default.pt"
    common = ["--init", str(shipped), "--steps", "1", "--batch", "1", "--crop", "64",
              "--warmup", "1", "--workers", "0", "--threads", "1"]
    assert main(["train", "--out", str(tmp_path / "a")] + common) == 0
    assert json.loads((tmp_path / "a" / "config.json").read_text())["shrink_ratio"] == 0.3
    assert "--shrink-ratio 0.3, as dbnet_default.pt was trained" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "b"), "--shrink-ratio", "0.4"] + common) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["shrink_ratio"] == 0.4


def test_a_validation_log_cut_short_still_resumes(tmp_path, capsys):
    """A last line cut short (killed mid-append) made --resume a JSONDecodeError traceback
    until the file was edited by hand; the next record would have joined the broken line."""
    pytest.importorskip("torch")
    from export.train.weights import read_validation_log

    log = tmp_path / "val.jsonl"
    log.write_text('{"step": 100, "hmean": 0.5}\nnot json\n{"step": 200, "hm')
    assert read_validation_log(log) == [{"step": 100, "hmean": 0.5}]
    assert log.read_text().endswith("not json\n")  # the partial line cut off
    assert "line 2: not a validation record, skipped" in capsys.readouterr().err
    assert read_validation_log(tmp_path / "none.jsonl") == []


@pytest.mark.parametrize("argv, warmup, said", [
    (["--steps", "40"], 4, False),           # the default: at most a tenth of the run
    (["--steps", "20000"], 300, False),
    (["--steps", "40", "--warmup", "40"], 40, True),
    (["--steps", "40", "--warmup", "10"], 10, False),
])
def test_warm_up_leaves_room_for_the_decay(tmp_path, capsys, argv, warmup, said):
    """With the default 300 warm-up steps a run of 300 steps or fewer ended at its peak rate."""
    import argparse

    from pipeline.commands import train as train_cmd

    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "run"), *argv])
    assert train_cmd._warmup(args) == warmup
    assert ("never decays" in capsys.readouterr().err) == said


def test_a_run_killed_while_it_rewrites_config_json_still_resumes(tmp_path, monkeypatch):
    """Every start of a run rewrites OUT/config.json, which --resume reads: a kill landing in
    that write left half a file, and the run could not be resumed."""
    pytest.importorskip("torch")
    from export.train.loop import train
    from pipeline.cli import main

    train(_tiny_run(tmp_path, steps=4, time_limit=1e-6))  # stops after step 1
    write_text = Path.write_text

    def killed_midway(self, text, *args, **kwargs):
        if self.name.startswith("config.json"):
            write_text(self, text[:len(text) // 2], *args, **kwargs)
            raise KeyboardInterrupt  # a second Ctrl-C, or kill -9, in the middle of the write
        return write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        train(_tiny_run(tmp_path, steps=4, resume=True))
    monkeypatch.undo()
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--time-limit", "0"]) == 0
    assert torch_load(tmp_path / "run" / "last.pt")["step"] == 4


def test_resume_refuses_an_init_it_would_not_apply(tmp_path, capsys):
    """--resume --init OTHER.pt was accepted and silently ignored (the weights come from
    last.pt): the user believed the run now started from OTHER.pt."""
    pytest.importorskip("torch")
    from export.train.loop import train
    from pipeline.cli import main

    train(_tiny_run(tmp_path, steps=2, time_limit=1e-6))
    shipped = Path(__file__).parents[1] / "export" / "assets" / "dbnet_default.pt"
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--init", str(shipped)]) == 2
    err = capsys.readouterr().err
    assert f"--init {shipped}: --resume continues the run" in err and "(started from new weights)" in err
    assert torch_load(tmp_path / "run" / "last.pt")["step"] == 1


def test_the_time_left_counts_the_validations_still_to_come(tmp_path, capsys, monkeypatch):
    """Validation time was left out of the ETA altogether: a fine-tune validating 100 photos
    every 250 steps said 'eta 10 min' with half an hour of validations ahead."""
    pytest.importorskip("torch")
    import re
    import time

    from export.train.loop import train

    real_time, validation_took = time.time, [0.0]

    def validate(model):
        validation_took[0] += 1000.0  # each validation takes 1000 s on this clock
        return {"hmean": 0.5}

    monkeypatch.setattr(time, "time", lambda: real_time() + validation_took[0])
    train(_tiny_run(tmp_path, steps=6, val_every=2), validate)
    eta = {int(m[1]): float(m[2]) for m in re.finditer(r"^step (\d)/6 .* eta ([\d.]+) min$",
                                                       capsys.readouterr().out, re.M)}
    # after step 2's validation: step 4's and the final one to come, 1000 s each
    assert eta[3] == pytest.approx(2000 / 60, abs=0.5) and eta[5] == pytest.approx(1000 / 60, abs=0.5)
    assert eta[1] < 1  # none measured yet


def test_a_second_sigterm_stops_at_once_and_says_it_was_terminated(tmp_path, capsys):
    """The second signal raised a bare KeyboardInterrupt: `dbrt train` exited 130
    ('interrupted') for a service manager's SIGTERM, where the first one exits 143."""
    pytest.importorskip("torch")
    import os
    import signal

    from export.train.loop import train

    def terminated_twice(model):
        os.kill(os.getpid(), signal.SIGTERM)  # the step's validation goes on after the first
        os.kill(os.getpid(), signal.SIGTERM)
        return {"hmean": 0.1}

    with pytest.raises(KeyboardInterrupt) as stopped:
        train(_tiny_run(tmp_path, val_every=2), terminated_twice)
    assert stopped.value.signum == signal.SIGTERM
    assert torch_load(tmp_path / "run" / "last.pt")["step"] == 2  # saved before validating


class _WorkerKilledAt:
    """A training dataset whose loader process is killed (as by the kernel's OOM killer) when it
    comes to sample `at`."""

    def __init__(self, inner, at):
        import os

        self.inner, self.at, self.main = inner, at, os.getpid()

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        import os
        import signal

        if i == self.at and os.getpid() != self.main:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner[i]


def test_a_killed_loader_worker_is_one_error_and_the_steps_done_are_saved(tmp_path, monkeypatch):
    """A worker killed for memory ended the run with two RuntimeError tracebacks, and every step
    since the last save (up to --save-every 500) was lost."""
    pytest.importorskip("torch")
    from engine.errors import DbrtError
    from export.train import loop

    make_dataset = loop.make_dataset
    monkeypatch.setattr(loop, "make_dataset", lambda cfg: _WorkerKilledAt(make_dataset(cfg), 3))
    with pytest.raises(DbrtError, match=r"a data-loader worker stopped .*: killed for lack of memory"):
        loop.train(_tiny_run(tmp_path, workers=1))
    # the batches the worker had made before it died, not always all of them, were trained on
    assert 1 <= torch_load(tmp_path / "run" / "last.pt")["step"] <= 3
    loop.train(_tiny_run(tmp_path, resume=True))  # and it goes on from there
    assert torch_load(tmp_path / "run" / "last.pt")["step"] == 6


def test_an_init_that_is_no_checkpoint_is_one_line_naming_the_flag(tmp_path, capsys):
    """--init my_model/dbnet.onnx said first that the fine-tune takes the ONNX's shrink ratio
    (read from the record beside it), then that the file is no checkpoint, without the flag;
    --init RUN_FOLDER was called 'not found'."""
    pytest.importorskip("torch")
    from pipeline.cli import main

    model = tmp_path / "my_model"
    model.mkdir()
    (model / "dbnet.onnx").write_bytes(b"\x08\x07onnx")
    (model / "dbnet.json").write_text(json.dumps({"train_config": {"shrink_ratio": 0.3}}))
    run = ["train", "--out", str(tmp_path / "run"), "--width", "0.25", "--crop", "64", "--steps", "1"]
    assert main([*run, "--init", str(model / "dbnet.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dbrt train: error: --init: {model / 'dbnet.onnx'} is not a PyTorch checkpoint")
    assert len(err.splitlines()) == 1
    assert main([*run, "--init", str(model)]) == 2
    assert f"--init: checkpoint {model} is a folder" in capsys.readouterr().err
