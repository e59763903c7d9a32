"""`dbrt info` and `dbrt build` end to end (TensorRT parts through the double)."""
import json
import sys

import pytest
from engine_helpers import trt  # noqa: F401

import trt_double
from pipeline.cli import main


def test_info_onnx_text_and_json(tiny_onnx, capsys):
    assert main(["info", str(tiny_onnx)]) == 0
    text = capsys.readouterr().out
    assert "opset 17" in text and "precision fp32" in text
    assert "input  images: (batch, 3, height, width) float32" in text and "limit_side 256" in text
    assert main(["info", str(tiny_onnx), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["inputs"][0]["shape"] == ["batch", 3, "height", "width"]
    assert info["spec"]["resize"]["limit_side"] == 256 and len(info["sha256"]) == 64


def test_info_says_when_the_weights_are_untrained(tiny_onnx, tmp_path, capsys):
    """`dbrt export --random-init` marks its files untrained; info must say so, as run and eval do."""
    import onnx

    from dbnet.spec import METADATA_KEY, ModelSpec

    proto = onnx.load(str(tiny_onnx))
    prop = next(p for p in proto.metadata_props if p.key == METADATA_KEY)
    prop.value = ModelSpec.from_json(prop.value).replace(untrained=True).to_json()
    onnx.save(proto, str(tmp_path / "random.onnx"))
    assert main(["info", str(tmp_path / "random.onnx")]) == 0
    assert "UNTRAINED random weights" in capsys.readouterr().out
    assert main(["info", str(tiny_onnx)]) == 0
    assert "UNTRAINED" not in capsys.readouterr().out


@pytest.mark.parametrize("name, content, message", [
    ("missing.onnx", None, "ONNX file not found"),
    ("bad.onnx", b"not onnx", "not a readable ONNX model"),
    ("model.txt", b"x", "expected .onnx, .engine, .plan or .trt"),
    ("missing.engine", None, "engine file not found"),
])
def test_info_errors_are_one_line(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_build_then_info(trt, tiny_onnx, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "cache"))
    engine = tmp_path / "tiny.engine"
    code = main(["build", str(tiny_onnx), "-o", str(engine), "--precision", "fp32", "--opt", "64x64",
                 "--max", "128x128", "--batch", "1:2", "--opt-level", "1", "--workspace", "64"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"wrote {engine} (fp32" in out and "max 2x3x128x128" in out
    assert "done in" in err                                   # the progress output
    assert list((tmp_path / "cache").glob("timing-*.cache"))
    assert main(["info", str(engine)]) == 0
    text = capsys.readouterr().out
    assert f"built with TensorRT {trt.__version__}" in text
    assert "profile images: min 1x3x32x32, opt 1x3x64x64, max 2x3x128x128" in text
    assert "engine profile images" in text and "output prob: (?, 1, ?, ?) float32" in text


def test_a_version_compatible_engine_without_record_needs_trust(trt, tiny_onnx, tmp_path, capsys):
    engine = tmp_path / "outside.engine"
    assert main(["build", str(tiny_onnx), "-o", str(engine), "--opt", "64x64", "--quiet",
                 "--version-compatible"]) == 0
    (tmp_path / "outside.engine.json").unlink()  # as trtexec --versionCompatible leaves it
    capsys.readouterr()
    assert main(["info", str(engine)]) == 2
    err = capsys.readouterr().err
    assert "--trust-engine-code" in err and err.count("\n") == 1
    assert main(["info", str(engine), "--trust-engine-code"]) == 0
    assert "output prob: (?, 1, ?, ?) float32" in capsys.readouterr().out


def test_info_engine_without_tensorrt_shows_the_record(monkeypatch, tiny_onnx, tmp_path, capsys):
    trt_double.install(monkeypatch, "10.x")
    engine = tmp_path / "tiny.engine"
    assert main(["build", str(tiny_onnx), "-o", str(engine), "--opt", "64x64", "--quiet",
                 "--no-timing-cache"]) == 0
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    capsys.readouterr()
    assert main(["info", str(engine)]) == 0
    text = capsys.readouterr().out
    assert "precision fp16, built with TensorRT 10.3.0" in text
    assert "showing the build record only" in text


@pytest.mark.parametrize("flavour, extra, message", [
    ("11.x", ["--precision", "fp16"], "strongly typed networks only"),
    ("10.x", ["--precision", "int8"], "needs calibration images"),
    ("10.x", ["--opt", "64x60"], "multiples of 32"),
    ("10.x", ["--min", "32x32"], "give --opt"),
    ("10.x", ["--opt", "1x3x64x64", "--batch", "2"], "carry their batch"),
])
def test_build_errors_are_one_line(monkeypatch, tiny_onnx, tmp_path, capsys, flavour, extra, message):
    trt_double.install(monkeypatch, flavour)
    code = main(["build", str(tiny_onnx), "-o", str(tmp_path / "x.engine"), "--quiet",
                 "--no-timing-cache"] + extra)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_build_int8_with_calibration_images(monkeypatch, tiny_onnx, tmp_path, capsys, rng):
    import cv2

    trt_double.install(monkeypatch, "10.x")
    images = tmp_path / "calib"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 255, (48, 80, 3), dtype="uint8"))
    engine = tmp_path / "int8.engine"
    assert main(["build", str(tiny_onnx), "-o", str(engine), "--precision", "int8", "--quiet",
                 "--opt", "64x64", "--calib", str(images), "--calib-cache",
                 str(tmp_path / "calib.cache"), "--no-timing-cache"]) == 0
    assert "(int8" in capsys.readouterr().out
    record = json.loads((tmp_path / "int8.engine.json").read_text())
    assert record["builder"]["calibration_batches"] == 3


def test_build_of_a_foreign_model_asks_for_its_preset(monkeypatch, tiny_onnx, tmp_path, capsys, rng):
    """A PP-OCR det ONNX (no dbrt metadata, Paddle's tensor names) was calibrated on images
    normalised with DB's defaults, and given DB's default profile, without a word; dbrt run
    refuses the same model without --preset."""
    import cv2
    import onnx

    trt_double.install(monkeypatch, "10.x")
    foreign = onnx.load(str(tiny_onnx))
    del foreign.metadata_props[:]
    old = foreign.graph.output[0].name
    for node in foreign.graph.node:
        node.output[:] = ["fetch_name_0" if name == old else name for name in node.output]
    foreign.graph.output[0].name = "fetch_name_0"
    onnx.save(foreign, str(tmp_path / "det.onnx"))
    images = tmp_path / "calib"
    images.mkdir()
    cv2.imwrite(str(images / "0.png"), rng.integers(0, 255, (48, 80, 3), dtype="uint8"))
    argv = ["build", str(tmp_path / "det.onnx"), "--quiet", "--no-timing-cache"]
    calib = ["--precision", "int8", "--calib", str(images), "--opt", "64x64"]
    for extra in (calib, []):
        assert main(argv + ["-o", str(tmp_path / "x.engine")] + extra) == 2
        assert "pass --preset ppocr" in capsys.readouterr().err
    assert main(argv + ["-o", str(tmp_path / "y.engine"), "--preset", "ppocr"] + calib) == 0
    assert main(argv + ["-o", str(tmp_path / "z.engine"), "--opt", "64x64"]) == 0  # no spec used


def test_build_without_tensorrt(monkeypatch, tiny_onnx, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(["build", str(tiny_onnx)]) == 2
    assert "pip install tensorrt" in capsys.readouterr().err


@pytest.mark.parametrize("argv, status", [(["info", "MODEL"], 141), (["--help"], 0)])
def test_a_reader_that_stops_early_ends_the_command_quietly(tiny_onnx, tmp_path, argv, status):
    """`dbrt info m.onnx | head`: exit 141 like standard tools (argparse's help drops the
    error itself: 0), no error line and no 'Exception ignored ... BrokenPipeError' at exit."""
    import os
    import subprocess
    from pathlib import Path

    argv = [str(tiny_onnx) if a == "MODEL" else a for a in argv]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    read_end, write_end = os.pipe()
    os.close(read_end)                                   # the reader is gone before any output
    try:
        proc = subprocess.run([sys.executable, "-m", "pipeline", *argv], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path, timeout=120)
    finally:
        os.close(write_end)
    assert proc.stderr == "" and proc.returncode == status
