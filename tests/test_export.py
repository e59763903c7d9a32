"""ONNX export: DeformConv, BatchNorm folding, metadata, single file, dynamic axes, parity."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from engine.errors import ModelError  # noqa: E402
from dbnet.spec import ModelSpec  # noqa: E402
from export.dcn import ModulatedDeformConv2d, deform_conv2d  # noqa: E402
from export.model import DBNet  # noqa: E402
from export.onnx_export import export_onnx, parity, sample_inputs  # noqa: E402
from export.onnx_graph import fold_batchnorm, get_metadata  # noqa: E402

torch.set_num_threads(1)
SMALL = (1, 3, 64, 96)
PARITY = ((1, 3, 64, 96), (2, 3, 96, 64))


def tiny_dbnet(dcn=False, seed=0):
    torch.manual_seed(seed)
    model = DBNet("resnet18", dcn=dcn, width=0.25)
    for m in model.modules():  # trained-like BN statistics and non-zero offsets
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
        if isinstance(m, torch.nn.Conv2d) and m.out_channels == 27:
            torch.nn.init.normal_(m.weight, std=0.05)
    return model.eval()


def _naive_deform_conv(x, off, mask, w, stride, pad):
    """Direct DCNv2 definition: per output pixel and tap, bilinear sample, zero outside."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    out = np.zeros((n, o) + off.shape[2:])

    def sample(img, y, xx):
        val = np.zeros(c)
        y0, x0 = int(np.floor(y)), int(np.floor(xx))
        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            for xc, wx in ((x0, 1 - (xx - x0)), (x0 + 1, xx - x0)):
                if 0 <= yy < h and 0 <= xc < wd:
                    val += wy * wx * img[:, yy, xc]
        return val

    for b in range(n):
        for i in range(off.shape[2]):
            for j in range(off.shape[3]):
                for k in range(kh * kw):
                    a, bb = divmod(k, kw)
                    y = i * stride - pad + a + off[b, 2 * k, i, j]
                    xx = j * stride - pad + bb + off[b, 2 * k + 1, i, j]
                    out[b, :, i, j] += w[:, :, a, bb] @ (sample(x[b], y, xx) * mask[b, k, i, j])
    return out


@pytest.mark.parametrize("stride", [1, 2])
def test_deform_conv_matches_definition(rng, stride):
    x, w = rng.normal(size=(2, 3, 7, 6)), rng.normal(size=(4, 3, 3, 3))
    out_hw = ((7 - 1) // stride + 1, (6 - 1) // stride + 1)
    off = rng.normal(scale=2.0, size=(2, 18) + out_hw)  # large: many taps fall off the edge
    mask = rng.uniform(size=(2, 9) + out_hw)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    got = deform_conv2d(t(x), t(off), t(mask), t(w), None, stride, 1).numpy()
    np.testing.assert_allclose(got, _naive_deform_conv(x, off, mask, w, stride, 1), atol=1e-10)


def test_deform_conv_zero_offsets_is_plain_conv():
    conv = ModulatedDeformConv2d(3, 5, 3, padding=1, bias=True)
    x = torch.randn(1, 3, 9, 11)
    offset_mask = torch.cat([torch.zeros(1, 18, 9, 11), torch.full((1, 9, 9, 11), 50.0)], 1)
    ref = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(conv(x, offset_mask), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="27 channels"):
        conv(x, offset_mask[:, :18])


def test_fp32_export_opset17_single_file_metadata_and_parity(tmp_path):
    path = tmp_path / "out" / "dbnet.onnx"
    spec = ModelSpec(arch="custom").replace(limit_side=640, thresh=0.25)
    report = export_onnx(tiny_dbnet(), path, opset=17, spec=spec, example_shape=SMALL,
                         parity_shapes=PARITY)
    assert report.passed and report.max_abs <= 1e-4
    assert [p.shape for p in report.parity] == [tuple(s) for s in PARITY]
    assert sorted(p.name for p in path.parent.iterdir()) == ["dbnet.onnx"]  # no .onnx.data
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 17
    assert not [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    assert report.folded_batchnorms >= 1  # the ConvTranspose + BN of the head
    meta = ModelSpec.from_metadata(get_metadata(proto))
    assert meta == spec.replace(precision="fp32")
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]
    assert [proto.graph.input[0].name, proto.graph.output[0].name] == ["images", "prob"]
    assert "PASSED" in str(report)


def test_dcn_export_emits_deform_conv_and_matches(tmp_path):
    model = tiny_dbnet(dcn=True)
    report = export_onnx(model, tmp_path / "dcn.onnx", opset=19, example_shape=SMALL,
                         parity_shapes=PARITY)
    proto = onnx.load(str(tmp_path / "dcn.onnx"))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("DeformConv") == 6 and "BatchNormalization" not in ops
    assert report.max_abs <= 1e-4
    assert ModelSpec.from_metadata(get_metadata(proto)).arch == "dbnet_resnet18_w0.25_dcn"


def test_dcn_below_opset19_is_refused(tmp_path):
    with pytest.raises(ModelError, match="opset >= 19 and TensorRT >= 10.1"):
        export_onnx(tiny_dbnet(dcn=True), tmp_path / "x.onnx", opset=17)
    with pytest.raises(ModelError, match="opset 21 is not supported"):
        export_onnx(tiny_dbnet(), tmp_path / "x.onnx", opset=21)


def test_fold_batchnorm_preserves_output(tmp_path):
    export_onnx(tiny_dbnet(), tmp_path / "raw.onnx", opset=18, example_shape=SMALL,
                parity_shapes=None, fold_bn=False)
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    folded = onnx.load(str(tmp_path / "raw.onnx"))
    assert fold_batchnorm(folded) == sum(n.op_type == "BatchNormalization" for n in raw.graph.node) > 0
    ort = pytest.importorskip("onnxruntime")
    x = sample_inputs(ModelSpec(), [SMALL])[0]
    outs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            .run(None, {"images": x})[0] for m in (raw, folded)]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


