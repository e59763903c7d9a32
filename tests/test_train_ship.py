"""`python -m export.train.ship`: what it writes where, and what it leaves alone when it fails."""
import json

import pytest

torch = pytest.importorskip("torch")


def _tiny_state_dict(path, width=0.25):
    from export.model import DBNet

    torch.manual_seed(0)
    torch.save(DBNet("resnet18", width=width).state_dict(), str(path))
    return path


def _tiny_checkpoint(path, seed=0):
    """A training checkpoint's layout: the weights under "model", the run's config beside them."""
    from export.model import DBNet

    torch.manual_seed(seed)
    torch.save({"model": DBNet("resnet18", width=0.25).state_dict(), "step": 1,
                "config": {"arch": "resnet18", "width": 0.25}}, str(path))
    return path


def test_a_model_that_fails_its_checks_replaces_nothing(tmp_path, monkeypatch):
    """The fp16 check failed after the weights and the ONNX had been written over the target's
    (with --replace-shipped: the repository's shipped model, its record left describing the old)."""
    from engine.errors import ModelError
    from export.train import ship

    checkpoint = _tiny_checkpoint(tmp_path / "w.pt")
    targets = dict(weights=tmp_path / "m" / "dbnet.pt", onnx_path=tmp_path / "m" / "dbnet.onnx",
                   record=tmp_path / "m" / "dbnet.json")
    ship.ship(checkpoint, {"limit_side": 64}, **targets)
    before = {name: path.read_bytes() for name, path in targets.items()}
    monkeypatch.setattr(ship, "_ort_parity", lambda model, path: 0.5)  # fp16 lost too much
    with pytest.raises(ModelError, match="fp16 storage lost too much"):
        ship.ship(_tiny_checkpoint(tmp_path / "other.pt", seed=1), {"limit_side": 96}, **targets)
    assert {name: path.read_bytes() for name, path in targets.items()} == before
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["dbnet.json", "dbnet.onnx", "dbnet.pt"]


def test_an_out_folder_that_cannot_be_made_is_one_error_line(tmp_path):
    from export.train import ship

    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit, match=r"^error: --out .*a_file/model: cannot create the folder"):
        ship.main([str(_tiny_checkpoint(tmp_path / "w.pt")), "--out", str(tmp_path / "a_file" / "model")])


def test_weights_without_a_training_config_ship_at_their_own_width(tmp_path, capsys):
    """A bare state dict (weights averaged, or saved by other code) was built as ResNet-18
    width 0.5 and refused with advice to pass --arch / --width, flags ship does not have."""
    import json

    from export.train import ship

    checkpoint = _tiny_state_dict(tmp_path / "w025.pt", width=0.25)
    assert ship.main([str(checkpoint), "--out", str(tmp_path / "m"), "--limit-side", "64"]) == 0
    record = json.loads((tmp_path / "m" / "dbnet.json").read_text())
    assert record["spec"]["arch"] == "dbnet_resnet18_w0.25"


def test_every_resize_rule_of_a_model_spec_can_be_shipped(tmp_path):
    """--limit-type offered min and max only: a model meant for PP-OCR's min_at_least rule
    could not be shipped with it."""
    import json

    from export.train.ship import main

    weights = tmp_path / "w.pt"
    _tiny_state_dict(weights)
    assert main([str(weights), "--out", str(tmp_path / "m"), "--limit-type", "min_at_least",
                 "--limit-side", "640"]) == 0
    resize = json.loads((tmp_path / "m" / "dbnet.json").read_text())["spec"]["resize"]
    assert resize["limit_type"] == "min_at_least" and resize["limit_side"] == 640


def test_an_out_models_record_names_its_files_without_the_machines_folders(tmp_path):
    """The record of an --out model named its weights and ONNX by their absolute paths (the
    shipping machine's folders, wrong once the model folder is moved or handed on); the
    shipped assets keep their paths in the repository."""
    from export.train import ship

    checkpoint = _tiny_checkpoint(tmp_path / "w.pt")
    assert ship.main([str(checkpoint), "--out", str(tmp_path / "m"), "--limit-side", "64"]) == 0
    text = (tmp_path / "m" / "dbnet.json").read_text()
    record = json.loads(text)
    assert record["weights"]["path"] == "dbnet.pt" and record["onnx"]["path"] == "dbnet.onnx"
    assert str(tmp_path) not in text and '"/' not in text  # no absolute path at all
    assert ship.recorded_path(ship.ONNX, ship.RECORD) == "pipeline/assets/dbnet_default.onnx"
    assert ship.recorded_path(ship.WEIGHTS, ship.RECORD) == "export/assets/dbnet_default.pt"
    assert ship.recorded_path(tmp_path / "x" / "a.onnx", tmp_path / "y" / "a.json") == "../x/a.onnx"


