"""A small 1D CNN for sequence inputs such as MNIST-1D.

The layout follows the MNIST-1D paper's ``ConvBase`` (Greydanus 2020): three
strided Conv1d layers with ReLU and one linear classifier, which reaches about
94% test accuracy there. ``channels`` widens it.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvNet1D(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: int = 32) -> None:
        super().__init__()
        if len(input_shape) == 1:
            in_channels, length = 1, input_shape[0]
        elif len(input_shape) == 2:
            in_channels, length = input_shape
        else:
            raise ValueError(f"expects inputs of shape (L,) or (C, L), got {input_shape}")
        self.features = nn.Sequential(
            nn.Conv1d(in_channels, channels, kernel_size=5, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            width = self.features(torch.zeros(1, in_channels, length)).shape[1]
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # (N, L) -> (N, 1, L)
            x = x.unsqueeze(1)
        return self.classifier(self.features(x))
