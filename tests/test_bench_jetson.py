"""Benchmark results on a Jetson name the board, its L4T release and its power mode (nvpmodel),
which set its FPS as much as the model does; nvidia-smi is missing or says little there."""
import os
import stat

import pytest

from benchmarks import common, jetson


@pytest.fixture
def orin(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, "
                       "EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n")
    tools = tmp_path / "bin"
    tools.mkdir()
    nvpmodel = tools / "nvpmodel"
    nvpmodel.write_text("#!/bin/sh\necho 'NV Power Mode: 30W'\necho 2\n")
    nvpmodel.chmod(nvpmodel.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(jetson, "DEVICE_TREE_MODEL", model)
    monkeypatch.setattr(jetson, "TEGRA_RELEASE", release)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("DBRT_MACHINE", raising=False)
    return tmp_path


def test_a_jetson_names_its_board_release_and_power_mode(orin):
    assert jetson.jetson_info() == {"board": "NVIDIA Jetson AGX Orin Developer Kit",
                                    "l4t": "R36.4.3", "power_mode": "30W"}
    assert common.machine_name() == "nvidia-jetson-agx-orin-developer-kit"
    info = common.machine_info()
    assert info["gpus"] == ["NVIDIA Jetson AGX Orin Developer Kit"] and info["jetson"]["power_mode"] == "30W"
    text = common.write_markdown(orin / "r.md", "t", [("s", "x")], info).read_text()
    assert "GPU: NVIDIA Jetson AGX Orin Developer Kit (L4T R36.4.3, power mode 30W)" in text


def test_a_jetson_without_nvpmodel_says_its_mode_is_unknown(orin, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    info = jetson.jetson_info()
    assert info["power_mode"] is None
    assert jetson.describe(info) == "L4T R36.4.3, power mode unknown (nvpmodel -q)"


def test_other_boards_and_machines_are_no_jetson(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    monkeypatch.setattr(jetson, "DEVICE_TREE_MODEL", model)
    monkeypatch.setattr(jetson, "TEGRA_RELEASE", tmp_path / "no_release")
    assert jetson.board() is None and jetson.jetson_info() is None
    monkeypatch.setattr(jetson, "DEVICE_TREE_MODEL", tmp_path / "missing")
    assert jetson.jetson_info() is None and "jetson" not in common.machine_info()


def test_a_carrier_board_named_by_its_maker_is_a_jetson_by_its_l4t_release(orin):
    """Third-party carrier boards may put their own name in the device tree, without
    'Jetson': the L4T release file is on every Jetson, so the results still say the mode."""
    (orin / "model").write_bytes(b"Seeed reComputer J4012\x00")
    assert jetson.jetson_info() == {"board": "Seeed reComputer J4012", "l4t": "R36.4.3",
                                    "power_mode": "30W"}


def test_a_sweep_asked_for_dla_rows_says_when_it_has_none():
    """The DLA computes in FP16 / INT8: TensorRT 8.6 / 10.x build FP16 from the FP32 ONNX (DLA
    rows without --precisions fp16, tests/test_engine_dla.py), 11.x only from an FP16 ONNX, so
    a sweep there without one has no DLA row and says why, rather than nothing."""
    from benchmarks.model_bench import dla_note
    from benchmarks.model_targets import Target

    gpu = Target("tensorrt", "cuda", "fp32", prepare=None)
    dla = Target("tensorrt", "dla0", "fp16", prepare=None)
    assert dla_note([gpu], None) is None and dla_note([gpu, dla], 0) is None
    assert "add --precisions fp16 (or int8) for DLA core 1" in dla_note([gpu], 1)
