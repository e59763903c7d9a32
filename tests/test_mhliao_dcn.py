"""dbrt's deformable ResNet against MhLiao/DB's compiled DCN kernel (as transcribed in
benchmarks/mhliao_dcn_standin.py), and the MhLiao/DB parity harness itself."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import mhliao_dcn_standin as kernel  # noqa: E402
from benchmarks import mhliao_parity  # noqa: E402
from export.dcn import as_kernel_reads, deform_conv2d  # noqa: E402
from export.model import Bottleneck, DBNet  # noqa: E402

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def _kernel_conv(x, offset, mask, weight, stride):
    """MhLiao's ModulatedDeformConvFunction.forward: output sized from x, then the extension."""
    n, _, h, w = x.shape
    out = x.new_empty(n, weight.shape[0], (h - 1) // stride + 1, (w - 1) // stride + 1)
    kernel.modulated_deform_conv_cuda_forward(x, weight, x.new_empty(1), x.new_empty(0), offset,
                                              mask, out, x.new_empty(0), 3, 3, stride, stride, 1,
                                              1, 1, 1, 1, 1, False)
    return out


def _random_bottleneck(stride, seed=0):
    torch.manual_seed(seed)
    planes = 8
    down = torch.nn.Sequential(torch.nn.Conv2d(16, planes * 4, 1, stride, bias=False),
                               torch.nn.BatchNorm2d(planes * 4))
    block = Bottleneck(16, planes, stride, down, dcn=True)
    for m in block.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    torch.nn.init.normal_(block.conv2_offset.weight, std=0.3)
    torch.nn.init.normal_(block.conv2_offset.bias, std=1.0)
    return block.eval()


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(12, 16), (11, 9)])
def test_deformable_bottleneck_matches_their_block_and_kernel(stride, size):
    """MhLiao's Bottleneck: offsets from a stride-1 conv, stride-s deformable conv, the kernel
    reading offset[b] / mask[b] by raw pointer (not a strided offset map)."""
    block = _random_bottleneck(stride)
    x = torch.randn(2, 16, *size)
    with torch.no_grad():
        out = block.relu(block.bn1(block.conv1(x)))
        offset_mask = torch.nn.functional.conv2d(out, block.conv2_offset.weight,
                                                 block.conv2_offset.bias, stride=1, padding=1)
        conv2 = _kernel_conv(out, offset_mask[:, :18], offset_mask[:, -9:].sigmoid(),
                             block.conv2.weight, stride)
        out = block.relu(block.bn2(conv2))
        expected = block.relu(block.bn3(block.conv3(out)) + block.downsample(x))
        got = block(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("stride", [1, 2])
def test_kernel_transcription_agrees_with_dbrt_deform_conv_on_matching_shapes(stride):
    """Two independent implementations (gather vs grid_sample), offsets reaching outside."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 9, 10, generator=gen)
    weight = torch.randn(5, 4, 3, 3, generator=gen)
    out_hw = ((9 - 1) // stride + 1, (10 - 1) // stride + 1)
    offset = 3 * torch.randn(2, 18, *out_hw, generator=gen)
    mask = torch.rand(2, 9, *out_hw, generator=gen)
    ours = deform_conv2d(x, offset, mask, weight, None, stride, 1)
    assert torch.allclose(_kernel_conv(x, offset, mask, weight, stride), ours, atol=1e-5)


def test_as_kernel_reads_is_the_identity_when_shapes_agree():
    offset_mask = torch.randn(2, 27, 5, 7)
    assert torch.equal(as_kernel_reads(offset_mask, 5, 7), offset_mask)


def test_resnet50_dcn_exports_with_dynamic_shapes(tmp_path):
    """The kernel reading is traced as shape arithmetic: parity holds at other input sizes."""
    from export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = DBNet("resnet50", dcn=True, width=0.25)
    for name, m in model.named_modules():
        if name.endswith("conv2_offset"):
            torch.nn.init.normal_(m.weight, std=0.05)
            torch.nn.init.normal_(m.bias, std=1.0)
    report = export_onnx(model.eval(), tmp_path / "r50dcn.onnx", opset=19,
                         example_shape=(1, 3, 128, 96),
                         parity_shapes=((1, 3, 64, 96), (2, 3, 96, 160)))
    assert report.passed and len(report.parity) == 2


def test_cuda_guard_is_restored():
    with kernel.cpu_passes_their_cuda_guard():
        assert torch.zeros(1).is_cuda
    assert not torch.zeros(1).is_cuda


def test_harness_skips_without_a_snapshot(tmp_path, capsys):
    from benchmarks import common

    assert mhliao_parity.main(["--snapshot", str(tmp_path / "absent"), "--no-write"]) == common.SKIPPED
    assert "skipped: no MhLiao/DB snapshot" in capsys.readouterr().out


@pytest.mark.skipif(not mhliao_parity.is_snapshot(mhliao_parity.find_snapshot(None)),
                    reason=f"no MhLiao/DB snapshot (set {mhliao_parity.ENV} to a checkout)")
def test_harness_on_their_deformable_resnet50():
    """Their own model from the snapshot vs `dbrt export` (own process: their modules and the
    kernel stand-in go into sys.modules there, not here)."""
    run = subprocess.run([sys.executable, "-m", "benchmarks.mhliao_parity", "--configs",
                          "deformable_resnet50", "--no-write"], cwd=REPO, capture_output=True,
                         text=True, timeout=900, env=dict(os.environ))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "deformable_resnet50" in run.stdout and "ok" in run.stdout
    assert np.isfinite(float(run.stdout.split("max abs ")[1].split()[0]))
