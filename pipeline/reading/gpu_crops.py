"""Text crops cut on the GPU from a frame already there (CuPy RawKernel), straight into the
recognizer's normalised (N, 3, height, W) batch: one kernel launch per batch of crops.

The geometry is the CPU path's (`crops.py`): the same quads, crop sizes and quarter turns
(`plan_crops`), the same perspective transform per quad (OpenCV's getPerspectiveTransform) and
BORDER_REPLICATE. Each output pixel is the bilinear sample of the source at the transform of its
integer position, rounded to 8 bits as warpPerspective writes it. Text much taller than the crop
(the CPU path warps at native size and shrinks with INTER_AREA) is averaged over s x s bilinear
samples per pixel (s = the shrink factor rounded up, at most MAX_SAMPLES). The rest of the batch
width is zero (the normalised mid-grey PaddleOCR pads with), as in `recognizer._normalise`.

`emulate` runs the kernel's arithmetic with NumPy (float32, as the kernel does), so the
geometry is tested against OpenCV on machines without a GPU; the `gpu`-marked tests compare the
kernel with it. CuPy is imported only when a `GpuCropper` is made.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from engine.errors import ShapeError
from engine.lazy import require

from .crops import CropPlan
from .spec import RecSpec

MAX_SAMPLES = 8
KERNEL_NAME = "warp_crops_normalise"
KERNEL_SOURCE = r"""
// One thread per (batch column x, crop row y, crop n). geo[n]: 9 floats of the inverse
// perspective matrix (crop -> source, row-major), then sx, sy (crop -> warp scale) and the
// samples per axis s; widths[n]: the crop's own width (columns beyond it are padding).
extern "C" __global__ void warp_crops_normalise(
        const unsigned char* __restrict__ src, const int src_h, const int src_w,
        const float* __restrict__ geo, const int* __restrict__ widths,
        float* __restrict__ dst, const int n_crops, const int height, const int width,
        const float m0, const float m1, const float m2,
        const float k0, const float k1, const float k2, const int swap_rb) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int n = blockIdx.z;
    if (x >= width || y >= height || n >= n_crops) return;
    const int plane = height * width;
    float* out = dst + (size_t)n * 3 * plane + y * width + x;
    if (x >= widths[n]) { out[0] = 0.f; out[plane] = 0.f; out[2 * plane] = 0.f; return; }
    const float* g = geo + n * 12;
    const float sx = g[9], sy = g[10];
    const int s = (int)g[11];
    int acc[3] = {0, 0, 0};
    for (int i = 0; i < s; ++i) {
        const float Y = ((float)y + ((float)i + 0.5f) / (float)s) * sy - 0.5f;
        for (int j = 0; j < s; ++j) {
            const float X = ((float)x + ((float)j + 0.5f) / (float)s) * sx - 0.5f;
            const float w = g[6] * X + g[7] * Y + g[8];
            const float u = (g[0] * X + g[1] * Y + g[2]) / w;
            const float v = (g[3] * X + g[4] * Y + g[5]) / w;
            const float u0f = floorf(u), v0f = floorf(v);
            const float fu = u - u0f, fv = v - v0f;
            const int u0 = min(max((int)u0f, 0), src_w - 1), u1 = min(max((int)u0f + 1, 0), src_w - 1);
            const int v0 = min(max((int)v0f, 0), src_h - 1), v1 = min(max((int)v0f + 1, 0), src_h - 1);
            const unsigned char* p00 = src + ((size_t)v0 * src_w + u0) * 3;
            const unsigned char* p01 = src + ((size_t)v0 * src_w + u1) * 3;
            const unsigned char* p10 = src + ((size_t)v1 * src_w + u0) * 3;
            const unsigned char* p11 = src + ((size_t)v1 * src_w + u1) * 3;
            for (int c = 0; c < 3; ++c) {
                const float top = p00[c] + fu * ((float)p01[c] - (float)p00[c]);
                const float bottom = p10[c] + fu * ((float)p11[c] - (float)p10[c]);
                const float value = top + fv * (bottom - top);
                acc[c] += min(max((int)floorf(value + 0.5f), 0), 255);
            }
        }
    }
    const float mean[3] = {m0, m1, m2};
    const float inv_std[3] = {k0, k1, k2};
    const int count = s * s;
    for (int c = 0; c < 3; ++c) {
        const int pixel = (acc[c] + count / 2) / count;
        const int oc = swap_rb ? 2 - c : c;  // the frame is BGR; an RGB model gets them swapped
        out[oc * plane] = ((float)pixel - mean[oc]) * inv_std[oc];
    }
}
"""
BLOCK = (32, 8, 1)


@dataclass(frozen=True)
class CropGeometry:
    """Per crop of a batch: the 12 floats the kernel reads, the crop widths and the batch width."""

    geo: np.ndarray     # (n, 12) float32: inverse matrix (9), sx, sy, samples per axis
    widths: np.ndarray  # (n,) int32
    width: int          # the batch's (bucketed) width
    height: int


def crop_geometry(plan: CropPlan, members: Sequence[int], spec: RecSpec) -> CropGeometry:
    """The per-crop transforms of `members` of `plan`, as the CPU path's cut_crop makes them."""
    geo = np.zeros((len(members), 12), np.float32)
    widths = np.asarray([int(plan.widths[i]) for i in members], np.int32)
    height = plan.height
    for k, i in enumerate(members):
        corners = plan.corners[i]
        width = int(widths[k])
        native_h = max(np.linalg.norm(corners[3] - corners[0]), np.linalg.norm(corners[2] - corners[1]))
        warp_w, warp_h = width, height
        # the CPU path warps at about native size, then shrinks (its cap on that warp's pixels
        # binds only for polygons far outside the frame; this kernel allocates no such warp)
        if native_h > 2 * height:
            scale = native_h / height
            warp_w, warp_h = int(round(width * scale)), int(round(height * scale))
        target = np.float32([[0, 0], [warp_w, 0], [warp_w, warp_h], [0, warp_h]])
        matrix = cv2.getPerspectiveTransform(np.ascontiguousarray(corners, np.float32), target)
        sx, sy = warp_w / width, warp_h / height
        samples = min(MAX_SAMPLES, max(1, math.ceil(max(sx, sy) - 1e-6)))
        geo[k, :9] = np.linalg.inv(matrix).reshape(-1)
        geo[k, 9:] = (sx, sy, samples)
    return CropGeometry(geo, widths, spec.batch_width(int(widths.max())), height)


