"""The CIFAR ResNets of He et al. 2016 (section 4.2) as a ``masking.models`` family; ResNet-20 registered.

A 3x3 conv to 16 channels, three stages of ``blocks`` basic blocks (16, 32 and 64 channels; the first block of
stages 2 and 3 strides 2), global average pooling and one fc output layer. A basic block is conv-BN-ReLU-conv-BN
plus the shortcut, then ReLU. Shortcuts are option A of the paper, the one He et al. used on CIFAR-10: the
identity, subsampled (stride 2) and zero-padded with the new channels where the width doubles; they have no
weights, so a ResNet-20 has 19 convs and 1 fc (about 0.27M prunable weights) and nothing else to prune.

Convs have no bias (batch norm follows each); batch norm starts at weight 1, bias 0. Weights are Glorot normal
like the paper's nets (He et al. used He-normal; batch norm makes the forward pass insensitive to that scale),
so the treatments that redraw or use the layer's init scale mean the same thing on every net.

Per-round prune rates (layer-wise, as the paper prunes): every conv 10% of its alive weights, the first conv
included, and the output layer 10% (the paper's conv and output rates; Frankle & Carbin pruned ResNets globally at
20%, which takes most from the large late convs). After 24 rounds 8% of each layer is left. Override with
``criterion.conv_rate`` / ``criterion.output_rate``.

Usual training (He et al. 2016 on CIFAR-10): SGD, momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by
10 at 32k and 48k iterations, 64k iterations (``masking.training``'s ``sgd_he2016`` optimizer). He et al. also
augmented the data (crops and flips); ticketlab does not (neither did the lottery paper).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from masking.models import FAMILIES, ArchSpec, Prunable, register


class BasicBlock(nn.Module):
    def __init__(self, conv: Callable, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = conv(in_channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv(channels, channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.stride, self.pad = stride, channels - in_channels

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A: identity, subsampled by the stride and zero-padded to the block's channels."""
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(Prunable, nn.Module):
    def __init__(self, arch: ArchSpec, linear: Callable, conv: Callable,
                 input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None):
        super().__init__()
        self.arch = arch
        self.input_shape = tuple(input_shape or arch.input_shape)
        widths = [int(w) for w in arch.conv]
        self.conv = conv(self.input_shape[0], widths[0], kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        blocks, channels = [], widths[0]
        for stage, width in enumerate(widths):
            for i in range(arch.blocks):
                blocks.append(BasicBlock(conv, channels, width, 2 if stage > 0 and i == 0 else 1))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = linear(channels, num_classes or arch.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(x.mean(dim=(2, 3)))


FAMILIES.add("resnet", ResNet)
register(ArchSpec("resnet20", "cifar10", (3, 32, 32), (16, 32, 64), (), {"conv": 0.1, "output": 0.1}, 0.1, 64_000,
                  family="resnet", blocks=3, optimizer="sgd_he2016", batch_size=128,
                  paper_config="resnet20_cifar10"))
