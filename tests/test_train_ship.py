"""`python -m export.train.ship`: what it writes where, and what it leaves alone when it fails."""
import pytest

torch = pytest.importorskip("torch")


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

