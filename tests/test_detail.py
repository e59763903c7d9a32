"""The stride-2 detail projections (`DBNet(detail=True)`, `dbrt train --detail`): a model
fine-tuned from one without them starts as it, and checkpoints say that they have them."""
import pytest

torch = pytest.importorskip("torch")

from export.checkpoint import infer_architecture, model_from_checkpoint  # noqa: E402
from export.model import DBNet  # noqa: E402


def test_zero_projections_give_the_model_without_them():
    torch.manual_seed(0)
    plain = DBNet("resnet18", width=0.25).eval()
    detail = DBNet("resnet18", width=0.25, detail=True).eval()
    missing = detail.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["decoder.detail_binarize.bias", "decoder.detail_binarize.weight",
                               "decoder.detail_thresh.bias", "decoder.detail_thresh.weight"]
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(plain(x), detail(x))
        torch.nn.init.normal_(detail.decoder.detail_binarize.weight, std=0.1)
        assert not torch.equal(plain(x), detail(x))  # and once trained, the stem reaches the map
    detail.train()
    assert {k: tuple(v.shape) for k, v in detail(x).items()} == {k: (1, 1, 96, 128) for k in
                                                                ("binary", "thresh", "thresh_binary")}
    assert detail.arch_name == "dbnet_resnet18_w0.25_detail"


def test_checkpoints_with_projections_rebuild_their_model(tmp_path):
    model = DBNet("resnet18", width=0.25, detail=True)
    assert infer_architecture(model.state_dict())["detail"]
    assert not infer_architecture(DBNet("resnet18", width=0.25).state_dict())["detail"]
    torch.save(model.state_dict(), tmp_path / "d.pt")
    rebuilt, report = model_from_checkpoint(tmp_path / "d.pt")
    assert rebuilt.decoder.detail and report.loaded == len(model.state_dict())


@pytest.mark.slow
def test_train_detail_from_plain_weights_then_ship(tmp_path):
    from train_folders import icdar_folder

    from export.train.config import TrainConfig
    from export.train.loop import train
    from export.train.ship import ship

    torch.set_num_threads(1)
    torch.save(DBNet("resnet18", width=0.25).state_dict(), tmp_path / "plain.pt")
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), data=str(icdar_folder(tmp_path / "icdar")),
                      width=0.25, detail=True, steps=2, batch=2, crop=64, warmup=1, workers=0,
                      threads=1, init=str(tmp_path / "plain.pt"), log_every=1)
    last = train(cfg)
    rec = ship(last, {"limit_side": 64}, weights=tmp_path / "w.pt", onnx_path=tmp_path / "m.onnx",
               record=tmp_path / "w.json")
    assert rec["onnx"]["ort_vs_torch_max_abs"] < 1e-3
    assert model_from_checkpoint(tmp_path / "w.pt")[0].decoder.detail