def _run_checkpoint(run, step, **saved):
    """A checkpoint of a training run in `run`, validated on the folder /data/VAL."""
    from export.model import DBNet

    run.mkdir(exist_ok=True)
    config = {"arch": "resnet18", "width": 0.25, "val": "/data/VAL", "out_dir": str(run)}
    torch.save({"model": DBNet("resnet18", width=0.25).state_dict(), "step": step, "config": config,
                **saved}, str(run / "ck.pt"))
    return run / "ck.pt"


def _scores(step, hmean):
    return {"step": step, "hmean": hmean, "precision": 0.8, "recall": 0.6, "thresh": 0.3,
            "box_thresh": 0.5, "unclip_ratio": 1.2, "images": 7, "seconds": 1.0,
            "on": {"val": "/data/VAL", "val_images": 0, "val_tune": True}}


def test_a_shipped_model_carries_the_validation_its_run_measured_and_info_shows_it(tmp_path, capsys):
    """The record held no validation score of the checkpoint it shipped (only --metrics given
    by hand), so neither the record nor `dbrt info` could say how good the model was: best.pt's
    own, or last.pt's step in the run's val.jsonl, now go into the record (the split by its
    folder's name) and the ONNX, and `dbrt info` shows it; the same model shipped again keeps it."""
    from export.train import ship
    from pipeline.cli import main

    best = _run_checkpoint(tmp_path / "run", 4, validation=_scores(4, 0.7))
    assert ship.main([str(best), "--out", str(tmp_path / "m"), "--limit-side", "64"]) == 0
    record = json.loads((tmp_path / "m" / "dbnet.json").read_text())
    assert record["validation"] == {**{k: v for k, v in _scores(4, 0.7).items() if k != "seconds"},
                                    "on": {"val": "VAL", "val_images": 0, "val_tune": True}}
    capsys.readouterr()
    assert main(["info", str(tmp_path / "m" / "dbnet.onnx")]) == 0
    assert ("validation in training (step 4): hmean 0.700, P 0.800, R 0.600 on VAL (7 images), "
            "at thresh 0.3 / box_thresh 0.5 / unclip 1.2") in capsys.readouterr().out

    last = _run_checkpoint(tmp_path / "last", 6)
    (last.parent / "val.jsonl").write_text("".join(json.dumps(_scores(s, h)) + "\n"
                                                   for s, h in ((3, 0.5), (6, 0.65))) + '{"step": 6, "hm')
    assert ship.main([str(last), "--out", str(tmp_path / "m2"), "--limit-side", "64"]) == 0
    assert json.loads((tmp_path / "m2" / "dbnet.json").read_text())["validation"]["hmean"] == 0.65

    assert ship.main([str(tmp_path / "m" / "dbnet.pt"), "--out", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "dbnet.json").read_text())["validation"] == record["validation"]


def test_a_checkpoint_never_validated_ships_without_a_validation(tmp_path, capsys):
    from export.train import ship
    from pipeline.cli import main

    unscored = _run_checkpoint(tmp_path / "run", 5)
    (unscored.parent / "val.jsonl").write_text(json.dumps(_scores(4, 0.7)) + "\n")  # another step
    assert ship.main([str(unscored), "--out", str(tmp_path / "m"), "--limit-side", "64"]) == 0
    assert "validation" not in json.loads((tmp_path / "m" / "dbnet.json").read_text())
    capsys.readouterr()
    assert main(["info", str(tmp_path / "m" / "dbnet.onnx")]) == 0
    assert "validation" not in capsys.readouterr().out