def _normalisation(spec: RecSpec):
    """Mean and 1/std in 0..255 units, in the model's channel order, and whether to swap B, R."""
    std = np.asarray(spec.std, np.float32) * 255.0
    return (np.asarray(spec.mean, np.float32) * 255.0, (1.0 / std).astype(np.float32),
            not spec.bgr)


def emulate(image: np.ndarray, geometry: CropGeometry, spec: RecSpec) -> np.ndarray:
    """The kernel's (N, 3, height, width) float32 output, computed with NumPy."""
    src_h, src_w = image.shape[:2]
    g = geometry
    out = np.zeros((len(g.widths), 3, g.height, g.width), np.float32)
    mean, inv_std, swap = _normalisation(spec)
    f32 = np.float32
    for n, (row, crop_w) in enumerate(zip(g.geo, g.widths)):
        s = int(row[11])
        y, x = np.mgrid[0:g.height, 0:crop_w].astype(f32)
        acc = np.zeros((g.height, crop_w, 3), np.int64)
        for i in range(s):
            Y = (y + (f32(i) + f32(0.5)) / f32(s)) * row[10] - f32(0.5)
            for j in range(s):
                X = (x + (f32(j) + f32(0.5)) / f32(s)) * row[9] - f32(0.5)
                w = row[6] * X + row[7] * Y + row[8]
                u, v = (row[0] * X + row[1] * Y + row[2]) / w, (row[3] * X + row[4] * Y + row[5]) / w
                acc += _bilinear_u8(image, u, v, src_h, src_w)
        count = s * s
        pixel = ((acc + count // 2) // count).astype(f32)
        if swap:
            pixel = pixel[..., ::-1]
        out[n, :, :, :crop_w] = ((pixel - mean) * inv_std).transpose(2, 0, 1)
    return out


def _bilinear_u8(image, u, v, src_h, src_w) -> np.ndarray:
    u0f, v0f = np.floor(u), np.floor(v)
    fu, fv = (u - u0f)[..., None], (v - v0f)[..., None]
    u0 = np.clip(u0f.astype(np.int64), 0, src_w - 1)
    u1 = np.clip(u0f.astype(np.int64) + 1, 0, src_w - 1)
    v0 = np.clip(v0f.astype(np.int64), 0, src_h - 1)
    v1 = np.clip(v0f.astype(np.int64) + 1, 0, src_h - 1)
    px = image.astype(np.float32)
    top = px[v0, u0] + fu * (px[v0, u1] - px[v0, u0])
    bottom = px[v1, u0] + fu * (px[v1, u1] - px[v1, u0])
    value = top + fv * (bottom - top)
    return np.clip(np.floor(value + np.float32(0.5)), 0, 255).astype(np.int64)


class GpuCropper:
    """A CuPy frame + a batch of planned crops -> the recognizer's CuPy input batch."""

    def __init__(self, spec: RecSpec):
        self.cp = require("cupy")
        self.spec = spec
        self._kernel = self.cp.RawKernel(KERNEL_SOURCE, KERNEL_NAME)

    def __call__(self, image, plan: CropPlan, members: Sequence[int]):
        cp = self.cp
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != cp.uint8:
            raise ShapeError(f"expected an HxWx3 uint8 BGR frame on the GPU, got {image.shape} {image.dtype}")
        image = cp.ascontiguousarray(image)
        g = crop_geometry(plan, members, self.spec)
        out = cp.empty((len(members), 3, g.height, g.width), cp.float32)
        mean, inv_std, swap = _normalisation(self.spec)
        grid = (-(-g.width // BLOCK[0]), -(-g.height // BLOCK[1]), len(members))
        i32 = np.int32
        self._kernel(grid, BLOCK, (
            image, i32(image.shape[0]), i32(image.shape[1]), cp.asarray(g.geo), cp.asarray(g.widths),
            out, i32(len(members)), i32(g.height), i32(g.width), *[np.float32(m) for m in mean],
            *[np.float32(k) for k in inv_std], i32(swap)))
        return out
