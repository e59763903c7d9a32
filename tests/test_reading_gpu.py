"""The GPU crop path: its NumPy twin (`gpu_crops.emulate`) against the OpenCV CPU path
(always); the CuPy kernel against the twin and the CPU path, and reading a frame that is on the
GPU (GPU only)."""
import numpy as np
import pytest

from engine.lazy import cupy_or_none
from pipeline.postprocess.geometry import order_quads
from pipeline.reading.crops import crop_batches, cut_crop, plan_crops
from pipeline.reading.gpu_crops import crop_geometry, emulate
from pipeline.reading.recognizer import _normalise
from pipeline.reading.spec import RecSpec


def _frame():
    """The demo video's first frame: real text edges, flat areas and gradients."""
    from pipeline.shipped import DEMO_VIDEO
    from pipeline.sources import open_sources

    with open_sources([str(DEMO_VIDEO)])[0] as source:
        return next(iter(source)).image


def _plan(seed=0, count=40, spec=RecSpec()):
    """Rotated, slightly skewed quads from 10 to 300 pixels wide and 6 to 150 high (wide,
    tall-turned, and much taller than the crop, which the CPU path shrinks with INTER_AREA)."""
    rng = np.random.default_rng(seed)
    quads = []
    for _ in range(count):
        cx, cy = rng.uniform(50, 590), rng.uniform(40, 320)
        w, h, a = rng.uniform(10, 300), rng.uniform(6, 150), rng.uniform(-0.6, 0.6)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        quad = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]]) @ rot.T
        quads.append(quad + [cx, cy] + rng.normal(0, 3, (4, 2)))
    return plan_crops(order_quads(np.float32(quads)), spec.height, spec.min_width, spec.max_width)


def _cpu_batch(image, plan, members, spec):
    return _normalise([cut_crop(image, plan.corners[i], int(plan.widths[i]), spec.height)
                       for i in members], spec)


def _grey_levels(a, b, spec):
    """|a - b| of two normalised batches, in 8-bit grey levels."""
    return np.abs(np.asarray(a) - np.asarray(b)) * 255.0 * np.asarray(spec.std)[:, None, None]


def _agrees_with_opencv(batch, image, plan, members, spec):
    """Direct warps within one grey level of OpenCV's fixed-point bilinear; shrunk text (s x s
    samples against warp + INTER_AREA) within 0.5 levels on average, 3 at the 99th percentile."""
    geometry = crop_geometry(plan, members, spec)
    diff = _grey_levels(batch, _cpu_batch(image, plan, members, spec), spec)
    direct = geometry.geo[:, 11] == 1
    assert direct.any() and (~direct).any()
    assert diff[direct].max() <= 1.0 + 1e-3
    assert diff[~direct].mean() <= 0.5 and np.percentile(diff[~direct], 99) <= 3.0 + 1e-3


@pytest.mark.parametrize("spec", [RecSpec(), RecSpec(bgr=False, mean=(0.485, 0.456, 0.406),
                                                    std=(0.229, 0.224, 0.225))])
def test_the_numpy_twin_cuts_the_crops_the_cpu_path_cuts(spec):
    image, plan = _frame(), _plan()
    batches = crop_batches(plan, spec.batch_size)
    for members in batches:
        twin = emulate(image, crop_geometry(plan, members, spec), spec)
        assert twin.shape == _cpu_batch(image, plan, members, spec).shape
        if len(members) == spec.batch_size:  # the batch with both kinds of crop
            _agrees_with_opencv(twin, image, plan, members, spec)
        widths = plan.widths[members]
        for k, width in enumerate(widths):  # the padding is zero, as on the CPU path
            assert not twin[k, :, :, width:].any()


@pytest.mark.gpu
def test_the_cupy_kernel_matches_its_twin_and_opencv():
    cp = cupy_or_none()
    if cp is None:
        pytest.skip("needs CuPy and a CUDA GPU")
    from pipeline.reading.gpu_crops import GpuCropper

    spec = RecSpec()
    image, plan = _frame(), _plan()
    cropper = GpuCropper(spec)
    members = crop_batches(plan, spec.batch_size)[0]
    got = cropper(cp.asarray(image), plan, members).get()
    twin = emulate(image, crop_geometry(plan, members, spec), spec)
    assert _grey_levels(got, twin, spec).max() <= 1.0 + 1e-3  # float rounding at .5 only
    assert np.mean(_grey_levels(got, twin, spec) > 1e-3) < 1e-3
    _agrees_with_opencv(got, image, plan, members, spec)


@pytest.mark.gpu
def test_a_frame_on_the_gpu_reads_as_on_the_host():
    cp = cupy_or_none()
    if cp is None:
        pytest.skip("needs CuPy and a CUDA GPU")
    pytest.importorskip("rapidocr", reason="the PP-OCR rec model comes with the rapidocr wheel")
    from pipeline.reading import Recognizer

    from test_reading import _words_image

    image, detections, words = _words_image()
    with Recognizer(device="cpu") as rec:
        on_host = rec.read(image, detections)
        on_gpu = rec.read(cp.asarray(image), detections)
    assert on_gpu.texts == on_host.texts == words
    np.testing.assert_allclose(on_gpu.text_scores, on_host.text_scores, atol=0.02)


def test_the_kernel_launch_matches_its_parameters(monkeypatch):
    """Without a GPU: one launch per batch, with numpy.int32 / numpy.float32 scalars and
    C-contiguous device arrays of the element types the kernel's parameters name, in their
    order; one grid layer per crop, covering the batch width and the crop height."""
    import pipeline.reading.gpu_crops as gpu_crops
    from cuda_kernels import fake_cupy

    monkeypatch.setattr(gpu_crops, "require", lambda name: fake_cupy())
    spec = RecSpec()
    image, plan = _frame(), _plan()
    cropper = gpu_crops.GpuCropper(spec)
    members = crop_batches(plan, spec.batch_size)[0]
    out = cropper(cropper.cp.asarray(image), plan, members)
    (grid, block, args), = cropper._kernel.launches
    n, _, height, width = out.shape
    assert n == len(members) and grid[2] == n
    assert grid[0] * block[0] >= width and grid[1] * block[1] >= height
    assert args[3].shape == (n, 12) and args[4].shape == (n,) and args[5] is out


@pytest.mark.parametrize("arch", ["compute_75", "compute_90"])
def test_the_kernel_compiles_with_nvrtc(arch):
    from cuda_kernels import check_compiles
    from pipeline.reading.gpu_crops import KERNEL_NAME, KERNEL_SOURCE

    check_compiles(KERNEL_SOURCE, KERNEL_NAME, arch)
