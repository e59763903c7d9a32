"""DBNet in PyTorch with MhLiao/DB's module names, so its checkpoints load key for key.

    model = DBNet("resnet18")          # backbone.*, decoder.in2..in5, out2..out5, binarize, thresh
    model.eval(); prob = model(x)      # eval: (N, 1, H, W) probability map
    model.train(); out = model(x)      # train: dict(binary, thresh, thresh_binary)

Backbones: resnet18 / resnet34 (BasicBlock), resnet50 (Bottleneck); `dcn=True` puts modulated
deformable convolution in stages 2-4 as in every released MhLiao/DB checkpoint (see export.dcn).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import List

import torch
from torch import nn

ARCHS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}


def _deform_conv(planes_in: int, planes_out: int, stride: int) -> nn.Module:
    from .dcn import ModulatedDeformConv2d  # torch-only implementation, no compiled extension

    return ModulatedDeformConv2d(planes_in, planes_out, kernel_size=3, stride=stride, padding=1,
                                 bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, dcn=False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.with_dcn = dcn
        if dcn:
            # MhLiao: offset conv named conv2_offset, 27 channels (18 offsets + 9 masks).
            self.conv2_offset = nn.Conv2d(planes, 27, 3, padding=1)
            self.conv2 = _deform_conv(planes, planes, 1)
        else:
            self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def _conv2(self, x):
        if self.with_dcn:
            return self.conv2(x, self.conv2_offset(x))
        return self.conv2(x)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self._conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dcn=False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.with_dcn = dcn
        if dcn:  # MhLiao: the offset conv has stride 1 even where conv2 has stride 2
            self.conv2_offset = nn.Conv2d(planes, 27, 3, padding=1)
            self.conv2 = _deform_conv(planes, planes, stride)
        else:
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def _conv2(self, x):
        if not self.with_dcn:
            return self.conv2(x)
        offset_mask = self.conv2_offset(x)
        if self.conv2.stride != (1, 1):  # a full-resolution map read as the CUDA kernel reads it
            from .dcn import as_kernel_reads

            offset_mask = as_kernel_reads(offset_mask, *self.conv2.output_size(x))
        return self.conv2(x, offset_mask)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self._conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def stage_channels(width: float) -> List[int]:
    """The four ResNet stages' channels at `width` (< 1: a compact variant, same layout and
    names, fewer channels); each stage is rounded on its own."""
    return [max(8, int(round(c * width))) for c in (64, 128, 256, 512)]


class ResNet(nn.Module):
    """ResNet feature extractor returning C2..C5 (strides 4, 8, 16, 32)."""

    def __init__(self, arch: str = "resnet18", dcn: bool = False, width: float = 1.0):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(ARCHS)}")
        kind, layers = ARCHS[arch]
        block = BasicBlock if kind == "basic" else Bottleneck
        c = stage_channels(width)
        self.inplanes = c[0]
        self.conv1 = nn.Conv2d(3, c[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, c[0], layers[0])
        self.layer2 = self._make_layer(block, c[1], layers[1], 2, dcn)
        self.layer3 = self._make_layer(block, c[2], layers[2], 2, dcn)
        self.layer4 = self._make_layer(block, c[3], layers[3], 2, dcn)
        self.out_channels = [ch * block.expansion for ch in c]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # offsets start at zero: DCN begins as a plain convolution
            for name, child in m.named_children():
                if name == "conv2_offset":
                    nn.init.zeros_(child.weight)
                    nn.init.zeros_(child.bias)

    def _make_layer(self, block, planes, blocks, stride=1, dcn=False):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, dcn=dcn)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dcn=dcn) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c2, c3, c4, c5


def _upsample_head(inner: int) -> nn.Sequential:
    """conv-bn-relu then two stride-2 transposed convolutions to full resolution, sigmoid."""
    q = inner // 4
    return nn.Sequential(
        nn.Conv2d(inner, q, 3, padding=1, bias=False),
        nn.BatchNorm2d(q),
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(q, q, 2, 2),
        nn.BatchNorm2d(q),
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(q, 1, 2, 2),
        nn.Sigmoid())


class SegDetector(nn.Module):
    """FPN neck + DB head (MhLiao's `SegDetector` with adaptive=True, k=50)."""

    def __init__(self, in_channels: List[int], inner_channels: int = 256, k: float = 50.0):
        super().__init__()
        self.k = k
        self.up5 = nn.Upsample(scale_factor=2, mode="nearest")
        self.up4 = nn.Upsample(scale_factor=2, mode="nearest")
        self.up3 = nn.Upsample(scale_factor=2, mode="nearest")
        self.in5 = nn.Conv2d(in_channels[3], inner_channels, 1, bias=False)
        self.in4 = nn.Conv2d(in_channels[2], inner_channels, 1, bias=False)
        self.in3 = nn.Conv2d(in_channels[1], inner_channels, 1, bias=False)
        self.in2 = nn.Conv2d(in_channels[0], inner_channels, 1, bias=False)
        q = inner_channels // 4
        self.out5 = nn.Sequential(nn.Conv2d(inner_channels, q, 3, padding=1, bias=False),
                                  nn.Upsample(scale_factor=8, mode="nearest"))
        self.out4 = nn.Sequential(nn.Conv2d(inner_channels, q, 3, padding=1, bias=False),
                                  nn.Upsample(scale_factor=4, mode="nearest"))
        self.out3 = nn.Sequential(nn.Conv2d(inner_channels, q, 3, padding=1, bias=False),
                                  nn.Upsample(scale_factor=2, mode="nearest"))
        self.out2 = nn.Conv2d(inner_channels, q, 3, padding=1, bias=False)
        self.binarize = _upsample_head(inner_channels)
        self.thresh = _upsample_head(inner_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.constant_(m.bias, 1e-4)

    def forward(self, features):
        c2, c3, c4, c5 = features
        in5 = self.in5(c5)
        out4 = self.up5(in5) + self.in4(c4)
        out3 = self.up4(out4) + self.in3(c3)
        out2 = self.up3(out3) + self.in2(c2)
        fuse = torch.cat((self.out5(in5), self.out4(out4), self.out3(out3), self.out2(out2)), 1)
        binary = self.binarize(fuse)
        if not self.training:
            return binary  # only the probability map is needed at inference
        thresh = self.thresh(fuse)
        thresh_binary = torch.reciprocal(1 + torch.exp(-self.k * (binary - thresh)))
        return OrderedDict(binary=binary, thresh=thresh, thresh_binary=thresh_binary)


class DBNet(nn.Module):
    """backbone + decoder, as MhLiao's `BasicModel` (checkpoint keys `backbone.*`, `decoder.*`)."""

    def __init__(self, arch: str = "resnet18", dcn: bool = False, width: float = 1.0,
                 inner_channels: int = None):
        super().__init__()
        self.arch = arch
        self.dcn = dcn
        self.width = width
        self.backbone = ResNet(arch, dcn=dcn, width=width)
        inner = inner_channels or max(32, int(round(256 * width)) // 4 * 4)
        self.decoder = SegDetector(self.backbone.out_channels, inner)

    def forward(self, x):
        return self.decoder(self.backbone(x))

    @property
    def arch_name(self) -> str:
        width = "" if self.width == 1.0 else f"_w{self.width:g}"
        return f"dbnet_{self.arch}{width}{'_dcn' if self.dcn else ''}"