def test_a_shipped_model_shipped_again_keeps_its_input_size(tmp_path):
    """Shipped again (e.g. with other thresholds), a model kept its record's thresholds but
    went back to short side 736 whatever input rule it was shipped with."""
    from export.train import ship

    weights = _tiny_state_dict(tmp_path / "w.pt")
    assert ship.main([str(weights), "--out", str(tmp_path / "m"), "--limit-side", "96",
                      "--limit-type", "max", "--thresh", "0.2"]) == 0
    assert ship.main([str(tmp_path / "m" / "dbnet.pt"), "--out", str(tmp_path / "m2"),
                      "--box-thresh", "0.5"]) == 0
    spec = json.loads((tmp_path / "m2" / "dbnet.json").read_text())["spec"]
    assert spec["resize"]["limit_side"] == 96 and spec["resize"]["limit_type"] == "max"
    assert spec["post"]["thresh"] == 0.2 and spec["post"]["box_thresh"] == 0.5
    assert ship.main([str(tmp_path / "m" / "dbnet.pt"), "--out", str(tmp_path / "m3"),
                      "--limit-side", "128"]) == 0
    resize = json.loads((tmp_path / "m3" / "dbnet.json").read_text())["spec"]["resize"]
    assert resize == {**resize, "limit_side": 128, "limit_type": "max"}
    assert ship.main([str(weights), "--out", str(tmp_path / "m4")]) == 0  # no record: 736, min
    resize = json.loads((tmp_path / "m4" / "dbnet.json").read_text())["spec"]["resize"]
    assert (resize["limit_side"], resize["limit_type"]) == (736, "min")


def test_a_run_folder_given_as_the_checkpoint_is_named_as_a_folder(tmp_path):
    """`ship runs/ft --out m` said "checkpoint not found: runs/ft" of a folder that is there."""
    from export.train import ship

    _tiny_checkpoint(tmp_path / "best.pt")
    folder = r"^error: .* is a folder: pass one of its checkpoints .*here: best.pt\)$"
    with pytest.raises(SystemExit, match=folder):
        ship.main([str(tmp_path), "--out", str(tmp_path / "m")])
    assert not (tmp_path / "m").exists()


def test_last_pt_ships_at_the_thresholds_its_own_validation_chose(tmp_path):
    """best.pt carries the thresholds its validation chose (--val-tune) and ships with them;
    last.pt, validated at its step too (val.jsonl), shipped with the run's starting ones
    (here DB's defaults), unlike the validation its record now shows."""
    from export.checkpoint import trained_post_settings
    from export.train import ship

    last = _run_checkpoint(tmp_path / "run", 6)
    (last.parent / "val.jsonl").write_text(json.dumps(_scores(6, 0.65)) + "\n")
    assert trained_post_settings(last) == {"thresh": 0.3, "box_thresh": 0.5, "unclip_ratio": 1.2}
    assert ship.main([str(last), "--out", str(tmp_path / "m"), "--limit-side", "64"]) == 0
    record = json.loads((tmp_path / "m" / "dbnet.json").read_text())
    post, validation = record["spec"]["post"], record["validation"]
    assert {k: post[k] for k in ("thresh", "box_thresh", "unclip_ratio")} == {
        k: validation[k] for k in ("thresh", "box_thresh", "unclip_ratio")}


@pytest.mark.parametrize("entry", ['{"hmean": "x"}', '[1]', '{"hmean": 0.5, "on": 3}', "not json"])
def test_info_passes_over_a_validation_entry_ship_does_not_write(entry):
    from pipeline.commands.info import _validation_lines

    assert _validation_lines({"metadata": {"dbrt_validation": entry}}) == []


def test_metrics_put_in_the_record_leave_the_machines_folders_out(tmp_path):
    """--metrics took `dbrt eval --json` as it was, absolute dataset and model paths included."""
    from export.train import ship

    metrics = {"dataset": str(tmp_path / "data" / "VAL"), "hmean": 0.5, "note": "P/R at 736",
               "detector": {"model": str(tmp_path / "m" / "dbnet.onnx")}, "images": [{"image": "a.jpg"}]}
    (tmp_path / "eval.json").write_text(json.dumps(metrics))
    assert ship.main([str(_tiny_checkpoint(tmp_path / "w.pt")), "--out", str(tmp_path / "m"),
                      "--limit-side", "64", "--metrics", str(tmp_path / "eval.json")]) == 0
    record = json.loads((tmp_path / "m" / "dbnet.json").read_text())
    assert record["metrics"] == {**metrics, "dataset": "VAL", "detector": {"model": "dbnet.onnx"}}
