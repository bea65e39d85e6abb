"""The exported graph: truncated backbone + patch-feature aggregation, image in, patch features out.

PatchCore: each tap map is averaged over its 3x3 neighbourhood (stride 1), deeper maps are
upsampled bilinearly to the first (stride-8) tap's grid and concatenated; optionally each tap's
channels are average-pooled to a target dimension (the paper's adaptive pooling).
PaDiM: tap maps upsampled and concatenated, then a seeded random subset of d channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def channel_pool_matrix(in_ch: int, out_ch: int) -> torch.Tensor:
    """(out_ch, in_ch) matrix that averages channels as adaptive_avg_pool1d does."""
    m = torch.zeros(out_ch, in_ch)
    for i in range(out_ch):
        start = (i * in_ch) // out_ch
        end = -((-(i + 1) * in_ch) // out_ch)
        m[i, start:end] = 1.0 / (end - start)
    return m


class PatchFeatureGraph(nn.Module):
    """image (N,3,H,W) -> patch features (N,D,H/8,W/8) (the first tap's stride)."""

    def __init__(self, backbone: nn.Module, method: str, tap_channels: list[int], *,
                 aggregation: int = 3, target_dim: int | None = None, channel_index: list[int] | None = None):
        super().__init__()
        self.backbone = backbone
        self.method = method
        self.aggregation = aggregation
        self.tap_channels = list(tap_channels)
        self.pools = nn.ModuleList()
        if method == "patchcore" and target_dim:
            per_tap = max(1, target_dim // len(tap_channels))
            for ch in tap_channels:
                w = channel_pool_matrix(ch, min(per_tap, ch))[:, :, None, None]
                conv = nn.Conv2d(ch, w.shape[0], 1, bias=False)
                conv.weight.data.copy_(w)
                conv.weight.requires_grad_(False)
                self.pools.append(conv)
        if channel_index is not None:
            self.register_buffer("channel_index", torch.as_tensor(channel_index, dtype=torch.long))
        else:
            self.channel_index = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.backbone(x)
        if self.method == "patchcore" and self.aggregation > 1:
            k = self.aggregation
            maps = [F.avg_pool2d(m, k, stride=1, padding=k // 2, count_include_pad=False) for m in maps]
        if len(self.pools):
            maps = [pool(m) for pool, m in zip(self.pools, maps)]
        stride = getattr(self.backbone, "grid_stride", None)
        if stride:  # a patch grid finer than the first tap's ("s<stride>" tap): upsample every map to it
            size = (x.shape[-2] // stride, x.shape[-1] // stride)
            maps = [m if tuple(m.shape[-2:]) == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                    for m in maps]
        else:
            size = maps[0].shape[-2:]
            maps = [maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]]
        feats = torch.cat(maps, dim=1)
        if self.channel_index is not None:
            feats = feats.index_select(1, self.channel_index)
        return feats

    @torch.no_grad()
    def feature_dim(self, input_size: tuple[int, int]) -> tuple[int, int, int]:
        out = self(torch.zeros(1, 3, *input_size))
        return tuple(out.shape[1:])
