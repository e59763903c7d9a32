"""GPU preprocessing: the kernel's arithmetic (emulated with NumPy) against the CPU oracle, and
on a GPU the CuPy kernel itself against both."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ShapeError
from engine.lazy import cupy_or_none
from dbnet.spec import ModelSpec, preset
from pipeline.gpu_preprocess import axis_table, emulate
from pipeline.preprocess import preprocess

CASES = [  # (frame h, w), network (H, W), keep_aspect
    ((506, 960), (256, 480), False),     # downscale, the shared video's size
    ((506, 960), (736, 1408), False),    # upscale (DB's default rule on that video)
    ((720, 1280), (352, 640), True),     # letterbox with padding
    ((37, 53), (96, 64), False),         # odd sizes, upscale both ways
    ((1, 1), (32, 32), False),           # degenerate frame
    ((2, 300), (32, 64), True),          # extreme aspect ratio
]


def frame(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


FLOAT_ROUNDING = 1e-6  # a grey level is >= 1/255 after normalising; rounding is ~1e-7


@pytest.mark.parametrize("shape, size, keep_aspect", CASES)
@pytest.mark.parametrize("spec", [ModelSpec(), preset("mmocr")], ids=["db", "mmocr-rgb"])
def test_emulated_kernel_matches_cpu_path(rng, shape, size, keep_aspect, spec):
    image = frame(rng, *shape)
    got, box = emulate(image, spec, size, keep_aspect)
    want, want_box = preprocess(image, spec, size, keep_aspect)
    assert box == want_box and got.shape == want.shape == (3, *size)
    diff = np.abs(got - want)
    # identical (to float rounding: the CPU path computes x/std - mean/std, the kernel
    # (x - mean)/std) except OpenCV's border rounding when upscaling: at most one grey level
    assert diff.max() <= 1.0001 / min(spec.std)
    assert (diff > FLOAT_ROUNDING).mean() < 0.01
    if spec.std == (255.0, 255.0, 255.0):
        assert diff.max() < 1e-2
    if box.content_w < size[1] or box.content_h < size[0]:
        assert not got[:, box.content_h:, :].any() and not got[:, :, box.content_w:].any()


def test_downscaling_matches_to_float_rounding(rng):
    image = frame(rng, 506, 960)
    got, _ = emulate(image, ModelSpec(), (256, 480))
    want, _ = preprocess(image, ModelSpec(), (256, 480))
    np.testing.assert_allclose(got, want, rtol=0, atol=FLOAT_ROUNDING)  # same resized pixels


def test_axis_table_clamps_and_weights():
    i0, i1, w0 = axis_table(4, 8)  # 2x upscale
    assert i0.dtype == np.int32 and (i0 >= 0).all() and (i1 <= 3).all()
    assert w0[0] == 2048 and i0[0] == 0       # left edge clamps with full weight
    assert w0[-1] == 2048 and i0[-1] == 3     # right edge too
    assert set(w0[1:-1]) == {512, 1536}       # quarter / three-quarter taps
    same = axis_table(5, 5)
    assert (same[0] == np.arange(5)).all() and (same[2] == 2048).all()


@pytest.mark.gpu
@pytest.mark.parametrize("shape, size, keep_aspect", CASES)
def test_cuda_kernel_matches_emulation_and_cpu(rng, shape, size, keep_aspect):
    cp = cupy_or_none()
    if cp is None:
        pytest.skip("no CUDA device with CuPy")
    from pipeline.gpu_preprocess import GpuPreprocessor

    spec = ModelSpec()
    images = [frame(rng, *shape), frame(rng, *shape)]
    batch, boxes = GpuPreprocessor(spec, keep_aspect)(images, size)
    assert isinstance(batch, cp.ndarray) and batch.shape == (2, 3, *size)
    host = batch.get()
    for i, image in enumerate(images):
        emulated, box = emulate(image, spec, size, keep_aspect)
        cpu, _ = preprocess(image, spec, size, keep_aspect)
        assert boxes[i] == box
        np.testing.assert_array_equal(host[i], emulated)
        assert np.abs(host[i] - cpu).max() < 1e-2


@pytest.mark.gpu
def test_cuda_kernel_rgb_model_and_buffer_reuse(rng):
    cp = cupy_or_none()
    if cp is None:
        pytest.skip("no CUDA device with CuPy")
    from pipeline.gpu_preprocess import GpuPreprocessor

    spec = preset("mmocr")
    pre = GpuPreprocessor(spec, keep_aspect=True)
    for shape in ((90, 160), (480, 640), (90, 160)):  # buffers grow, then are reused
        image = frame(rng, *shape)
        batch, _ = pre([image], (256, 256))
        np.testing.assert_array_equal(batch.get()[0], emulate(image, spec, (256, 256), True)[0])


def test_the_kernel_launch_matches_its_parameters(rng, monkeypatch):
    """Without a GPU: each launch passes numpy.int32 / numpy.float32 scalars and C-contiguous
    device arrays of the element types the kernel's parameters name, in their order, and a grid
    that covers the network input; the batch slot it writes is the frame's."""
    import pipeline.gpu_preprocess as gpu_preprocess
    from cuda_kernels import fake_cupy

    monkeypatch.setattr(gpu_preprocess, "require", lambda name: fake_cupy())
    pre = gpu_preprocess.GpuPreprocessor(preset("mmocr"), keep_aspect=True)
    images = [frame(rng, 90, 160), frame(rng, 37, 53)]
    batch, _ = pre(images, (96, 128))
    launches = pre._kernel.launches
    assert len(launches) == 2
    for slot, (grid, block, args) in enumerate(launches):
        assert grid[0] * block[0] >= 128 and grid[1] * block[1] >= 96 and grid[2] == 1
        src, dst = args[0], args[10]
        assert src.size == images[slot].size and (src == images[slot].reshape(-1)).all()
        assert dst.shape == (3, 96, 128) and np.shares_memory(dst, batch[slot])
        assert (args[2], args[3]) == (0, 0)  # no region of interest: read from the origin


