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


def test_bench_model_dla_core_without_an_fp16_or_int8_precision_is_refused(capsys):
    """The DLA times FP16 / INT8 engines only, and --precisions defaults to fp32: `dbrt bench
    model --dla-core 0` swept every size without a DLA row and said nothing of it."""
    from benchmarks import model_bench

    with pytest.raises(SystemExit) as caught:
        model_bench.main(["--dla-core", "0"])
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--dla-core" in err[-1] and "--precisions fp16" in err[-1], err
