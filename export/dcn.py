"""Modulated deformable convolution (DCNv2) in plain PyTorch, exported as ONNX `DeformConv`.

Every released MhLiao/DB checkpoint uses it in ResNet stages 2-4. MhLiao's block computes a
27-channel `conv2_offset(x)`: 18 offsets (a (dy, dx) pair per kernel tap, tap-major, the layout
of mmcv, torchvision and ONNX) followed by 9 mask logits; the mask is their sigmoid. In their
stride-2 Bottleneck the offset map has the input's size and is read as their CUDA kernel reads
it (`as_kernel_reads`).

    conv = ModulatedDeformConv2d(64, 64, 3, padding=1, bias=False)   # key names: weight (, bias)
    y = conv(x, offset_mask)                                         # offset_mask: (N, 27, Ho, Wo)

No compiled extension: bilinear sampling is one `grid_sample` call for all taps, followed by a
1x1 convolution over the (C * taps) sampled columns. During `torch.onnx.export` (legacy exporter,
opset >= 19) the module emits a single ONNX `DeformConv` node, which TensorRT >= 10.1 parses
natively and ONNX Runtime / the ONNX reference evaluator can run.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

DEFORM_CONV_MIN_OPSET = 19


def _pair(value) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _sampling_grid(offset: torch.Tensor, in_hw, kernel, stride, padding, dilation) -> torch.Tensor:
    """Normalised grid_sample coordinates (N, taps*Ho, Wo, 2) for every tap and output pixel."""
    n, _, out_h, out_w = offset.shape
    kh, kw = kernel
    taps = kh * kw
    dtype, device = offset.dtype, offset.device
    # Regular grid: output pixel (i, j), tap (a, b) reads input (i*s - p + a*d, j*s - p + b*d).
    ys = torch.arange(out_h, dtype=dtype, device=device) * stride[0] - padding[0]
    xs = torch.arange(out_w, dtype=dtype, device=device) * stride[1] - padding[1]
    ty = (torch.arange(kh, dtype=dtype, device=device) * dilation[0]).repeat_interleave(kw)
    tx = (torch.arange(kw, dtype=dtype, device=device) * dilation[1]).repeat(kh)
    base_y = ty.view(taps, 1, 1) + ys.view(1, out_h, 1)
    base_x = tx.view(taps, 1, 1) + xs.view(1, 1, out_w)
    off = offset.view(n, taps, 2, out_h, out_w)
    y = base_y.unsqueeze(0) + off[:, :, 0]
    x = base_x.unsqueeze(0) + off[:, :, 1]
    # align_corners=False maps pixel p to (2p + 1) / size - 1; outside corners read zero,
    # exactly the DCN convention (also correct for size 1).
    in_h, in_w = in_hw
    gy = (2 * y + 1) / in_h - 1
    gx = (2 * x + 1) / in_w - 1
    return torch.stack((gx, gy), dim=-1).reshape(n, taps * out_h, out_w, 2)


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, mask: Optional[torch.Tensor],
                  weight: torch.Tensor, bias: Optional[torch.Tensor], stride=1, padding=0,
                  dilation=1) -> torch.Tensor:
    """Modulated deformable convolution (groups = offset groups = 1), differentiable."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    n, channels, in_h, in_w = x.shape
    out_ch, _, kh, kw = weight.shape
    taps = kh * kw
    out_h, out_w = offset.shape[-2:]
    grid = _sampling_grid(offset, (in_h, in_w), (kh, kw), stride, padding, dilation)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(n, channels, taps, out_h, out_w)
    if mask is not None:
        sampled = sampled * mask.view(n, 1, taps, out_h, out_w)
    columns = sampled.reshape(n, channels * taps, out_h, out_w)
    return F.conv2d(columns, weight.reshape(out_ch, channels * taps, 1, 1), bias)


@torch.library.custom_op("dbrt::deform_conv2d", mutates_args=())
def _deform_conv_op(x: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor,
                    bias: Optional[torch.Tensor], mask: torch.Tensor, stride: List[int],
                    padding: List[int], dilation: List[int]) -> torch.Tensor:
    """An opaque op for the exporter's tracer; `_deform_conv_symbolic` turns it into DeformConv."""
    return deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)


