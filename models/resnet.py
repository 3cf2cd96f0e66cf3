"""ResNet-18 for 32x32 images: the CIFAR variant (He et al. 2016, as in kuangliu/pytorch-cifar).

A 3x3 stride-1 stem with no max-pool keeps the small images' resolution; four
stages of two BasicBlocks each, at widths ``width`` x (1, 2, 4, 8) and strides
(1, 2, 2, 2), then global average pooling and one linear layer. At the default
``width=64`` and 10 classes it has 11,173,962 parameters; a small ``width``
makes a model the tests can train in seconds.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 64) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be at least 1, got {width}")
        if len(input_shape) == 2:  # (H, W): one channel
            in_channels = 1
        elif len(input_shape) == 3:
            in_channels = input_shape[0]
        else:
            raise ValueError(f"expects images of shape (C, H, W) or (H, W), got {input_shape}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        channels = width
        for stage, stride in enumerate((1, 2, 2, 2)):
            out_channels = width * 2**stage
            for block_stride in (stride, 1):
                blocks.append(BasicBlock(channels, out_channels, block_stride))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # (N, H, W) -> (N, 1, H, W)
            x = x.unsqueeze(1)
        return self.fc(self.pool(self.blocks(self.stem(x))))
