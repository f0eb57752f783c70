"""Residual networks for images, and CIFAR-shaped images made from data that ship with scikit-learn.

``ResNet`` is the CIFAR ResNet of He et al. 2016 (section 4.2): a 3x3 stem convolution with ``width``
channels, three stages of ``n`` basic blocks (two 3x3 convolutions with BatchNorm and ReLU, plus a
shortcut) at ``width``, 2 ``width`` and 4 ``width`` channels on maps of 32, 16 and 8 pixels, global average
pooling and a linear classifier: depth 6n + 2 (ResNet-20: n = 3, 0.27M parameters; ResNet-56: n = 9,
0.86M). A block that changes the number of channels or the map size has a projection shortcut (a strided
1x1 convolution with BatchNorm, the paper's option B); the others add their input unchanged (identity).

``digits32`` turns scikit-learn's 8x8 digits into 32x32 colour images: each digit upsampled bilinearly,
then painted in a random foreground colour on a random darker background (one pair per image, from a fixed
seed), so that a network has to see shape, not colour, to classify it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

Tensor = torch.Tensor


class Block(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), the shortcut a projection when the shape changes."""

    def __init__(self, channels_in: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Identity()
        if stride != 1 or channels_in != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(channels_in, channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR ResNet of depth 6n + 2 (see the module docstring): ``[N, 3, H, W]`` images to ``[N, classes]``
    logits."""

    def __init__(self, depth: int = 20, width: int = 16, classes: int = 10):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (8, 14, 20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        stages, channels = [], width
        for stage, stride in enumerate((1, 2, 2)):
            blocks = []
            for i in range(n):
                blocks.append(Block(channels, width * 2 ** stage, stride if i == 0 else 1))
                channels = width * 2 ** stage
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def digits32(X: Tensor, seed: int = 0) -> Tensor:
    """8x8 digit images ``[m, 64]`` in [0, 1] as coloured 32x32 images ``[m, 3, 32, 32]`` in [0, 1]: upsampled
    bilinearly, foreground colour in [0.5, 1]^3 on a background in [0, 0.4]^3, one random pair per image."""
    g = torch.Generator().manual_seed(seed)
    m = len(X)
    shape = F.interpolate(X.reshape(m, 1, 8, 8), size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
    foreground = 0.5 + 0.5 * torch.rand(m, 3, 1, 1, generator=g)
    background = 0.4 * torch.rand(m, 3, 1, 1, generator=g)
    return background + (foreground - background) * shape