@_deform_conv_op.register_fake
def _(x, weight, offset, bias, mask, stride, padding, dilation):
    return x.new_empty(x.shape[0], weight.shape[0], offset.shape[2], offset.shape[3])


def _deform_conv_symbolic(g, x, weight, offset, bias, mask, stride, padding, dilation):
    from torch.onnx import symbolic_helper as sym

    stride, padding, dilation = (sym._get_const(v, "is", name)
                                 for v, name in ((stride, "stride"), (padding, "padding"),
                                                 (dilation, "dilation")))
    kernel = sym._get_tensor_sizes(weight)[-2:]
    if sym._is_none(bias):  # an empty input name: ONNX's way to skip the optional bias
        bias = sym._optional_input_placeholder_tensor(g)
    return g.op("DeformConv", x, weight, offset, bias, mask, strides_i=stride,
                pads_i=list(padding) * 2, dilations_i=dilation, kernel_shape_i=kernel,
                group_i=1, offset_group_i=1)


def register_onnx_symbolic(opset: int) -> None:
    """Let the (TorchScript) ONNX exporter emit DeformConv; needs opset >= 19."""
    torch.onnx.register_custom_op_symbolic("dbrt::deform_conv2d", _deform_conv_symbolic, opset)


def as_kernel_reads(offset_mask: torch.Tensor, out_h, out_w) -> torch.Tensor:
    """`offset_mask` (N, 3 * taps, H, W) as MhLiao/DB's compiled kernel reads it for a smaller
    (Ho, Wo) output: per sample, the first 2 * taps * Ho * Wo values of the offset planes taken
    as contiguous (2 * taps, Ho, Wo), likewise the first taps * Ho * Wo mask values.

    Their deformable Bottleneck computes the offsets with a stride-1 conv but convolves with
    stride 2 (first block of stages 2-4), and the kernel indexes `offset[b]` / `mask[b]` by raw
    pointer without a shape check, so this, not a strided offset map, is what the released
    ResNet-50 DCN checkpoints were trained with.
    """
    taps = offset_mask.shape[1] // 3
    n = offset_mask.shape[0]
    offset = offset_mask[:, :2 * taps].flatten(1)[:, :2 * taps * out_h * out_w]
    mask = offset_mask[:, 2 * taps:].flatten(1)[:, :taps * out_h * out_w]
    return torch.cat((offset, mask), 1).reshape(n, 3 * taps, out_h, out_w)


class ModulatedDeformConv2d(nn.Module):
    """MhLiao/mmcv `ModulatedDeformConv` with the same parameter names (`weight`, `bias`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=0,
                 dilation=1, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    @property
    def taps(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    def output_size(self, x: torch.Tensor) -> Tuple[int, int]:
        """(Ho, Wo) of this convolution on `x` (traced as shape arithmetic during ONNX export)."""
        k, s, p, d = self.kernel_size, self.stride, self.padding, self.dilation
        return tuple((x.shape[2 + i] + 2 * p[i] - (d[i] * (k[i] - 1) + 1)) // s[i] + 1
                     for i in range(2))

    def forward(self, x: torch.Tensor, offset_mask: torch.Tensor) -> torch.Tensor:
        taps = self.taps
        if not torch.jit.is_tracing() and offset_mask.shape[1] != 3 * taps:
            raise ValueError(f"offset_mask needs {3 * taps} channels (offsets then mask logits), "
                             f"got {offset_mask.shape[1]}")
        offset = offset_mask[:, :2 * taps]
        mask = torch.sigmoid(offset_mask[:, 2 * taps:])
        if torch.onnx.is_in_onnx_export():
            return _deform_conv_op(x, self.weight, offset, self.bias, mask, list(self.stride),
                                   list(self.padding), list(self.dilation))
        return deform_conv2d(x, offset, mask, self.weight, self.bias,
                             self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")
