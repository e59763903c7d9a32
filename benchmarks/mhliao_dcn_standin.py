"""A pure-PyTorch stand-in for MhLiao/DB's compiled deformable-convolution extension.

MhLiao/DB's `assets/ops/dcn` package imports a CUDA extension (`deform_conv_cuda`, built from
`src/deform_conv_cuda.cpp` + `deform_conv_cuda_kernel.cu`) and, for RoI pooling, `deform_pool_cuda`.
`install(snapshot)` puts modules of those names into `sys.modules` so that their own Python layer
(`ModulatedDeformConv`, `ModulatedDeformConvFunction`) runs unchanged on the CPU.

The stand-in follows the kernel, not the textbook definition, because the released checkpoints
were trained with the kernel:
- `modulated_deformable_im2col_gpu_kernel` reads `offset[b]` and `mask[b]` through raw pointers
  as contiguous (2 * taps, Ho, Wo) and (taps, Ho, Wo) arrays, whatever their real shape and
  strides: `_as_kernel_reads` makes exactly that view with `torch.as_strided`;
- bilinear sampling: zero unless -1 < y < H and -1 < x < W, each of the four corners only if it
  lies inside the image (`dmcn_im2col_bilinear`); the sampled value is multiplied by the mask;
- columns (C * taps, Ho * Wo) times the (Cout, C * taps) weight, then the bias if any.
It is written with explicit index arithmetic and `gather`, independently of dbrt's
`export/dcn.py` (which uses `grid_sample`), so the comparison checks one against the other.
Only the forward pass (groups = deformable groups = 1) is provided; any other function of
the extension is an AttributeError naming it.
"""
from __future__ import annotations

import sys
import types
from contextlib import contextmanager

import torch

EXTENSION = "assets.ops.dcn.deform_conv_cuda"
POOL_EXTENSION = "assets.ops.dcn.deform_pool_cuda"


def _as_kernel_reads(tensor: torch.Tensor, channels: int, out_h: int, out_w: int) -> torch.Tensor:
    """What the kernel sees through `tensor[b].data<float>()`: contiguous (channels, Ho, Wo)."""
    need = tensor.storage_offset() + (tensor.shape[0] - 1) * tensor.stride(0) + channels * out_h * out_w
    if need > tensor.untyped_storage().nbytes() // tensor.element_size():
        raise RuntimeError("the CUDA kernel would read past the end of this tensor's memory")
    return torch.as_strided(tensor, (tensor.shape[0], channels, out_h, out_w),
                            (tensor.stride(0), out_h * out_w, out_w, 1), tensor.storage_offset())


def _bilinear(image: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dmcn_im2col_bilinear for every channel: image (N, C, H, W), y / x (N, P) -> (N, C, P)."""
    n, c, h, w = image.shape
    flat = image.reshape(n, c, h * w)
    inside = (y > -1) & (x > -1) & (y < h) & (x < w)
    y0, x0 = torch.floor(y), torch.floor(x)
    ly, lx = y - y0, x - x0
    y0, x0 = y0.long(), x0.long()
    out = torch.zeros(n, c, y.shape[1], dtype=image.dtype)
    for dy, dx, weight in ((0, 0, (1 - ly) * (1 - lx)), (0, 1, (1 - ly) * lx),
                           (1, 0, ly * (1 - lx)), (1, 1, ly * lx)):
        yy, xx = y0 + dy, x0 + dx
        valid = inside & (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
        index = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).unsqueeze(1).expand(n, c, -1)
        corner = torch.gather(flat, 2, index)
        out += corner * (weight * valid).unsqueeze(1)
    return out


def modulated_deform_conv_cuda_forward(input, weight, bias, ones, offset, mask, output, columns,
                                       kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                       dilation_h, dilation_w, group, deformable_group,
                                       with_bias):
    """Same signature and in-place `output` contract as the extension's function."""
    if group != 1 or deformable_group != 1:
        raise NotImplementedError("stand-in supports groups = deformable_groups = 1 only")
    n, channels, height, width = input.shape
    out_h = (height + 2 * pad_h - (dilation_h * (kernel_h - 1) + 1)) // stride_h + 1
    out_w = (width + 2 * pad_w - (dilation_w * (kernel_w - 1) + 1)) // stride_w + 1
    taps = kernel_h * kernel_w
    offsets = _as_kernel_reads(offset, 2 * taps, out_h, out_w)
    masks = _as_kernel_reads(mask, taps, out_h, out_w)
    rows = (torch.arange(out_h, dtype=input.dtype) * stride_h - pad_h).view(out_h, 1)
    cols = (torch.arange(out_w, dtype=input.dtype) * stride_w - pad_w).view(1, out_w)
    sampled = []
    for tap in range(taps):
        i, j = divmod(tap, kernel_w)
        y = rows + i * dilation_h + offsets[:, 2 * tap]          # (N, Ho, Wo)
        x = cols + j * dilation_w + offsets[:, 2 * tap + 1]
        value = _bilinear(input, y.reshape(n, -1), x.reshape(n, -1))
        sampled.append(value * masks[:, tap].reshape(n, 1, -1))
    columns = torch.stack(sampled, dim=2).reshape(n, channels * taps, out_h * out_w)
    result = torch.matmul(weight.reshape(weight.shape[0], -1), columns)
    output.copy_(result.view(n, weight.shape[0], out_h, out_w))
    if with_bias:
        output += bias.view(1, -1, 1, 1)


def _not_stood_in(module_name: str):
    def __getattr__(name):  # AttributeError, so that hasattr() and introspection keep working
        raise AttributeError(f"{module_name}.{name}: only the modulated DCN forward pass is "
                             "stood in for MhLiao/DB's compiled extension")
    return __getattr__


def install() -> None:
    """Register the stand-in extension modules (before importing their `assets.ops.dcn`)."""
    conv = types.ModuleType(EXTENSION, "pure-PyTorch stand-in for MhLiao/DB's deform_conv_cuda")
    conv.modulated_deform_conv_cuda_forward = modulated_deform_conv_cuda_forward
    conv.__getattr__ = _not_stood_in(EXTENSION)
    pool = types.ModuleType(POOL_EXTENSION, "MhLiao/DB's deform_pool_cuda (not used by DBNet)")
    pool.__getattr__ = _not_stood_in(POOL_EXTENSION)
    sys.modules[EXTENSION] = conv
    sys.modules[POOL_EXTENSION] = pool


@contextmanager
def cpu_passes_their_cuda_guard():
    """Their `ModulatedDeformConvFunction.forward` refuses non-CUDA tensors before it calls the
    extension; while their model runs on the CPU, tensors answer `is_cuda` with True."""
    torch.Tensor.is_cuda = property(lambda self: True)
    try:
        yield
    finally:
        del torch.Tensor.is_cuda
