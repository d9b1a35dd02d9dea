"""Spatial pooling of a frame's feature map: where in the frame, not only what.

Average pooling (timm's global pool, ``spatial_pool="avg"``) reduces a backbone's last feature map, e.g.
1280 x 7 x 7 for efficientnet_lite0 at 224 px, to one vector per frame and so forgets where things are. Footage
whose classes differ only in where something happens (which body part an examiner's hands are on) needs both.
``SpatialAttentionPool`` keeps them: a few learned attention maps over the frame's positions, each giving the
attended features and the position it attended to.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

SpatialPool = Literal["avg", "attention"]
DEFAULT_SPATIAL_MAPS = 4


def position_grid(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """The (y, x) coordinates of every cell's centre in [-1, 1], top-left negative: [2, height, width].

    Built from ``arange`` on ``like``'s device and dtype, so exporters trace it as a constant of the image size.
    """
    ys = (torch.arange(height, device=like.device, dtype=like.dtype) * 2 + 1) / height - 1  # [h]
    xs = (torch.arange(width, device=like.device, dtype=like.dtype) * 2 + 1) / width - 1  # [w]
    return torch.stack([ys.view(height, 1).expand(height, width), xs.view(1, width).expand(height, width)])


class SpatialAttentionPool(nn.Module):
    """Pools each frame's feature map [N, C, h, w] into one vector [N, out_features] by learned attention.

    A 1x1 convolution over the features and the cells' (y, x) coordinates gives ``num_maps`` attention maps; each is
    a softmax over the h * w cells. Per map, the frame's vector holds the attention-weighted mean of the features
    (what) and the attention's expected position (y, x) in [-1, 1] (where): ``num_maps * (C + 2)`` values, optionally
    projected to ``out_features`` by one linear layer. The coordinates let a map prefer a region (the lower half,
    the centre) beside a kind of content, at any feature-map size.

    The convolution starts at zero, so every map starts as the average pooling of ``spatial_pool="avg"`` (and the
    position (0, 0)), and learns from there where to look.

    Args:
        in_channels: channels of the feature map (the backbone's ``num_features``).
        num_maps: attention maps per frame.
        out_features: width of the linear projection of the concatenated maps; None keeps ``num_maps * (C + 2)``.
    """

    def __init__(self, in_channels: int, num_maps: int = DEFAULT_SPATIAL_MAPS, out_features: int | None = None) -> None:
        super().__init__()
        if num_maps < 1:
            raise ValueError(f"spatial_maps must be >= 1, got {num_maps}")
        self.attention = nn.Conv2d(in_channels + 2, num_maps, kernel_size=1)
        nn.init.zeros_(self.attention.weight)
        nn.init.zeros_(self.attention.bias)
        width = num_maps * (in_channels + 2)
        self.proj = nn.Linear(width, out_features) if out_features else nn.Identity()
        self.out_features = out_features or width

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """[N, C, h, w] -> [N, out_features]."""
        batch, _, height, width = maps.shape
        grid = position_grid(height, width, maps).expand(batch, -1, -1, -1)  # [N, 2, h, w]
        values = torch.cat([maps, grid], dim=1)  # [N, C + 2, h, w]: features and where they are
        weights = self.attention(values).flatten(2).softmax(dim=-1)  # [N, M, h, w] -> [N, M, h * w]
        pooled = weights @ values.flatten(2).transpose(1, 2)  # [N, M, h*w] @ [N, h*w, C + 2] -> [N, M, C + 2]
        return self.proj(pooled.flatten(1))  # [N, M * (C + 2)] -> [N, out_features]
