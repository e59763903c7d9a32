"""Shapes / profiles, the progress bar, and (on a GPU) the CuPy backend the TensorRT runner uses."""
import io

import numpy as np
import pytest

from engine.errors import ShapeError
from engine.lazy import cupy_or_none
from engine.tensorrt.progress import BuildProgress, progress_monitor
from dbnet.spec import default_profile
from engine.shapes import ShapeProfile, check_in_profile, parse_batch, parse_shape


@pytest.mark.parametrize("text, expected", [
    ("1x3x736x1280", (1, 3, 736, 1280)), ("736x1280", (736, 1280)), ("736,1280", (736, 1280)),
    ("1x3x0x32", ShapeError), ("abc", ShapeError), ("1x2x3", ShapeError),
])
def test_parse_shape(text, expected):
    if expected is ShapeError:
        with pytest.raises(ShapeError):
            parse_shape(text)
    else:
        assert parse_shape(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("4", (4, 4, 4)), ("1:8", (1, 1, 8)), ("1:2:8", (1, 2, 8)), ("8:1", ShapeError), ("x", ShapeError),
])
def test_parse_batch(text, expected):
    if expected is ShapeError:
        with pytest.raises(ShapeError):
            parse_batch(text)
    else:
        assert parse_batch(text) == expected


def test_profiles():
    profile = default_profile(736)
    assert profile.opt == (1, 3, 736, 1312) and profile.max == (4, 3, 2208, 2208)
    assert default_profile(960, "max", max_batch=1).opt == (1, 3, 544, 960)
    assert default_profile(960, "max", max_batch=1).max == (1, 3, 960, 960)
    assert ShapeProfile.from_dict(profile.to_dict()) == profile
    assert profile.contains((2, 3, 736, 1280)) and not profile.contains((5, 3, 736, 1280))
    check_in_profile("images", (1, 3, 64, 64), profile)
    with pytest.raises(ShapeError, match="min 1x3x32x32, opt 1x3x736x1312, max 4x3x2208x2208"):
        check_in_profile("images", (1, 3, 2240, 64), profile)


def test_progress_lines_and_cancel():
    out = io.StringIO()
    progress = BuildProgress(out, label="building x")
    progress.phase_start("Building engine", None, 2)
    progress.phase_start("Tactics", "Building engine", 5)
    assert progress.step_complete("Tactics", 2)
    assert progress.line().endswith("Building engine 0/2 > Tactics 3/5")
    progress.cancelled = True
    assert progress.step_complete("Tactics", 3) is False
    progress.phase_finish("Tactics")
    progress.done(False)
    assert out.getvalue().startswith("building x: Building engine (2 steps)\n")
    assert "failed in" in out.getvalue()


def test_progress_monitor_needs_tensorrt_support():
    class OldTensorRT:          # 8.6: no IProgressMonitor
        pass

    assert progress_monitor(OldTensorRT, BuildProgress(io.StringIO())) is None


@pytest.mark.gpu
def test_cupy_backend_buffers_streams_and_graphs():
    cp = cupy_or_none()
    if cp is None:
        pytest.skip("needs CuPy and a CUDA GPU")
    from engine.cuda import CupyBackend

    backend = CupyBackend(cp)
    info = backend.device_info()
    assert info.name and info.compute_capability.count(".") == 1
    stream = backend.stream()
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    buffer = backend.empty(host.shape, np.float32)
    backend.copy_into(buffer, host, stream)
    backend.synchronize(stream)
    assert backend.is_device_array(buffer) and np.array_equal(backend.to_host(buffer), host)
    pinned = backend.pinned_empty((3, 4), np.float32)
    pinned[...] = host
    other = backend.empty(host.shape, np.float32)
    doubled = buffer * 2  # on the current stream: `stream` must wait for it before reading
    backend.wait_for_caller(stream)
    backend.copy_into(other, doubled, stream)
    backend.synchronize(stream)
    assert np.array_equal(backend.to_host(other), host * 2)
    with stream:
        out = cp.empty_like(buffer)
        backend.begin_capture(stream)
        cp.multiply(buffer, 3, out=out)
        graph = backend.end_capture(stream)
    backend.copy_into(buffer, np.ones_like(host), stream)
    backend.launch(graph, stream)
    backend.synchronize(stream)
    assert np.array_equal(backend.to_host(out), np.full_like(host, 3))   # replay reads new input


def test_engine_modules_import_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, engine.tensorrt.cache, engine.tensorrt.build, engine.tensorrt.runner, "
            "engine.describe, engine.tensorrt.calibrator, engine.loader, pipeline.commands.build, "
            "pipeline.commands.info, export.torch_runner; "
            "print(sorted(m for m in ('tensorrt', 'cupy', 'torch', 'onnx', 'onnxruntime') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