def test_the_kernel_reads_each_frames_region_from_its_origin(rng, monkeypatch):
    """Without a GPU: with regions of interest the whole frame is uploaded (the read stage crops
    it), the launch passes the region's origin and the tables of the region's size, as `emulate`
    (the kernel's NumPy twin) reads it."""
    import pipeline.gpu_preprocess as gpu_preprocess
    from cuda_kernels import fake_cupy

    monkeypatch.setattr(gpu_preprocess, "require", lambda name: fake_cupy())
    pre = gpu_preprocess.GpuPreprocessor(ModelSpec())
    images = [frame(rng, 90, 160), frame(rng, 37, 53)]
    regions = [(100, 30, 60, 50), None]
    uploads: list = []
    _, boxes = pre(images, (64, 96), device_frames=uploads, regions=regions)
    assert [b.area for b in boxes] == [(100, 30, 60, 50), (0, 0, 53, 37)]
    assert [u.shape for u in uploads] == [(90, 160, 3), (37, 53, 3)]
    for (grid, block, args), (x, y, w, h) in zip(pre._kernel.launches, [b.area for b in boxes]):
        assert (args[1], args[2], args[3]) == (160 if x else 53, x, y)
        ty0, tx0 = args[4], args[7]  # the first source row / column of each output pixel
        np.testing.assert_array_equal(ty0, axis_table(h, 64)[0])
        np.testing.assert_array_equal(tx0, axis_table(w, 96)[0])


def test_a_failed_batch_leaves_no_upload_reading_a_pinned_slot(rng, monkeypatch):
    """Without a GPU: a frame that fails half-way through a batch still has the uploads before it
    synchronised, since they read the pinned slots the next call rewrites (an asynchronous copy
    reads its host buffer until the stream gets to it)."""
    import pipeline.gpu_preprocess as gpu_preprocess
    from cuda_kernels import fake_cupy

    cp = fake_cupy()
    monkeypatch.setattr(gpu_preprocess, "require", lambda name: cp)
    pre = gpu_preprocess.GpuPreprocessor(ModelSpec())
    with pytest.raises(ShapeError):
        pre([frame(rng, 90, 160), np.zeros((90, 160), np.uint8)], (64, 96))
    assert cp.cuda.get_current_stream().pending == []
    good = frame(rng, 90, 160)
    pre([good, good], (64, 96))
    assert (pre._kernel.launches[-1][2][0] == good.reshape(-1)).all()


@pytest.mark.parametrize("arch", ["compute_75", "compute_90"])
def test_the_kernel_compiles_with_nvrtc(arch):
    from cuda_kernels import check_compiles
    from pipeline.gpu_preprocess import KERNEL_NAME, KERNEL_SOURCE

    check_compiles(KERNEL_SOURCE, KERNEL_NAME, arch)



def test_two_threads_sharing_a_preprocessor_each_upload_their_own_frame(rng, monkeypatch):
    """Without a GPU: one Detector may serve two Pipelines at once, so two threads prepare
    batches at the same time. They shared each slot's pinned host buffer and device buffer:
    a frame copied in by one thread was what the other thread's launch, still queued behind
    it, read. Here the second thread prepares its batch between the first one's upload and
    launch; each launch must read its own thread's frame."""
    import threading

    import pipeline.gpu_preprocess as gpu_preprocess
    from cuda_kernels import RecordingKernel, fake_cupy

    read = []  # (thread, the frame bytes its launch read)

    class ReadingKernel(RecordingKernel):
        def __call__(self, grid, block, args, **kwargs):
            cupy.cuda.get_current_stream().synchronize()  # stream order: the copies queued
            read.append((threading.current_thread(), args[0].copy()))  # before it are done
            super().__call__(grid, block, args, **kwargs)

    cupy = fake_cupy()
    cupy.RawKernel = ReadingKernel
    monkeypatch.setattr(gpu_preprocess, "require", lambda name: cupy)
    pre = gpu_preprocess.GpuPreprocessor(ModelSpec())
    mine, theirs = frame(rng, 40, 60), frame(rng, 40, 60)
    other = threading.Thread(target=lambda: pre([theirs], (32, 64)))
    launch = gpu_preprocess.GpuPreprocessor._launch

    def launch_once_the_other_prepared(self, *args):
        if threading.current_thread() is not other and other.ident is None:
            other.start()
            other.join(5.0)  # bounded: a preprocessor that made it wait must not hang the test
        return launch(self, *args)

    monkeypatch.setattr(gpu_preprocess.GpuPreprocessor, "_launch", launch_once_the_other_prepared)
    pre([mine], (32, 64))
    other.join()
    wanted = {other: theirs}
    assert len(read) == 2
    for thread, src in read:
        assert (src == wanted.get(thread, mine).reshape(-1)).all(), thread.name
