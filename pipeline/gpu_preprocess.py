"""GPU preprocessing: one fused CUDA kernel per frame (CuPy RawKernel).

uint8 HWC BGR frame (uploaded from pinned memory) -> its region of interest, if any (the kernel
reads from the region's origin on) -> bilinear resize reproducing OpenCV's
INTER_LINEAR for 8-bit images (half-pixel centres, edge clamping, 11-bit fixed-point weights,
its vectorised rounding) -> colour order + (x - mean) / std -> CHW -> zero padding to the network
size -> its slot of the (N, 3, H, W) float32 batch.

The CPU path (`pipeline.preprocess.preprocess`) is the oracle. The per-axis sampling tables
(`axis_table`) are computed on the host and shared by the kernel and `emulate`, which runs the
kernel's integer arithmetic with NumPy so that it is tested on machines without a GPU. OpenCV
matches bit for bit when downscaling; when upscaling it differs by one grey level on < 1 % of
pixels (its border handling), i.e. < 4e-3 after DB normalisation (1 / std in general).
"""
from __future__ import annotations

import threading
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from engine.errors import ShapeError
from engine.lazy import require
from dbnet.spec import ModelSpec

from .preprocess import Letterbox, make_letterbox

KERNEL_NAME = "letterbox_normalise"
KERNEL_SOURCE = r"""
// One thread per output pixel. ty0/ty1/tb and tx0/tx1/ta: per output row / column, the two
// source indices and the 11-bit weight of the first (see axis_table in gpu_preprocess.py), counted
// from the region's origin (src_x0, src_y0) in the frame (0, 0 without a region of interest).
extern "C" __global__ void letterbox_normalise(
        const unsigned char* __restrict__ src, const int src_w, const int src_x0, const int src_y0,
        const int* __restrict__ ty0, const int* __restrict__ ty1, const int* __restrict__ tb,
        const int* __restrict__ tx0, const int* __restrict__ tx1, const int* __restrict__ ta,
        float* __restrict__ dst, const int dst_h, const int dst_w,
        const int content_h, const int content_w,
        const float m0, const float m1, const float m2,
        const float k0, const float k1, const float k2, const int swap_rb) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) return;
    const int plane = dst_h * dst_w;
    const int o = y * dst_w + x;
    if (x >= content_w || y >= content_h) {  // padding: zero is the mean colour
        dst[o] = 0.f; dst[o + plane] = 0.f; dst[o + 2 * plane] = 0.f;
        return;
    }
    const unsigned char* r0 = src + ((size_t)(src_y0 + ty0[y]) * src_w + src_x0) * 3;
    const unsigned char* r1 = src + ((size_t)(src_y0 + ty1[y]) * src_w + src_x0) * 3;
    const int b0 = tb[y], b1 = 2048 - b0;
    const int x0 = tx0[x] * 3, x1 = tx1[x] * 3, a0 = ta[x], a1 = 2048 - a0;
    const float mean[3] = {m0, m1, m2};
    const float inv_std[3] = {k0, k1, k2};
    for (int c = 0; c < 3; ++c) {
        const int h0 = r0[x0 + c] * a0 + r0[x1 + c] * a1;
        const int h1 = r1[x0 + c] * a0 + r1[x1 + c] * a1;
        int v = (((b0 * (h0 >> 4)) >> 16) + ((b1 * (h1 >> 4)) >> 16) + 2) >> 2;
        v = min(max(v, 0), 255);
        const int oc = swap_rb ? 2 - c : c;  // source is BGR; RGB models get channels swapped
        dst[oc * plane + o] = ((float)v - mean[oc]) * inv_std[oc];
    }
}
"""
BLOCK = (32, 8, 1)
WEIGHT_ONE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE


