"""A small Vision Transformer (Dosovitskiy et al. 2021) for images or 1-D signals.

Non-overlapping patches are embedded by a strided convolution (Conv2d for
(C, H, W) images, Conv1d along the length for (C, L) or (L,) signals such as
MNIST-1D), a class token and learned position embeddings are added, and
``depth`` pre-norm encoder layers (torch's ``nn.TransformerEncoderLayer``, GELU,
no dropout) feed a LayerNorm + linear head on the class token.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ViT(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        patch_size: int = 4,
        dim: int = 128,
        depth: int = 6,
        heads: int = 4,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        if min(patch_size, dim, depth, heads) < 1 or mlp_ratio <= 0:
            raise ValueError("patch_size, dim, depth, heads and mlp_ratio must be positive")
        if dim % heads:
            raise ValueError(f"dim {dim} must be a multiple of heads {heads}")
        if len(input_shape) == 1:
            input_shape = (1, *input_shape)
        if len(input_shape) not in (2, 3):
            raise ValueError(f"expects (C, H, W), (C, L) or (L,) inputs, got {input_shape}")
        in_channels, *spatial = input_shape
        for size in spatial:
            if size % patch_size:
                raise ValueError(f"patch_size {patch_size} must divide the input size {size}")
        conv = nn.Conv2d if len(spatial) == 2 else nn.Conv1d
        self.spatial_dims = len(spatial)
        self.patch_embed = conv(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        num_patches = math.prod(size // patch_size for size in spatial)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim,
            heads,
            dim_feedforward=round(dim * mlp_ratio),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors only pay off with padding masks, which patches never have.
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == self.spatial_dims + 1:  # no channel axis: one channel
            x = x.unsqueeze(1)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, patches, dim)
        cls = self.cls_token.expand(len(tokens), -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.encoder(tokens)[:, 0]))
