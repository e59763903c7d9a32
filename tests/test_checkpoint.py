"""Checkpoint loading: MhLiao layouts, wrappers, strictness, architecture inference."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from engine.errors import ModelError  # noqa: E402
from export.checkpoint import (infer_architecture, load_checkpoint,  # noqa: E402
                               model_from_checkpoint, read_state_dict)
from export.model import DBNet  # noqa: E402

torch.set_num_threads(1)


def _model(arch="resnet18", dcn=False, seed=0):
    torch.manual_seed(seed)
    model = DBNet(arch, dcn=dcn, width=0.25)
    for m in model.modules():  # non-trivial BN statistics and offsets, so a bad load shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
        if isinstance(m, torch.nn.Conv2d) and m.out_channels == 27:
            torch.nn.init.normal_(m.weight, std=0.05)
    return model.eval()


def _mhliao(model, unused=True):
    """A state dict as MhLiao/DB's trainer saves it: DataParallel prefix, and the modules their
    ResNet creates but never calls (ImageNet classifier `fc`, 2048->256 `smooth` conv)."""
    state = {f"model.module.{k}": v for k, v in model.state_dict().items()}
    if unused:
        state["model.module.backbone.fc.weight"] = torch.zeros(1000, 128)
        state["model.module.backbone.fc.bias"] = torch.zeros(1000)
        state["model.module.backbone.smooth.weight"] = torch.zeros(256, 2048, 1, 1)
        state["model.module.backbone.smooth.bias"] = torch.zeros(256)
    return state


@pytest.mark.parametrize("wrap", [
    lambda s: s,
    lambda s: {"state_dict": s, "epoch": 7},
    lambda s: {"model": s, "optimizer": {"lr": 0.1}},
    lambda s: {"model": {"state_dict": s}},
])
def test_mhliao_dcn_checkpoint_loads_strictly_and_matches(tmp_path, wrap):
    src = _model("resnet18", dcn=True)
    path = tmp_path / "db.pth"
    torch.save(wrap(_mhliao(src)), path)
    model, report = model_from_checkpoint(path)
    assert (model.arch, model.dcn, model.width) == ("resnet18", True, 0.25)
    assert report.prefix == "model.module."
    assert report.dropped == ["backbone.fc.bias", "backbone.fc.weight", "backbone.smooth.bias",
                              "backbone.smooth.weight"]
    assert not report.missing and not report.unexpected
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x), src(x))


@pytest.mark.parametrize("prefix", ["", "module.", "model."])
def test_plain_and_prefixed_state_dicts(prefix):
    src = _model()
    state = {prefix + k: v for k, v in src.state_dict().items()}
    dst = DBNet("resnet18", width=0.25)
    report = load_checkpoint(dst, state)
    assert report.prefix == prefix
    assert report.loaded == len(src.state_dict())
    key = "backbone.bn1.running_var"
    assert torch.equal(dst.state_dict()[key], src.state_dict()[key])


def test_missing_and_unexpected_keys_are_listed():
    state = _mhliao(_model(), unused=False)
    del state["model.module.decoder.in5.weight"]
    state["model.module.decoder.extra.weight"] = torch.zeros(3)
    pattern = r"missing keys: decoder\.in5\.weight.*unexpected keys: decoder\.extra\.weight"
    with pytest.raises(ModelError, match=pattern):
        load_checkpoint(DBNet("resnet18", width=0.25), state)


def test_source_unused_keys_are_reported_in_one_line(tmp_path):
    path = tmp_path / "ic15_resnet18"
    torch.save(_mhliao(_model()), path)
    _, report = model_from_checkpoint(path)
    line = [note for note in report.notes() if "smooth" in note]
    assert len(line) == 1 and "backbone.fc.weight" in line[0] and "never uses" in line[0]
    assert "\n" not in str(report)


@pytest.mark.parametrize("extra", ["backbone.smooth.running_mean", "backbone.fc.extra",
                                   "backbone.smooth2.weight", "decoder.smooth.weight"])
def test_only_the_named_unused_keys_are_accepted(extra):
    state = _mhliao(_model())
    state[f"model.module.{extra}"] = torch.zeros(3)
    with pytest.raises(ModelError, match=f"unexpected keys: {extra}"):
        load_checkpoint(DBNet("resnet18", width=0.25), state)


def test_non_strict_reports_instead_of_failing():
    state = _model().state_dict()
    del state["decoder.out2.weight"]
    report = load_checkpoint(DBNet("resnet18", width=0.25), state, strict=False)
    assert report.missing == ["decoder.out2.weight"]


def test_shape_mismatch_names_the_key():
    state = _model().state_dict()
    pattern = r"shape mismatch: .*backbone\.conv1\.weight \(16, 3, 7, 7\) vs model \(32, 3, 7, 7\)"
    with pytest.raises(ModelError, match=pattern):
        load_checkpoint(DBNet("resnet18", width=0.5), state)


def test_old_checkpoint_without_bn_counters_loads():
    state = {k: v for k, v in _model().state_dict().items() if not k.endswith("num_batches_tracked")}
    assert load_checkpoint(DBNet("resnet18", width=0.25), state).loaded == len(state)


@pytest.mark.parametrize("arch,dcn", [("resnet18", False), ("resnet34", True), ("resnet50", False),
                                      ("resnet50", True)])
def test_architecture_inferred_from_keys(arch, dcn):
    state = _mhliao(DBNet(arch, dcn=dcn, width=0.25))
    found = infer_architecture(state)
    assert (found["arch"], found["dcn"], found["width"]) == (arch, dcn, 0.25)


@pytest.mark.parametrize("width", [0.3, 0.4, 0.6, 0.8, 0.9, 1.1])
def test_every_width_is_read_back_as_trained(width):
    """Each stage's channels are rounded on their own, so the stem alone misread most widths
    (0.3 as 0.296875: `dbrt export` of such a run failed with a shape mismatch)."""
    model = DBNet("resnet18", width=width)
    assert infer_architecture(model.state_dict())["width"] == width
    for asked in (None, width):
        rebuilt, report = model_from_checkpoint(model.state_dict(), width=asked)
        assert report.loaded == len(model.state_dict()) and rebuilt.width == width


def test_a_teacher_without_a_training_config_gets_its_own_width(tmp_path):
    from export.train.weights import load_teacher

    path = tmp_path / "shipped_like.pt"
    torch.save(DBNet("resnet18", width=0.3).state_dict(), path)
    teacher = load_teacher(path, torch.device("cpu"))
    assert teacher.width == 0.3


def test_requested_architecture_conflict_is_explained(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(_model().state_dict(), path)
    with pytest.raises(ModelError, match="arch=resnet34 but the checkpoint has arch=resnet18"):
        model_from_checkpoint(path, arch="resnet34")


def test_a_checkpoint_cut_short_is_called_damaged_not_unsafe(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save(_model().state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match="damaged or truncated") as info:
        read_state_dict(path)
    assert "trusted code" not in str(info.value)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _model().state_dict(), "cfg": _Unsafe()}, path)
    with pytest.raises(ModelError, match="weights_only=True"):
        read_state_dict(path)


def test_a_whole_pickled_model_is_refused_naming_its_class(tmp_path):
    """torch.save(model): the error named torch's advice ('two options', in terminal bold), not
    what the file holds."""
    path = tmp_path / "whole.pt"
    torch.save(torch.nn.Linear(3, 4), path)
    with pytest.raises(ModelError, match="weights_only=True") as info:
        read_state_dict(path)
    said = str(info.value)
    assert "it pickles torch.nn.modules.linear.Linear" in said
    assert "\x1b" not in said and "two options" not in said and "\n" not in said


def test_weights_with_nan_are_refused_naming_the_tensor(tmp_path):
    """A diverged training run's checkpoint loaded without a word: the export then failed its
    parity by 'nan', or with --no-parity wrote a model without a box on any image."""
    state = _model().state_dict()
    state["decoder.in5.weight"][0, 0, 0, 0] = float("nan")
    state["backbone.bn1.running_var"][1] = float("inf")
    with pytest.raises(ModelError, match=r"NaN or infinite values in backbone.bn1.running_var, "
                                         r"decoder.in5.weight"):
        load_checkpoint(_model(), state)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(ModelError, match="no state dict"):
        read_state_dict(path)
    with pytest.raises(ModelError, match="not found"):
        read_state_dict(tmp_path / "absent.pth")


class _Unsafe:
    """Any custom class: weights_only loading must refuse to unpickle it."""


def test_sidecar_spec_next_to_checkpoint(tmp_path):
    import json

    from dbnet.spec import ModelSpec
    from export.checkpoint import sidecar_spec

    path = tmp_path / "db.pt"
    torch.save(_model().state_dict(), path)
    assert sidecar_spec(path) is None
    spec = ModelSpec(arch="dbnet_resnet18_w0.25").replace(box_thresh=0.5, limit_side=640)
    (tmp_path / "db.json").write_text(json.dumps({"checkpoint_step": 9, "spec": json.loads(spec.to_json())}))
    assert sidecar_spec(path) == spec
    (tmp_path / "db.json").write_text("{not json")
    with pytest.raises(ModelError, match="db.json"):
        sidecar_spec(path)


def test_sidecar_calibration_method(tmp_path):
    import json

    from export.checkpoint import sidecar_calib_method

    path = tmp_path / "db.pt"
    torch.save(_model().state_dict(), path)
    assert sidecar_calib_method(path) is None                       # no record
    (tmp_path / "db.json").write_text(json.dumps({"checkpoint_step": 9}))
    assert sidecar_calib_method(path) is None                       # a record that chose none
    (tmp_path / "db.json").write_text(json.dumps({"int8_calibration": {"method": "entropy"}}))
    assert sidecar_calib_method(path) == "entropy"
    (tmp_path / "db.json").write_text(json.dumps({"int8_calibration": {"method": "kl"}}))
    with pytest.raises(ModelError, match="db.json: int8_calibration method 'kl'"):
        sidecar_calib_method(path)


def test_shipped_record_names_a_calibration_method():
    from export.checkpoint import sidecar_calib_method
    from export.quantize import CALIB_METHODS

    assert sidecar_calib_method(Path(__file__).parents[1] / "export/assets/dbnet_default.pt") in CALIB_METHODS


def test_a_chain_of_fine_tunes_keeps_its_thresholds_and_shrink_ratio(tmp_path):
    """A fine-tune from a run's checkpoint trained at DB's 0.4 while its --init learnt 0.3 (only
    a record's train_config was read), and its last.pt exported DB's default thresholds while
    best.pt, the same weights, had the validation's (only a record was followed)."""
    import argparse

    import torch

    from export.checkpoint import shipping_post, trained_shrink_ratio
    from pipeline.commands.train import _with_init_target

    first = tmp_path / "ft1" / "best.pt"
    first.parent.mkdir()
    torch.save({"config": {"shrink_ratio": 0.3}, "step": 5,
                "validation": {"thresh": 0.25, "box_thresh": 0.35, "unclip_ratio": 1.5}}, first)
    last = tmp_path / "ft2" / "last.pt"
    last.parent.mkdir()
    torch.save({"config": {"shrink_ratio": 0.3, "init": str(first)}, "step": 2}, last)
    assert shipping_post(last) == {"thresh": 0.25, "box_thresh": 0.35, "unclip_ratio": 1.5}
    assert trained_shrink_ratio(last) == 0.3
    from export.train.config import TrainConfig

    cfg = TrainConfig(out_dir=str(tmp_path / "ft3"), init=str(last))  # DB's 0.4 by default
    with_init = _with_init_target(cfg, argparse.Namespace(given=set()))
    assert with_init.shrink_ratio == 0.3
    torch.save({"config": {"init": str(tmp_path / "loop.pt")}}, tmp_path / "loop.pt")
    assert shipping_post(tmp_path / "loop.pt") == {}  # an --init that names itself ends


def test_shipping_refuses_bad_settings_before_writing_anything(tmp_path):
    """--box-thresh 7 raised a traceback after dbnet.pt was overwritten, leaving it beside the
    old dbnet.json and dbnet.onnx; a --metrics file that is not there was a traceback too.
    The --out folder ship made is gone again (nothing was written there)."""
    from export.train.ship import WEIGHTS, main

    out = tmp_path / "ship"
    with pytest.raises(SystemExit, match=r"^error: .*box_thresh"):
        main([str(WEIGHTS), "--out", str(out), "--box-thresh", "7"])
    assert not out.exists()
    out.mkdir()  # a folder that was there before stays, empty
    with pytest.raises(SystemExit, match=r"^error: .*box_thresh"):
        main([str(WEIGHTS), "--out", str(out), "--box-thresh", "7"])
    assert out.is_dir() and not any(out.iterdir())
    with pytest.raises(SystemExit, match=r"^error: --metrics .*none.json: No such file"):
        main([str(WEIGHTS), "--out", str(out), "--metrics", str(tmp_path / "none.json")])


def test_a_shipped_model_shipped_again_keeps_what_its_record_says(tmp_path):
    """Its thresholds, training config (the shrink ratio a fine-tune keeps) and INT8
    calibration method were dropped: DB's defaults shipped, the record said nothing more."""
    import json

    from export.train.ship import RECORD, WEIGHTS, main

    assert main([str(WEIGHTS), "--out", str(tmp_path / "again")]) == 0
    old, new = (json.loads(p.read_text()) for p in (RECORD, tmp_path / "again" / "dbnet.json"))
    assert new["spec"]["post"] == old["spec"]["post"]
    assert new["train_config"] == old["train_config"] and new["train_config"]["shrink_ratio"] == 0.3
    assert new["int8_calibration"] == old["int8_calibration"]
    assert new["checkpoint_step"] == old["checkpoint_step"] == 750