@lru_cache(maxsize=64)
def axis_table(n_src: int, n_out: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV INTER_LINEAR sampling along one axis: for each output index, the source indices
    i0, i1 and the fixed-point weight w0 of i0 (w1 = 2048 - w0), as int32 arrays."""
    scale = 1.0 / (n_out / n_src)  # OpenCV: scale = 1 / inv_scale, in double
    f = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    f = (f - i0.astype(np.float32)).astype(np.float32)
    low, high = i0 < 0, i0 >= n_src - 1
    i0[low], f[low] = 0, 0
    i0[high], f[high] = n_src - 1, 0
    w0 = np.rint((np.float32(1) - f) * np.float32(WEIGHT_ONE))
    i1 = np.minimum(i0 + 1, n_src - 1)
    return i0.astype(np.int32), i1.astype(np.int32), w0.astype(np.int32)


def normalisation(spec: ModelSpec) -> Tuple[np.ndarray, np.ndarray, bool]:
    """float32 mean and 1/std in the model's channel order, and whether to swap B and R."""
    inv_std = 1.0 / np.asarray(spec.std, np.float32)
    return np.asarray(spec.mean, np.float32), inv_std.astype(np.float32), spec.color == "RGB"


def emulate(frame: np.ndarray, spec: ModelSpec, size: Tuple[int, int],
            keep_aspect: bool = False, region: Optional[Tuple[int, int, int, int]] = None
            ) -> Tuple[np.ndarray, Letterbox]:
    """The kernel's output for one frame (its (x, y, w, h) `region` only, when given), with the
    kernel's integer arithmetic and addressing in NumPy."""
    _check_frame(frame)
    box = make_letterbox(frame.shape[0], frame.shape[1], size[0], size[1], keep_aspect, region)
    left, top, width, height = box.area
    y0, y1, b0 = (t.astype(np.int64) for t in axis_table(height, box.content_h))
    x0, x1, a0 = (t.astype(np.int64) for t in axis_table(width, box.content_w))
    y0, y1, x0, x1 = y0 + top, y1 + top, x0 + left, x1 + left  # the kernel's src_y0 + ty0[y], ...
    src = frame.astype(np.int64)
    a0, a1 = a0[None, :, None], WEIGHT_ONE - a0[None, :, None]
    b0, b1 = b0[:, None, None], WEIGHT_ONE - b0[:, None, None]
    h0 = src[y0][:, x0] * a0 + src[y0][:, x1] * a1
    h1 = src[y1][:, x0] * a0 + src[y1][:, x1] * a1
    value = np.clip((((b0 * (h0 >> 4)) >> 16) + ((b1 * (h1 >> 4)) >> 16) + 2) >> 2, 0, 255)
    mean, inv_std, swap = normalisation(spec)
    if swap:
        value = value[..., ::-1]
    out = np.zeros((3, size[0], size[1]), np.float32)
    out[:, :box.content_h, :box.content_w] = ((value.astype(np.float32) - mean) * inv_std).transpose(2, 0, 1)
    return out, box


def _check_frame(frame) -> None:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ShapeError(f"expected an HxWx3 uint8 BGR frame, got {frame.shape} {frame.dtype}")


class GpuPreprocessor:
    """Frames -> CuPy (N, 3, H, W) float32 batch on the current CUDA stream.

    Each frame is copied into a pinned host buffer, uploaded asynchronously and processed by
    one kernel launch writing straight into its batch slot. Buffers are reused per slot, each
    calling thread having its own (a Detector may serve several Pipelines at once: a shared
    buffer was overwritten by one thread while the other's upload or launch still read it); the
    stream is synchronised before returning, so the batch is ready for any other stream.
    """

    def __init__(self, spec: ModelSpec, keep_aspect: bool = False):
        self.cp = require("cupy")
        self.spec = spec
        self.keep_aspect = keep_aspect
        self._kernel = self.cp.RawKernel(KERNEL_SOURCE, KERNEL_NAME)
        self._local = threading.local()  # .slots: [(pinned host view, device buffer)]
        self._tables: Dict[Tuple[int, int], Tuple[object, ...]] = {}  # (n_src, n_out) -> device

    def _buffers(self, slot: int, nbytes: int):
        slots: List[Tuple[np.ndarray, object]] = self._local.__dict__.setdefault("slots", [])
        while len(slots) <= slot:
            slots.append((np.empty(0, np.uint8), None))
        host, device = slots[slot]
        if host.nbytes < nbytes:
            memory = self.cp.cuda.alloc_pinned_memory(nbytes)
            host = np.frombuffer(memory, np.uint8, nbytes)
            device = self.cp.empty(nbytes, self.cp.uint8)
            slots[slot] = (host, device)
        return host[:nbytes], device[:nbytes]

    def __call__(self, frames: Sequence[np.ndarray], size: Tuple[int, int],
                 device_frames: Optional[list] = None, regions: Optional[list] = None):
        """`device_frames`: a list to which each frame's upload is appended as an (H, W, 3)
        CuPy array of its own (not a reused slot), for a later stage that works on the frame
        on the GPU (reading crops). `regions`: per frame the (x, y, w, h) part of it that goes
        onto the input (None: all); the whole frame is uploaded, the kernel reads the region."""
        cp = self.cp
        stream = cp.cuda.get_current_stream()
        batch = cp.empty((len(frames), 3, size[0], size[1]), cp.float32)
        letterboxes = []
        try:
            for slot, (frame, region) in enumerate(zip(frames, regions or [None] * len(frames))):
                _check_frame(frame)
                box = make_letterbox(frame.shape[0], frame.shape[1], size[0], size[1],
                                     self.keep_aspect, region)
                host, device = self._buffers(slot, frame.nbytes)
                if device_frames is not None:
                    device = cp.empty(frame.nbytes, cp.uint8)
                    device_frames.append(device.reshape(frame.shape))
                np.copyto(host, np.ascontiguousarray(frame).reshape(-1))
                device.set(host, stream=stream)
                self._launch(device, box, batch[slot])
                letterboxes.append(box)
        finally:  # also when a frame fails: the uploads still read the pinned slots that the
            stream.synchronize()  # next call rewrites
        return batch, letterboxes

    def _table(self, n_src: int, n_out: int):
        key = (n_src, n_out)
        if key not in self._tables:
            self._tables[key] = tuple(self.cp.asarray(t) for t in axis_table(n_src, n_out))
        return self._tables[key]

    def _launch(self, device, box: Letterbox, out) -> None:
        mean, inv_std, swap = normalisation(self.spec)
        left, top, width, height = box.area
        ty = self._table(height, box.content_h)
        tx = self._table(width, box.content_w)
        grid = ((box.input_w + BLOCK[0] - 1) // BLOCK[0], (box.input_h + BLOCK[1] - 1) // BLOCK[1], 1)
        i32 = np.int32
        self._kernel(grid, BLOCK, (
            device, i32(box.frame_w), i32(left), i32(top), *ty, *tx, out, i32(box.input_h), i32(box.input_w),
            i32(box.content_h), i32(box.content_w), *[np.float32(m) for m in mean],
            *[np.float32(k) for k in inv_std], i32(swap)))