def test_parity_detects_a_wrong_graph(tmp_path):
    model = tiny_dbnet()
    export_onnx(model, tmp_path / "a.onnx", opset=17, example_shape=SMALL, parity_shapes=None)
    other = tiny_dbnet(seed=1)
    result = parity(other, str(tmp_path / "a.onnx"), sample_inputs(ModelSpec(), [SMALL]))
    assert result[0].max_abs > 1e-3
    with pytest.raises(ModelError, match="differs from PyTorch"):
        export_onnx(model, tmp_path / "b.onnx", opset=17, example_shape=SMALL,
                    parity_shapes=[SMALL], atol=0.0)


def test_deform_conv_gradients(rng):
    """Training DCN models needs gradients w.r.t. input, offsets, mask and weight."""
    t = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)  # noqa: E731
    x, w = t(rng.normal(size=(1, 2, 5, 5))), t(rng.normal(size=(3, 2, 3, 3)))
    off = t(rng.uniform(-1.3, 1.3, size=(1, 18, 5, 5)) + 0.37)  # away from integer kinks
    mask = t(rng.uniform(size=(1, 9, 5, 5)))
    assert torch.autograd.gradcheck(lambda *a: deform_conv2d(a[0], a[1], a[2], a[3], None, 1, 1),
                                    (x, off, mask, w), eps=1e-6, atol=1e-5)


def test_mhliao_dcn_checkpoint_exports_from_cli(tmp_path, capsys):
    """A MhLiao-layout DCN checkpoint (DataParallel prefix, classifier keys) -> dbrt export:
    strict load, opset 19 chosen for DeformConv, parity, TensorRT 10.1 check."""
    from pipeline.cli import main

    src = tiny_dbnet(dcn=True)
    state = {f"model.module.{k}": v for k, v in src.state_dict().items()}
    state["model.module.backbone.fc.weight"] = torch.zeros(10, 128)
    torch.save(state, tmp_path / "db_dcn.pth")
    out = tmp_path / "dcn.onnx"
    assert main(["export", str(tmp_path / "db_dcn.pth"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stripped prefix 'model.module.'" in text and "backbone.fc.weight" in text
    assert "opset 19" in text and "parity PASSED" in text and "TensorRT 10.1: compatible" in text
    assert sum(n.op_type == "DeformConv" for n in onnx.load(str(out)).graph.node) == 6
    assert "note: no db_dcn.json beside the checkpoint and no tuned thresholds in it: DBNet's " \
        "defaults for thresh 0.3, box_thresh 0.6, unclip_ratio 1.5" in text  # a copy said nothing
    del state["model.module.decoder.in2.weight"]
    torch.save(state, tmp_path / "broken.pth")
    assert main(["export", str(tmp_path / "broken.pth"), "-o", str(tmp_path / "b.onnx")]) == 2
    assert "missing keys: decoder.in2.weight" in capsys.readouterr().err


def test_a_record_from_another_model_does_not_rename_the_export(tmp_path, capsys):
    """A NAME.json copied from the shipped (width 0.5) model beside a width-0.25 checkpoint: its
    thresholds are used, but the metadata names the network really exported."""
    import json

    from pipeline.cli import main

    torch.save(tiny_dbnet().state_dict(), tmp_path / "mine.pt")
    spec = ModelSpec(arch="dbnet_resnet18_w0.5").replace(thresh=0.25, box_thresh=0.4)
    (tmp_path / "mine.json").write_text(json.dumps({"spec": json.loads(spec.to_json())}))
    out = tmp_path / "mine.onnx"
    assert main(["export", str(tmp_path / "mine.pt"), "-o", str(out), "--no-parity"]) == 0
    written = ModelSpec.from_json(get_metadata(onnx.load(str(out)))["dbrt"])
    assert written.arch == "dbnet_resnet18_w0.25"
    assert (written.post.thresh, written.post.box_thresh) == (0.25, 0.4)
    assert "mine.json describes dbnet_resnet18_w0.5, but the checkpoint is dbnet_resnet18_w0.25" \
        in capsys.readouterr().out
